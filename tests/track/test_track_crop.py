"""dropmae_jax.track.crop against OpenCV itself and against closed forms.

The reference `_released_sample_target` below is OSTrack's `sample_target`
(`lib/train/data/processing_utils.py`, used in training and by `lib/test/tracker/ostrack.py`),
written the straightforward way with cv2 (slice, copyMakeBorder with constant 0, cv2.resize
INTER_LINEAR, a float64 padding mask resized and cast to bool). The module under test never
imports cv2, so agreement here is agreement with the released path.
"""
import math

import numpy as np
import pytest

from dropmae_jax.data.images import IMAGENET_MEAN, IMAGENET_STD
from dropmae_jax.data import resize
from dropmae_jax.track import crop as crop_lib

cv2 = pytest.importorskip("cv2")


def _released_sample_target(im, target_bb, search_area_factor, output_sz,
                            mask_dtype=np.float64):
  x, y, w, h = target_bb
  crop_sz = math.ceil(math.sqrt(w * h) * search_area_factor)
  if crop_sz < 1:
    raise Exception("Too small bounding box.")
  x1 = round(x + 0.5 * w - crop_sz * 0.5)
  x2 = x1 + crop_sz
  y1 = round(y + 0.5 * h - crop_sz * 0.5)
  y2 = y1 + crop_sz
  x1_pad = max(0, -x1)
  x2_pad = max(x2 - im.shape[1] + 1, 0)
  y1_pad = max(0, -y1)
  y2_pad = max(y2 - im.shape[0] + 1, 0)
  im_crop = im[y1 + y1_pad:y2 - y2_pad, x1 + x1_pad:x2 - x2_pad, :]
  im_crop_padded = cv2.copyMakeBorder(im_crop, y1_pad, y2_pad, x1_pad, x2_pad,
                                      cv2.BORDER_CONSTANT)
  H, W, _ = im_crop_padded.shape
  att_mask = np.ones((H, W), mask_dtype)
  end_x, end_y = -x2_pad, -y2_pad
  if y2_pad == 0:
    end_y = None
  if x2_pad == 0:
    end_x = None
  att_mask[y1_pad:end_y, x1_pad:end_x] = 0
  resize_factor = output_sz / crop_sz
  im_crop_padded = cv2.resize(im_crop_padded, (output_sz, output_sz))
  att_mask = cv2.resize(att_mask, (output_sz, output_sz)).astype(np.bool_)
  return im_crop_padded, resize_factor, att_mask


@pytest.fixture(scope="module")
def image():
  # Smooth structure plus noise: both flat areas and sharp edges exercise the rounding.
  rng = np.random.default_rng(0)
  h, w = 180, 260
  yy, xx = np.mgrid[0:h, 0:w]
  base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) % 256)], -1)
  noise = rng.integers(-40, 40, (h, w, 3))
  return np.clip(base + noise, 0, 255).astype(np.uint8)


def _compare(image, box, factor, size):
  ours = crop_lib.sample_target(image, box, factor, size)
  # OpenCV 4.x (the released environment) builds the same float32 tap table for float32 and
  # float64 images; OpenCV 5 computes float64 taps in double, which can add a 1e-16 weight at
  # an exact-integer source position. The float32 mask pins the 4.x behaviour exactly.
  ref = _released_sample_target(image, list(box), factor, size, mask_dtype=np.float32)
  assert ours[0].shape == (size, size, 3) and ours[0].dtype == np.uint8
  diff = np.abs(ours[0].astype(int) - ref[0].astype(int)).max()
  assert diff == 0, f"box {box}: crop differs from cv2 by up to {diff} grey levels"
  assert ours[1] == ref[1]
  np.testing.assert_array_equal(ours[2], ref[2], err_msg=f"att_mask, box {box}")
  # The literal float64 mask (whatever this cv2 does with it) may differ only on pixels next
  # to the padding boundary.
  ref64 = _released_sample_target(image, list(box), factor, size)[2]
  if cv2.__version__.startswith("4."):
    np.testing.assert_array_equal(ours[2], ref64)
  padded = np.pad(ours[2], 1)
  near_padding = (padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:])
  assert near_padding[ours[2] != ref64].all(), f"att_mask (float64), box {box}"
  return ours


