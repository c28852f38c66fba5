"""cv2.resize(INTER_LINEAR) on uint8 images, bit for bit, in numpy.

The released trackers crop with OpenCV's bilinear resize (half-pixel centres, no antialiasing,
11-bit fixed-point weights, OpenCV's SIMD rounding); DINO's label propagation resizes frames the
same way. Reproducing it exactly keeps boxes and masks equal to the released code's without
making OpenCV a runtime dependency (the tests compare against cv2 itself).
"""
from __future__ import annotations

import numpy as np

# OpenCV's INTER_RESIZE_COEF_BITS: bilinear weights are integers summing to 2048.
_COEF_SCALE = 2048


def axis_taps(dst: int, src: int, clamp_weights: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """One axis of cv2.resize(INTER_LINEAR): source taps (i0, i1) and fixed-point weights (w0, w1).

  Mirrors OpenCV's table set-up (imgproc/src/resize.cpp): the source coordinate is computed in
  double and rounded to float32; weights are cvRound((1 - f) * 2048) and cvRound(f * 2048)
  (round half-to-even, as lrint does). Along x the weights themselves are clamped at the borders
  (f = 0 at the first/last column); along y OpenCV keeps the weights and clamps the row indices
  instead — which changes the fixed-point rounding of the border rows, so both are reproduced.
  """
  scale = 1.0 / (np.float64(dst) / np.float64(src))   # OpenCV: scale = 1 / inv_scale
  pos = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
  base = np.floor(pos).astype(np.int64)
  frac = (pos - base.astype(np.float32)).astype(np.float32)
  if clamp_weights:
    low = base < 0
    frac[low], base[low] = 0, 0
    high = base >= src - 1
    frac[high], base[high] = 0, src - 1
  w1 = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int32)
  w0 = np.rint((np.float32(1) - frac) * np.float32(_COEF_SCALE)).astype(np.int32)
  return np.clip(base, 0, src - 1), np.clip(base + 1, 0, src - 1), w0, w1


def resize_bilinear_u8(gather, src_h: int, src_w: int, out_h: int, out_w: int) -> np.ndarray:
  """cv2.resize(src, (out_w, out_h)) for uint8 (H, W, C) src, reading only the taps it needs.

  Args:
    gather: (rows (R,), cols (K,)) -> uint8 (R, K, C): the source pixels at those indices.
      Taking a callable lets a crop be resized without building the padded crop first.
  Horizontal pass: S = w0*p[i0] + w1*p[i1] (int, 11 fractional bits). Vertical pass as
  OpenCV's VResizeLinearVec_32s8u (the path every SSE2+/NEON build takes):
  out = (((S_a >> 4) * v0 >> 16) + ((S_b >> 4) * v1 >> 16) + 2) >> 2, saturated to [0, 255].
  """
  x0, x1, a0, a1 = axis_taps(out_w, src_w, clamp_weights=True)
  y0, y1, b0, b1 = axis_taps(out_h, src_h, clamp_weights=False)
  taps = gather(np.concatenate([y0, y1]), np.concatenate([x0, x1]))   # (2*out_h, 2*out_w, C)
  channels = taps.shape[-1]
  # Channels folded into the last axis keep every elementwise op on contiguous memory.
  flat = taps.reshape(2 * out_h, 2, out_w * channels).astype(np.int32)
  horizontal = (flat[:, 0] * np.repeat(a0, channels)[None]
                + flat[:, 1] * np.repeat(a1, channels)[None])          # (2*out_h, out_w*C)
  horizontal >>= 4
  top = horizontal[:out_h] * b0[:, None]
  top >>= 16
  bottom = horizontal[out_h:] * b1[:, None]
  bottom >>= 16
  top += bottom
  top += 2
  top >>= 2
  return np.clip(top, 0, 255).astype(np.uint8).reshape(out_h, out_w, channels)
