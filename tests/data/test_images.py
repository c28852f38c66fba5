"""data.images.read_rgb against the released reader, cv2.imread + BGR->RGB, on the JPEG kinds
datasets hold (4:2:0, 4:2:2, 4:4:4, progressive, greyscale, written by libjpeg or by OpenCV, EXIF
orientations 1..8 in both byte orders) and PNGs; and its errors."""
import io
import struct

import numpy as np
import pytest
from PIL import Image

from dropmae_jax.data import images

cv2 = pytest.importorskip("cv2")


def _released_read(path):
  return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def picture():
  """A photo-like RGB frame: smooth gradients, sharp edges and noise (chroma upsampling shows)."""
  rng = np.random.default_rng(0)
  h, w = 93, 130      # odd sizes: partial MCUs on both axes
  yy, xx = np.mgrid[0:h, 0:w]
  base = np.stack([xx * 255 // w, yy * 255 // h, (xx * yy) % 256], -1)
  base[20:50, 30:70] = (250, 10, 40)
  return np.clip(base + rng.integers(-30, 30, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["420", "422", "444", "progressive", "grey", "cv2", "png",
                                  "png_rgba", "png_palette"])
def test_read_rgb_equals_cv2_imread(picture, kind, tmp_path):
  path = tmp_path / ("f.png" if kind.startswith("png") else "f.jpg")
  image = Image.fromarray(picture)
  if kind in ("420", "422", "444"):
    image.save(path, quality=90, subsampling={"444": 0, "422": 1, "420": 2}[kind])
  elif kind == "progressive":
    image.save(path, quality=85, progressive=True)
  elif kind == "grey":
    image.convert("L").save(path, quality=90)
  elif kind == "cv2":
    cv2.imwrite(str(path), picture[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
  elif kind == "png":
    image.save(path)
  elif kind == "png_rgba":
    Image.fromarray(np.dstack([picture, picture[..., :1]])).save(path)
  else:
    image.convert("P").save(path)
  ours = images.read_rgb(str(path))
  assert ours.dtype == np.uint8 and ours.shape == picture.shape
  np.testing.assert_array_equal(ours, _released_read(path))


def _exif_big_endian(orientation: int) -> bytes:
  """A minimal big-endian ('MM') TIFF block with one Orientation entry (Pillow writes 'II')."""
  ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0" * 4
  return b"Exif\x00\x00" + b"MM\x00\x2a" + struct.pack(">I", 8) + ifd


@pytest.mark.timeout(60)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_cv2_imread(picture, orientation, tmp_path):
  exif = Image.Exif()
  exif[0x0112] = orientation
  little = tmp_path / "little.jpg"
  Image.fromarray(picture).save(little, quality=90, exif=exif.tobytes())
  # The same JPEG with a big-endian EXIF segment spliced in after SOI.
  plain = io.BytesIO()
  Image.fromarray(picture).save(plain, format="JPEG", quality=90)
  app1 = _exif_big_endian(orientation)
  big = tmp_path / "big.jpg"
  big.write_bytes(plain.getvalue()[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
                  + plain.getvalue()[2:])
  for path in (little, big):
    assert images.exif_orientation(path.read_bytes()) == orientation
    np.testing.assert_array_equal(images.read_rgb(str(path)), _released_read(path))


@pytest.mark.timeout(60)
def test_unreadable_files_raise_one_error_naming_the_file(picture, tmp_path):
  good = tmp_path / "good.jpg"
  Image.fromarray(picture).save(good, quality=90)
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
  garbage = tmp_path / "garbage.jpg"
  garbage.write_bytes(b"not a jpeg")
  for path in (truncated, garbage, tmp_path / "missing.jpg"):
    with pytest.raises(images.ImageReadError) as e:
      images.read_rgb(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.timeout(60)
def test_decode_pool_reads_ahead_in_order(picture, tmp_path):
  paths = []
  for i in range(7):
    path = tmp_path / f"{i}.jpg"
    Image.fromarray(np.roll(picture, 9 * i, axis=1)).save(path, quality=90)
    paths.append(str(path))
  with images.DecodePool(threads=2) as pool:
    got = list(pool.read_ahead(paths, depth=3))
    image, seconds = pool.submit(paths[0]).result()
  assert len(got) == 7 and seconds > 0
  for path, frame in zip(paths, got):
    np.testing.assert_array_equal(frame, images.read_rgb(path))
  np.testing.assert_array_equal(image, got[0])