@pytest.mark.parametrize("box, factor, size", [
    ((100.0, 60.0, 40.0, 30.0), 2.0, 192),      # inside, upsampled template
    ((100.3, 60.7, 40.2, 30.9), 5.0, 384),      # inside, search factor, non-integer box
    ((0.0, 0.0, 30.0, 30.0), 2.0, 192),         # top-left corner: left/top padding
    ((230.0, 150.0, 30.0, 30.0), 2.0, 192),     # bottom-right: x2_pad off-by-one
    ((225.0, 40.0, 30.0, 20.0), 5.0, 384),      # crop spills over the right edge only
    ((-20.0, -15.0, 40.0, 40.0), 2.0, 128),     # box itself partly outside
    ((250.0, 170.0, 30.0, 30.0), 2.0, 128),     # box partly outside bottom-right
    ((128.0, 90.0, 1.0, 1.0), 2.0, 192),        # tiny: crop_sz 2, heavy upsampling
    ((128.0, 90.0, 0.3, 0.3), 5.0, 384),        # sub-pixel box, crop_sz 2
    ((10.0, 10.0, 240.0, 160.0), 5.0, 384),     # huge: crop much bigger than the image
    ((-100.0, -80.0, 400.0, 300.0), 2.0, 384),  # box larger than the image
    ((60.0, 40.0, 128.0, 128.0), 3.0, 192),     # exact 2x downsample (cv2's INTER_AREA path)
    ((100.0, 60.0, 48.0, 48.0), 4.0, 192),      # crop_sz 192: no resize
])
def test_sample_target_matches_cv2(image, box, factor, size):
  _compare(image, box, factor, size)


def test_sample_target_random_boxes_match_cv2(image):
  rng = np.random.default_rng(1)
  h, w = image.shape[:2]
  for _ in range(150):
    bw, bh = rng.uniform(1, 150, 2)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)   # centre inside, as clip_box guarantees
    box = (cx - bw / 2, cy - bh / 2, bw, bh)
    factor = float(rng.choice([2.0, 4.0, 5.0]))
    size = int(rng.choice([128, 192, 256, 384]))
    _compare(image, box, factor, size)


def test_half_to_even_corners(image):
  # crop_sz = 2*10 = 20; x1 = round(cx - 10). cx = 42.5 -> x1 = round(32.5) = 32 (even),
  # cx = 43.5 -> round(33.5) = 34: Python's banker's rounding, not floor(v + 0.5).
  window = crop_lib.crop_window((37.5, 0.0, 10.0, 10.0), 2.0, image.shape[:2])
  assert window[0] == 20 and window[1] == 32
  window = crop_lib.crop_window((38.5, 50.5, 10.0, 10.0), 2.0, image.shape[:2])
  assert window[1] == 34 and window[2] == 46   # round(45.5) = 46 (even)
  for box in [(37.5, 20.5, 10.0, 10.0), (38.5, 21.5, 10.0, 10.0)]:
    _compare(image, box, 2.0, 192)


def test_far_edge_off_by_one(image):
  h, w = image.shape[:2]
  # A 20-px crop ending exactly at the right edge: x2 = W, so x2_pad = 1 and the last real
  # column is replaced by black, as in the released code.
  box = (w - 15.0, 50.0, 10.0, 10.0)
  sz, x1, _, _, x2_pad, _, _ = crop_lib.crop_window(box, 2.0, (h, w))
  assert x1 + sz == w and x2_pad == 1
  crop, _, att = crop_lib.sample_target(image, box, 2.0, sz)   # no resize: pixels visible
  np.testing.assert_array_equal(crop[:, -1], 0)
  np.testing.assert_array_equal(crop[:, :-1], image[45:65, x1:w - 1])
  assert att[:, -1].all() and not att[:, :-1].any()


def test_resize_bilinear_matches_cv2_on_any_shape():
  rng = np.random.default_rng(2)
  for _ in range(60):
    sh, sw = rng.integers(1, 400, 2)
    oh, ow = rng.integers(1, 400, 2)
    src = rng.integers(0, 256, (sh, sw, 3), dtype=np.uint8)
    ours = resize.resize_bilinear_u8(lambda r, c: src[r[:, None], c[None, :]],
                                        sh, sw, oh, ow)
    np.testing.assert_array_equal(ours, cv2.resize(src, (int(ow), int(oh))))


def test_sample_target_rejects_bad_input(image):
  with pytest.raises(ValueError, match="crop side"):
    crop_lib.sample_target(image, (10, 10, 0.0, 0.0), 2.0, 192)
  with pytest.raises(ValueError, match="non-finite"):
    crop_lib.sample_target(image, (10, 10, float("nan"), 5), 2.0, 192)
  with pytest.raises(ValueError, match="uint8"):
    crop_lib.sample_target(image.astype(np.float32), (10, 10, 5, 5), 2.0, 192)


def test_sample_target_outside_image_is_black(image):
  crop, factor, att = crop_lib.sample_target(image, (1000.0, 1000.0, 10.0, 10.0), 2.0, 64)
  assert factor == 64 / 20 and not crop.any() and att.all()


def test_transform_box_to_crop_closed_form():
  extract = np.array([100.0, 50.0, 40.0, 20.0])   # centre (120, 60)
  rf, size = 2.5, 384.0
  same = crop_lib.transform_box_to_crop(extract, extract, rf, size)
  # The extract box lands centred on (S - 1)/2 with its size scaled.
  np.testing.assert_allclose(same, [191.5 - 50.0, 191.5 - 25.0, 100.0, 50.0])
  moved = crop_lib.transform_box_to_crop(extract + [8.0, -4.0, 0, 0], extract, rf, [size, size])
  np.testing.assert_allclose(moved, same + [20.0, -10.0, 0, 0])
  bigger = crop_lib.transform_box_to_crop([96.0, 48.0, 48.0, 24.0], extract, rf, size)
  np.testing.assert_allclose(bigger, [191.5 - 60.0, 191.5 - 30.0, 120.0, 60.0])
  normalised = crop_lib.transform_box_to_crop(extract, extract, rf, size, normalize=True)
  np.testing.assert_allclose(normalised, same / 384.0)


