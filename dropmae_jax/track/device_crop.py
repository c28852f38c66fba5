"""The released crop (OSTrack `sample_target`) on the device, bit for bit cv2's pixels.

The tracker's hot path: the frame goes up as uint8, the crop is cut and resized where the network
runs. The geometry is the released one (`crop.crop_window`: Python's half-to-even corners, the
`x2_pad = max(x2 - W + 1, 0)` off-by-one, black padding), and the resize is cv2.resize
INTER_LINEAR on uint8 as `data/resize.py` reproduces it: OpenCV's 11-bit fixed-point tap tables
and its two integer passes, so the crops equal cv2's (tests/track/test_device_crop.py).

The split between host and device:

  * host, per crop, a few scalar operations in float64 (`crop_spec`): the window's corners and
    pads, exactly as the released Python computes them, plus the tap table of the crop side,
    cached (it depends only on the crop side and the output size). Both travel as one small int32
    vector (`spec_length(n)` = 8n + 8 values: 12 KB at n = 384, against 2.7 MB for a 720p frame).
  * device (`crop_frames`): a gather of the 2n source rows and 2n source columns the taps read
    (padded taps get weight 0: the same sum as a black pixel), then OpenCV's horizontal and
    vertical passes in int32 with its shifts.

The tables stay on the host because OpenCV builds them in float64 rounded to float32; a device
without IEEE float64 (or division) could not rebuild them exactly.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dropmae_jax.data import resize
from dropmae_jax.data.images import IMAGENET_MEAN, IMAGENET_STD
from dropmae_jax.track import crop

_SCALARS = 8   # x1, y1, x_lo, x_hi, y_lo, y_hi and two spare slots


def spec_length(out_size: int) -> int:
  """Length of one crop spec for an (out_size, out_size) crop."""
  return 8 * out_size + _SCALARS


@functools.lru_cache(maxsize=4096)
def _tap_table(out_size: int, crop_sz: int) -> np.ndarray:
  """int32 (8n,): [rows (2n) | cols (2n) | row weights (2n) | col weights (2n)], crop coordinates.

  Rows are OpenCV's vertical taps (weights kept, indices clamped), columns its horizontal ones
  (weights clamped at the borders): `resize.axis_taps`.
  """
  x0, x1, a0, a1 = resize.axis_taps(out_size, crop_sz, clamp_weights=True)
  y0, y1, b0, b1 = resize.axis_taps(out_size, crop_sz, clamp_weights=False)
  table = np.concatenate([y0, y1, x0, x1, b0, b1, a0, a1]).astype(np.int32)
  table.flags.writeable = False
  return table


def crop_spec(box: Sequence[float], factor: float, out_size: int, image_hw: tuple[int, int],
              out: np.ndarray | None = None) -> float:
  """Writes the spec of the released crop of `box` into `out` (spec_length(out_size),) int32 and
  returns resize_factor = out_size / crop_sz, as `crop.sample_target` would.

  Raises ValueError for a non-finite or degenerate box (crop side < 1), as the released code.
  """
  crop_sz, x1, y1, x1_pad, x2_pad, y1_pad, y2_pad = crop.crop_window(box, factor, image_hw)
  n8 = 8 * out_size
  out[:n8] = _tap_table(out_size, crop_sz)
  # Crop index c shows image pixel x1 + c when x1_pad <= c < crop_sz - x2_pad, else black.
  out[n8:n8 + 6] = (x1, y1, x1_pad, crop_sz - x2_pad, y1_pad, crop_sz - y2_pad)
  out[n8 + 6:] = 0
  return out_size / crop_sz


def make_spec(box: Sequence[float], factor: float, out_size: int, image_hw: tuple[int, int]
              ) -> tuple[np.ndarray, float]:
  """(spec (spec_length(out_size),) int32, resize_factor): `crop_spec` into a new array."""
  spec = np.empty(spec_length(out_size), np.int32)
  return spec, crop_spec(box, factor, out_size, image_hw, spec)


def empty_spec(out_size: int) -> np.ndarray:
  """A spec that reads pixel (0, 0) with weight 0 everywhere: an all-black crop (idle slots)."""
  return np.zeros(spec_length(out_size), np.int32)


def _crop_one(frame: jax.Array, spec: jax.Array, out_size: int) -> jax.Array:
  n = out_size
  rows, cols = spec[0:2 * n], spec[2 * n:4 * n]
  row_w, col_w = spec[4 * n:6 * n], spec[6 * n:8 * n]
  x1, y1, x_lo, x_hi, y_lo, y_hi = (spec[8 * n + i] for i in range(6))
  # A padded tap contributes weight x 0; a zero weight on whatever pixel it reads does the same.
  col_w = jnp.where((cols >= x_lo) & (cols < x_hi), col_w, 0)
  row_w = jnp.where((rows >= y_lo) & (rows < y_hi), row_w, 0)
  # Real taps lie inside the frame; the clip only keeps the padded ones (weight 0) in bounds, and
  # lets a frame be padded at its bottom / right (a batch of mixed sizes) without changing a pixel.
  rows = jnp.clip(rows + y1, 0, frame.shape[0] - 1)
  cols = jnp.clip(cols + x1, 0, frame.shape[1] - 1)
  taps = frame.at[rows].get(mode="promise_in_bounds")
  taps = taps.at[:, cols].get(mode="promise_in_bounds").astype(jnp.int32)   # (2n, 2n, 3)
  # OpenCV's horizontal pass (11 fractional bits), then VResizeLinearVec_32s8u's vertical one:
  # (((S_a >> 4) * v0 >> 16) + ((S_b >> 4) * v1 >> 16) + 2) >> 2, saturated.
  horizontal = (taps[:, :n] * col_w[None, :n, None] + taps[:, n:] * col_w[None, n:, None]) >> 4
  top = (horizontal[:n] * row_w[:n, None, None]) >> 16
  bottom = (horizontal[n:] * row_w[n:, None, None]) >> 16
  return jnp.clip((top + bottom + 2) >> 2, 0, 255).astype(jnp.uint8)


def crop_frames(frames: jax.Array, specs: jax.Array, out_size: int) -> jax.Array:
  """uint8 frames (B, H, W, 3) and specs (B, spec_length(n)) int32 -> uint8 crops (B, n, n, 3).

  Traceable (call it inside jit). Frames may be zero-padded (or hold anything) below and right
  of their real size: only the pixels the spec's window shows are read with a non-zero weight.
  """
  if frames.dtype != jnp.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"crop_frames wants uint8 (B, H, W, 3) frames, got {frames.dtype} "
                     f"{frames.shape}")
  if specs.shape != (frames.shape[0], spec_length(out_size)):
    raise ValueError(f"specs {specs.shape} do not fit {frames.shape[0]} crops of {out_size}")
  return jax.vmap(functools.partial(_crop_one, out_size=out_size))(frames, specs)


def normalize(crops: jax.Array) -> jax.Array:
  """uint8 (..., 3) -> float32: (x / 255 - mean) / std, `crop.normalize`'s arithmetic on device."""
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  return (crops.astype(jnp.float32) / jnp.float32(255.0) - mean) / std


@functools.partial(jax.jit, static_argnums=2)
def crop_frames_jit(frames: jax.Array, specs: jax.Array, out_size: int) -> jax.Array:
  """`crop_frames` as its own jitted call (tests, benchmarks)."""
  return crop_frames(frames, specs, out_size)
