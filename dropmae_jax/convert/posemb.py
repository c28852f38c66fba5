"""Position tables for other input sizes (fine-tuning: 12x12 template, 24x24 search, ...).

Two ways, as the downstream code needs them:
  * `resize_bicubic`: what DropTrack / DropSeg do to the checkpoint's table:
    torch.nn.functional.interpolate(mode='bicubic', align_corners=False) — Keys kernel a = -0.75,
    half-pixel centres, edge-clamped taps, no antialiasing even when shrinking. (jax.image.resize
    uses a = -0.5 and antialiases, so it does not reproduce this.)
  * `regenerate_sincos`: a fresh fixed sin-cos table for the new grid (what MAE's table is).
"""
from __future__ import annotations

import numpy as np

from dropmae_jax.models import vit

_A = -0.75  # PyTorch's bicubic coefficient


def _cubic_weights(t: np.ndarray) -> np.ndarray:
  """(M,) fractional offsets -> (M, 4) weights of taps at -1, 0, +1, +2."""
  def near(x):  # |x| <= 1
    return ((_A + 2) * x - (_A + 3)) * x * x + 1
  def far(x):   # 1 < |x| < 2
    return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A
  return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def _interp_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) matrix of one axis of torch's bicubic resize (align_corners=False)."""
  scale = in_size / out_size
  src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
  base = np.floor(src)
  weights = _cubic_weights(src - base)
  matrix = np.zeros((out_size, in_size))
  for tap in range(4):
    idx = np.clip(base.astype(int) - 1 + tap, 0, in_size - 1)
    np.add.at(matrix, (np.arange(out_size), idx), weights[:, tap])
  return matrix


def resize_bicubic(table: np.ndarray, new_grid: tuple[int, int] | int) -> np.ndarray:
  """(g*g, D) (or (1, g*g, D)) row-major position table -> (h*w, D) (same leading dims).

  The old grid must be square (as every released table is); the new one may not be.
  """
  table = np.asarray(table)
  squeeze = table.ndim == 3
  flat = table[0] if squeeze else table
  grid = int(round(np.sqrt(flat.shape[0])))
  if grid * grid != flat.shape[0]:
    raise ValueError(f"position table of {flat.shape[0]} rows is not a square grid "
                     "(drop the cls slot first)")
  h, w = (new_grid, new_grid) if isinstance(new_grid, int) else new_grid
  image = flat.reshape(grid, grid, -1).astype(np.float64)
  out = np.einsum("hi,wj,ijd->hwd", _interp_matrix(grid, h), _interp_matrix(grid, w), image)
  out = out.reshape(h * w, -1).astype(table.dtype)
  return out[None] if squeeze else out


def regenerate_sincos(width: int, new_grid: int) -> np.ndarray:
  """A fresh (new_grid², width) fixed sin-cos table."""
  return vit.sincos_2d(width, new_grid)