def test_map_box_back_closed_form():
  prev = [100.0, 50.0, 40.0, 20.0]              # centre (120, 60)
  rf, search = 384 / 200, 384                   # crop side 200
  # A prediction at the crop centre maps to the previous centre, whatever its size.
  np.testing.assert_allclose(crop_lib.map_box_back([100.0, 100.0, 30.0, 10.0], prev, rf, search),
                             [120 - 15, 60 - 5, 30.0, 10.0])
  # Offsets in crop pixels (already at image scale) carry over one to one.
  np.testing.assert_allclose(crop_lib.map_box_back([130.0, 80.0, 30.0, 10.0], prev, rf, search),
                             [150 - 15, 40 - 5, 30.0, 10.0])
  # The head's normalised output times the crop side, as the tracker forms it.
  cx, cy, w, h = 0.25, 0.75, 0.1, 0.2
  side = search / rf
  out = crop_lib.map_box_back([cx * side, cy * side, w * side, h * side], prev, rf, search)
  np.testing.assert_allclose(out, [120 + (cx - 0.5) * side - 0.5 * w * side,
                                   60 + (cy - 0.5) * side - 0.5 * h * side, w * side, h * side])


@pytest.mark.parametrize("box, expected", [
    ((50.0, 40.0, 30.0, 20.0), [50.0, 40.0, 30.0, 20.0]),      # inside: unchanged
    ((-10.0, -5.0, 30.0, 20.0), [0.0, 0.0, 20.0, 15.0]),       # crosses left/top: cut
    ((190.0, 130.0, 30.0, 40.0), [190.0, 130.0, 10.0, 20.0]),  # crosses right/bottom: cut
    ((250.0, 10.0, 30.0, 20.0), [190.0, 10.0, 10.0, 20.0]),    # past the right edge: W - 10
    ((-60.0, -60.0, 30.0, 20.0), [0.0, 0.0, 10.0, 10.0]),      # past the left edge: margin box
    ((50.0, 40.0, 3.0, 2.0), [50.0, 40.0, 10.0, 10.0]),        # tiny: grown to the margin
])
def test_clip_box(box, expected):
  assert crop_lib.clip_box(box, 150, 200, margin=10) == pytest.approx(expected)


def test_clip_box_default_margin_is_the_trackers():
  assert crop_lib.clip_box((250.0, 10.0, 30.0, 20.0), 150, 200) == pytest.approx(
      [190.0, 10.0, 10.0, 20.0])
  assert crop_lib.clip_box((250.0, 10.0, 30.0, 20.0), 150, 200, margin=0) == pytest.approx(
      [200.0, 10.0, 0.0, 20.0])


@pytest.mark.parametrize("n", [1, 16, 24])
def test_hann2d_formula(n):
  window = crop_lib.hann2d(n)
  assert window.shape == (n, n) and window.dtype == np.float32
  for i in range(n):
    for j in range(n):
      wi = 0.5 * (1 - math.cos(2 * math.pi * (i + 1) / (n + 1)))
      wj = 0.5 * (1 - math.cos(2 * math.pi * (j + 1) / (n + 1)))
      assert window[i, j] == pytest.approx(wi * wj, abs=1e-6)
  assert (window > 0).all()
  np.testing.assert_allclose(window, window.T)
  if n % 2 == 0:   # even n: the four central cells share the maximum
    c = n // 2
    assert window[c - 1, c - 1] == pytest.approx(window.max())


def test_hann2d_matches_torch():
  torch = pytest.importorskip("torch")
  n = 24
  w1 = 0.5 * (1 - torch.cos((2 * math.pi / (n + 1)) * torch.arange(1, n + 1).float()))
  ref = (w1.reshape(-1, 1) * w1.reshape(1, -1)).numpy()
  np.testing.assert_allclose(crop_lib.hann2d(n), ref, atol=1e-6)


def test_normalize():
  crop = np.array([[[0, 0, 0], [255, 255, 255], [10, 128, 240]]], dtype=np.uint8)
  out = crop_lib.normalize(crop)
  assert out.dtype == np.float32 and out.shape == (1, 3, 3)
  mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
  np.testing.assert_allclose(out[0, 0], -mean / std, rtol=1e-6)
  np.testing.assert_allclose(out[0, 1], (1 - mean) / std, rtol=1e-6)
  np.testing.assert_allclose(out[0, 2], (np.array([10, 128, 240]) / 255 - mean) / std, rtol=1e-6)
  assert crop_lib.normalize(np.zeros((2, 8, 8, 3), np.uint8)).shape == (2, 8, 8, 3)
