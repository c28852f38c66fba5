"""dropmae_jax.track.device_crop (the tracker's crop, on the device) against the released cv2 path
(`_released_sample_target` of test_track_crop.py: slice, copyMakeBorder, cv2.resize), bit for bit,
over many random boxes (inside, straddling every edge, tiny, huge) on several frame sizes, and
on frames padded into one batch of mixed sizes."""
import numpy as np
import pytest

from dropmae_jax.track import device_crop

from test_track_crop import _released_sample_target  # noqa: I100

cv2 = pytest.importorskip("cv2")


def _frame(h, w, seed):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  base = np.stack([xx * 255 // w, yy * 255 // h, (xx + 2 * yy) % 256], -1)
  return np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def _boxes(rng, h, w, count):
  """Boxes of every kind the tracker and its first frame can meet."""
  boxes = []
  for i in range(count):
    kind = i % 5
    if kind == 0:     # inside
      bw, bh = rng.uniform(4, w / 3), rng.uniform(4, h / 3)
      x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    elif kind == 1:   # straddling an edge or a corner (centre still inside, as clip_box keeps it)
      bw, bh = rng.uniform(10, w / 2), rng.uniform(10, h / 2)
      x = rng.choice([-bw / 2 + rng.uniform(0, 3), w - bw / 2 - rng.uniform(0, 3),
                      rng.uniform(0, w - bw)])
      y = rng.choice([-bh / 2 + rng.uniform(0, 3), h - bh / 2 - rng.uniform(0, 3),
                      rng.uniform(0, h - bh)])
    elif kind == 2:   # tiny: a crop of a few pixels, upsampled many times
      bw, bh = rng.uniform(0.2, 3, 2)
      x, y = rng.uniform(0, w - 3), rng.uniform(0, h - 3)
    elif kind == 3:   # huge: the crop is many times the frame
      bw, bh = rng.uniform(w / 2, 2 * w), rng.uniform(h / 2, 2 * h)
      x, y = w / 2 - bw / 2 + rng.uniform(-5, 5), h / 2 - bh / 2 + rng.uniform(-5, 5)
    else:             # half-pixel corners: Python's half-to-even rounding decides the window
      bw = bh = float(rng.integers(2, 20))
      x, y = rng.integers(0, w - 20) + 0.5, rng.integers(0, h - 20) + 0.5
    boxes.append((float(x), float(y), float(bw), float(bh)))
  return boxes


@pytest.mark.timeout(120)
@pytest.mark.parametrize("frame_hw, out_size, factor", [
    ((120, 160), 128, 5.0),     # the search crop of a small frame
    ((97, 233), 64, 2.0),       # odd sizes, the template factor
    ((240, 320), 384, 5.0),     # the released search size
])
def test_device_crop_equals_cv2_bit_for_bit(frame_hw, out_size, factor):
  h, w = frame_hw
  frame = _frame(h, w, seed=h)
  boxes = _boxes(np.random.default_rng(w), h, w, 100)
  specs = np.stack([device_crop.make_spec(b, factor, out_size, (h, w))[0] for b in boxes])
  crops = np.asarray(device_crop.crop_frames_jit(np.repeat(frame[None], len(boxes), 0), specs,
                                                 out_size))
  for box, ours in zip(boxes, crops):
    ref, resize_factor, _ = _released_sample_target(frame, list(box), factor, out_size)
    assert device_crop.make_spec(box, factor, out_size, (h, w))[1] == resize_factor
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() == 0, f"box {box}: {np.count_nonzero(diff)} values differ from cv2"


@pytest.mark.timeout(120)
def test_mixed_frame_sizes_padded_into_one_batch():
  """Frames of three sizes zero-padded (and garbage-padded) to a common bucket: each crop is the
  one of its own frame."""
  sizes = [(90, 150), (120, 100), (61, 77)]
  bucket = (128, 192)
  out_size, factor = 96, 5.0
  rng = np.random.default_rng(7)
  batch = rng.integers(0, 256, (6, *bucket, 3), dtype=np.uint8)   # what pads them is never read
  frames, boxes, specs = [], [], []
  for i in range(6):
    h, w = sizes[i % 3]
    frames.append(_frame(h, w, seed=i))
    batch[i, :h, :w] = frames[-1]
    boxes.append(_boxes(rng, h, w, 5)[i % 5])
    specs.append(device_crop.make_spec(boxes[-1], factor, out_size, (h, w))[0])
  crops = np.asarray(device_crop.crop_frames_jit(batch, np.stack(specs), out_size))
  for frame, box, ours in zip(frames, boxes, crops):
    ref = _released_sample_target(frame, list(box), factor, out_size)[0]
    np.testing.assert_array_equal(ours, ref, err_msg=f"box {box}")


@pytest.mark.timeout(60)
def test_spec_refuses_what_the_released_code_refuses():
  with pytest.raises(ValueError, match="crop side"):
    device_crop.make_spec((10, 10, 0.0, 0.0), 2.0, 64, (100, 100))
  with pytest.raises(ValueError, match="non-finite"):
    device_crop.make_spec((10, 10, float("nan"), 5), 2.0, 64, (100, 100))
  # An idle batch slot's spec: an all-black crop.
  crops = device_crop.crop_frames_jit(np.full((1, 8, 8, 3), 200, np.uint8),
                                      device_crop.empty_spec(16)[None], 16)
  assert not np.asarray(crops).any()
