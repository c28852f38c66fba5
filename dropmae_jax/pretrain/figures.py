"""Reconstruction figures: both frames, what the encoder saw, and what the decoder predicted."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
# A bare Figure drawn by the Agg canvas: saving a PNG needs no display and never touches pyplot's
# global backend, so a notebook that imports this module still shows its own plots inline.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_EPS = 1e-6          # the loss's variance epsilon (norm_pix_loss)
_GREY = 0.5          # RGB value of patches not shown in a panel
COLUMNS = ("original", "masked input", "reconstruction", "reconstruction + visible")


def _patchify(img: np.ndarray, p: int) -> np.ndarray:
  """(H, W, C) -> (h·w, p·p·C) in (p, q, c) order, patches row-major (the model's order)."""
  h, w, c = img.shape[0] // p, img.shape[1] // p, img.shape[2]
  return img.reshape(h, p, w, p, c).transpose(0, 2, 1, 3, 4).reshape(h * w, p * p * c)


def _unpatchify(x: np.ndarray, p: int, height: int, width: int) -> np.ndarray:
  """(h·w, p·p·C) -> (H, W, C); inverse of `_patchify`."""
  h, w = height // p, width // p
  c = x.shape[-1] // (p * p)
  return x.reshape(h, w, p, p, c).transpose(0, 2, 1, 3, 4).reshape(height, width, c)


def _denormalize_patches(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Per-patch normalised prediction -> units of `target` (both (n, p·p·3)).

  Inverse of the norm_pix_loss target: each patch's own mean and unbiased std (ddof=1) with
  the loss's 1e-6 added to the variance, as MAE's visualisation does.
  """
  mu = target.mean(axis=-1, keepdims=True)
  sigma = np.sqrt(target.var(axis=-1, ddof=1, keepdims=True) + _EPS)
  return pred * sigma + mu


def reconstruction_panels(frames: np.ndarray, mask: np.ndarray, pred: np.ndarray, *,
                          patch_size: int, norm_pix_loss: bool, mean: Sequence[float],
                          std: Sequence[float]) -> np.ndarray:
  """The figure's images: float32 (2 frames, 4 columns, H, W, 3), RGB in [0, 1].

  Args:
    frames: (2, H, W, 3) frames x and z, normalised with ImageNet `mean`/`std`.
    mask: (2n,) 1 = masked (hidden from the encoder); the first n tokens belong to frame x.
      n = (H/p)·(W/p).
    pred: (2n, p·p·3) decoder output, pixel order (p, q, c) per patch; per-patch normalised
      when `norm_pix_loss` (mapped back with each real patch's mean and std).
  Columns (see COLUMNS): original; masked input (masked patches grey); reconstruction on the
  masked patches (the rest grey); reconstruction on masked + original visible patches.
  """
  frames = np.asarray(frames, np.float64)
  mask = np.asarray(mask).reshape(-1)
  pred = np.asarray(pred, np.float64)
  p = patch_size
  two, height, width, _ = frames.shape
  if two != 2 or height % p or width % p:
    raise ValueError(f"frames must be (2, H, W, 3) with H, W multiples of {p}, got "
                     f"{frames.shape}")
  n = (height // p) * (width // p)
  if mask.shape != (2 * n,) or pred.shape != (2 * n, p * p * 3):
    raise ValueError(f"for {frames.shape} frames and patch {p} expected mask ({2 * n},) and "
                     f"pred ({2 * n}, {p * p * 3}); got {mask.shape} and {pred.shape}")
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  to_rgb = lambda x: np.clip(_unpatchify(x, p, height, width) * std + mean, 0.0, 1.0)
  panels = []
  for f in range(2):
    target = _patchify(frames[f], p)
    guess = pred[f * n:(f + 1) * n]
    if norm_pix_loss:
      guess = _denormalize_patches(guess, target)
    hidden = mask[f * n:(f + 1) * n].astype(bool)
    original, reconstruction = to_rgb(target), to_rgb(guess)
    # Per-pixel view of the per-patch mask, to compose the panels in RGB.
    hidden_px = _unpatchify(np.repeat(hidden[:, None], p * p * 3, axis=1), p, height, width)
    panels.append([original,
                   np.where(hidden_px, _GREY, original),
                   np.where(hidden_px, reconstruction, _GREY),
                   np.where(hidden_px, reconstruction, original)])
  return np.asarray(panels, np.float32)


def reconstruction_figure(frames: np.ndarray, mask: np.ndarray, pred: np.ndarray, *,
                          patch_size: int, norm_pix_loss: bool, mean: Sequence[float],
                          std: Sequence[float], path: str, title: str = "") -> str:
  """Writes a 2 x 4 PNG grid (rows frame x / frame z; `COLUMNS`) to `path`; returns `path`.

  Arguments as `reconstruction_panels`, for ONE example. Parent directories are created.
  """
  panels = reconstruction_panels(frames, mask, pred, patch_size=patch_size,
                                 norm_pix_loss=norm_pix_loss, mean=mean, std=std)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # Not registered with pyplot, so nothing stays open between calls over a long run.
  fig = Figure(figsize=(12, 6.4))
  FigureCanvasAgg(fig)   # attaches itself as fig.canvas: savefig below renders with Agg
  axes = fig.subplots(2, 4)
  for r, row_name in enumerate(("frame x", "frame z")):
    for c in range(4):
      ax = axes[r, c]
      ax.imshow(panels[r, c], interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(COLUMNS[c])
      if c == 0:
        ax.set_ylabel(row_name)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  return path
