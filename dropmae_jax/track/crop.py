"""The released DropTrack / OSTrack crop and box geometry, in numpy.

The crop window (`crop_window`), map-back and clipping are the tracker's host side; the crop
itself runs on the device when tracking (`device_crop.py`). `sample_target` here is the
fine-tuning input pipeline's crop (on the data workers) and, with cv2, the reference the device
crop is tested against.

Everything here follows OSTrack's `lib/train/data/processing_utils.py` (`sample_target`,
`transform_image_to_crop`) and `lib/test/tracker/ostrack.py` (`map_box_back`, `clip_box`,
`hann2d`), including the quirks the released boxes carry (docs/tracking.md lists them with the
released lines):

  * crop corners use Python's round() (half-to-even: a corner at 32.5 goes to 32, not 33);
  * the far padding is `x2_pad = max(x2 - W + 1, 0)`: a crop that reaches the right (bottom)
    edge drops the image's last real column (row) and pads one extra black one instead;
  * padding is constant 0 (black), and the resize is cv2.resize INTER_LINEAR on uint8 —
    half-pixel centres, no antialiasing, 11-bit fixed-point weights and OpenCV's SIMD rounding.
    `data/resize.py` reproduces that bit for bit in numpy (the tests compare against cv2
    itself), so OpenCV is not a runtime dependency.

Boxes are (x, y, w, h) in pixels unless a name says otherwise; crops are uint8 (S, S, 3).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dropmae_jax.data import resize
from dropmae_jax.data.images import IMAGENET_MEAN, IMAGENET_STD

def _mask_taps_padded(dst: int, src: int, padded: np.ndarray, clamp_weights: bool) -> np.ndarray:
  """(dst,) bool: does any source tap with a non-zero weight fall on a padded index?

  The released code resizes a float64 0/1 padding mask with cv2 and casts it to bool, so an
  output pixel is True as soon as one contributing source pixel is padding. Weights are
  non-negative, so that is exactly "some tap with non-zero weight is padded".
  """
  scale = 1.0 / (np.float64(dst) / np.float64(src))
  pos = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
  base = np.floor(pos).astype(np.int64)
  frac = pos - base.astype(np.float32)
  if clamp_weights:
    low, high = base < 0, base >= src - 1
    frac[low | high] = 0
    base = np.clip(base, 0, src - 1)
  i0, i1 = np.clip(base, 0, src - 1), np.clip(base + 1, 0, src - 1)
  return padded[i0] | ((frac != 0) & padded[i1])


def crop_window(box: Sequence[float], factor: float, image_hw: tuple[int, int]
                ) -> tuple[int, int, int, int, int, int, int]:
  """The released crop window: (crop_sz, x1, y1, x1_pad, x2_pad, y1_pad, y2_pad).

  crop_sz = ceil(sqrt(w*h) * factor); x1 = round(cx - crop_sz/2) with Python's half-to-even
  round(); x2 = x1 + crop_sz; x1_pad = max(0, -x1); x2_pad = max(x2 - W + 1, 0) (the released
  off-by-one), likewise in y.
  """
  x, y, w, h = (float(v) for v in box)
  if not all(math.isfinite(v) for v in (x, y, w, h)):
    raise ValueError(f"box {tuple(box)} has a non-finite coordinate")
  if w * h < 0:
    raise ValueError(f"box {tuple(box)} has a negative area")
  crop_sz = math.ceil(math.sqrt(w * h) * factor)
  if crop_sz < 1:
    raise ValueError(f"box {tuple(box)} at factor {factor} gives a crop side {crop_sz} < 1 "
                     "(the released code raises 'Too small bounding box.')")
  height, width = image_hw
  x1 = round(x + 0.5 * w - crop_sz * 0.5)   # Python round(): half-to-even, as released
  y1 = round(y + 0.5 * h - crop_sz * 0.5)
  x2, y2 = x1 + crop_sz, y1 + crop_sz
  return (crop_sz, x1, y1, max(0, -x1), max(x2 - width + 1, 0),
          max(0, -y1), max(y2 - height + 1, 0))


def sample_target(image: np.ndarray, box: Sequence[float], factor: float, output_size: int
                  ) -> tuple[np.ndarray, float, np.ndarray]:
  """OSTrack's `sample_target`: a square crop around `box`, zero-padded, resized to output_size.

  Args:
    image: uint8 (H, W, 3).
    box: (x, y, w, h) in pixels (the tracker's state, or the GT box for the template).
    factor: crop side / sqrt(w*h) (2.0 for the template, 5.0 for the search region).
    output_size: side S of the returned crop (192 / 384).
  Returns:
    crop: uint8 (S, S, 3), bit-identical to the released cv2 path.
    resize_factor: S / crop_sz (float).
    att_mask: bool (S, S), True where the crop shows padding (the released `att_mask`).
  Raises:
    ValueError: a non-finite or degenerate box (crop side < 1), or a wrong image shape.

  The crop is never materialised at crop_sz (a 1000-px box at factor 5 would be 5000^2): only
  the source pixels the bilinear taps read are gathered, and padded taps read 0.
  Deviation, unreachable from the tracker: if the crop does not overlap the image at all the
  released code either fails in cv2 or wraps a negative slice index; here it is all black with
  att_mask all True. (clip_box keeps the state's centre inside the image, so tracking never
  produces such a crop.)
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError(f"sample_target wants a uint8 (H, W, 3) image, got {image.dtype} "
                     f"{image.shape}")
  output_size = int(output_size)
  if output_size < 1:
    raise ValueError(f"output_size must be >= 1, got {output_size}")
  height, width = image.shape[:2]
  crop_sz, x1, y1, x1_pad, x2_pad, y1_pad, y2_pad = crop_window(box, factor, (height, width))
  # Content of the padded crop: crop index [x1_pad, crop_sz - x2_pad) shows image column
  # (x1 + index); every other index is black. The same holds for rows.
  col_real = np.zeros(crop_sz, dtype=bool)
  row_real = np.zeros(crop_sz, dtype=bool)
  # Real image pixels are [x1 + x1_pad, x1 + crop_sz - x2_pad) (and likewise in y).
  if x1_pad < crop_sz - x2_pad and y1_pad < crop_sz - y2_pad:
    col_real[x1_pad:crop_sz - x2_pad] = True
    row_real[y1_pad:crop_sz - y2_pad] = True

  def gather(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    # Whole rows first (contiguous copies), then the columns; padded taps read black.
    taps = np.take(image[np.clip(rows + y1, 0, height - 1)],
                   np.clip(cols + x1, 0, width - 1), axis=1)
    taps[~row_real[rows]] = 0
    taps[:, ~col_real[cols]] = 0
    return taps

  crop = resize.resize_bilinear_u8(gather, crop_sz, crop_sz, output_size, output_size)
  att_rows = _mask_taps_padded(output_size, crop_sz, ~row_real, clamp_weights=False)
  att_cols = _mask_taps_padded(output_size, crop_sz, ~col_real, clamp_weights=True)
  att_mask = att_rows[:, None] | att_cols[None, :]
  return crop, output_size / crop_sz, att_mask


def transform_box_to_crop(box_in: Sequence[float], box_extract: Sequence[float],
                          resize_factor: float, crop_sz: float | Sequence[float],
                          normalize: bool = False) -> np.ndarray:
  """OSTrack's `transform_image_to_crop`: box_in (x, y, w, h) in image pixels -> crop coordinates.

  centre_out = (crop_sz - 1)/2 + (centre_in - centre_extract) * resize_factor,
  wh_out = wh_in * resize_factor; with normalize=True everything is divided by crop_sz[0]
  (the crop side S), giving the [0, 1] boxes the training labels use (OSTrack
  `lib/train/data/processing_utils.py`).
  Returns float64 (4,) (x, y, w, h).
  """
  box_in = np.asarray(box_in, dtype=np.float64)
  box_extract = np.asarray(box_extract, dtype=np.float64)
  if box_in.shape != (4,) or box_extract.shape != (4,):
    raise ValueError(f"boxes must be (4,) xywh, got {box_in.shape} and {box_extract.shape}")
  size = np.broadcast_to(np.asarray(crop_sz, dtype=np.float64), (2,))
  centre_extract = box_extract[:2] + 0.5 * box_extract[2:]
  centre_in = box_in[:2] + 0.5 * box_in[2:]
  centre_out = (size - 1) / 2 + (centre_in - centre_extract) * resize_factor
  wh_out = box_in[2:] * resize_factor
  out = np.concatenate([centre_out - 0.5 * wh_out, wh_out])
  return out / size[0] if normalize else out


def map_box_back(pred_box: Sequence[float], prev_state: Sequence[float], resize_factor: float,
                 search_size: int) -> list[float]:
  """OSTrack's `map_box_back`: a (cx, cy, w, h) prediction in crop pixels -> image (x, y, w, h).

  pred_box is the head's normalised box times crop_side = search_size / resize_factor (so in
  image-scale pixels, measured from the crop's top-left). The crop is taken as centred on the
  previous state: cx_img = cx + (cx_prev - crop_side/2) (the released code ignores the
  rounding of the crop corner, and so does this).
  """
  cx_prev = prev_state[0] + 0.5 * prev_state[2]
  cy_prev = prev_state[1] + 0.5 * prev_state[3]
  cx, cy, w, h = (float(v) for v in pred_box)
  half_side = 0.5 * search_size / resize_factor
  cx_real = cx + (cx_prev - half_side)
  cy_real = cy + (cy_prev - half_side)
  return [cx_real - 0.5 * w, cy_real - 0.5 * h, w, h]


def clip_box(box: Sequence[float], height: int, width: int, margin: float = 10) -> list[float]:
  """OSTrack's `clip_box`: keeps at least a margin-sized box inside the image.

  x1 -> min(max(0, x1), W - margin); x2 -> min(max(margin, x2), W); w -> max(margin, x2 - x1);
  likewise in y. OSTrack's default margin is 0, but its tracker always passes 10 (the value
  used here by default).
  """
  x1, y1, w, h = (float(v) for v in box)
  x2, y2 = x1 + w, y1 + h
  x1 = min(max(0.0, x1), width - margin)
  x2 = min(max(margin, x2), width)
  y1 = min(max(0.0, y1), height - margin)
  y2 = min(max(margin, y2), height)
  return [x1, y1, max(margin, x2 - x1), max(margin, y2 - y1)]


def hann1d(n: int) -> np.ndarray:
  """OSTrack's centred 1-D cosine window: 0.5 * (1 - cos(2*pi*k / (n + 1))), k = 1..n. (n,)."""
  k = np.arange(1, n + 1, dtype=np.float64)
  return (0.5 * (1 - np.cos(2 * np.pi * k / (n + 1)))).astype(np.float32)


def hann2d(n: int) -> np.ndarray:
  """float32 (n, n) = outer(hann1d(n), hann1d(n)): `hann2d(torch.tensor([n, n]), centered=True)`.

  Strictly positive everywhere (the k = 0 and k = n + 1 zeros are outside the window), so the
  windowed argmax can still pick a border cell.
  """
  if n < 1:
    raise ValueError(f"hann2d needs n >= 1, got {n}")
  window = hann1d(n)
  return window[:, None] * window[None, :]


def normalize(crop: np.ndarray) -> np.ndarray:
  """uint8 (..., H, W, 3) -> float32 (..., H, W, 3): (x / 255 - IMAGENET_MEAN) / IMAGENET_STD.

  The released Preprocessor's arithmetic, in float32 and the same order; NHWC because the
  model's patch embedding is NHWC.
  """
  crop = np.asarray(crop)
  if crop.shape[-1] != 3:
    raise ValueError(f"normalize wants (..., H, W, 3) RGB, got shape {crop.shape}")
  mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
  std = np.asarray(IMAGENET_STD, dtype=np.float32)
  return (crop.astype(np.float32) / np.float32(255.0) - mean) / std
