"""Reconstruction figures: both frames, what the encoder saw, and what the decoder predicted."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_EPS = 1e-6


def _patchify(img: np.ndarray, p: int) -> np.ndarray:
  """(H, W, 3) -> (h·w, p·p·3) in (p, q, c) order."""
  h, w = img.shape[0] // p, img.shape[1] // p
  return img.reshape(h, p, w, p, 3).transpose(0, 2, 1, 3, 4).reshape(h * w, p * p * 3)


def _unpatchify(x: np.ndarray, p: int, height: int, width: int) -> np.ndarray:
  h, w = height // p, width // p
  return x.reshape(h, w, p, p, 3).transpose(0, 2, 1, 3, 4).reshape(height, width, 3)


def reconstruction_panels(frames: np.ndarray, mask: np.ndarray, pred: np.ndarray, *,
                          patch_size: int, norm_pix_loss: bool, mean, std) -> np.ndarray:
  """The figure's images as an array (2 frames, 4 columns, H, W, 3) of RGB in [0, 1].

  Args:
    frames: (2, H, W, 3) ImageNet-normalised frames x and z.
    mask: (2n,) 1 = hidden patch; first n belong to x.
    pred: (2n, p·p·3) predictions; per-patch normalised when `norm_pix_loss`, in which case they
      are mapped back with each real patch's mean and unbiased std, as MAE's visualisation does.
  Columns: original, masked input, prediction on hidden patches, prediction + visible patches.
  """
  p = patch_size
  _, height, width, _ = frames.shape
  n = (height // p) * (width // p)
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  panels = []
  for f in range(2):
    target = _patchify(frames[f], p)
    guess = pred[f * n:(f + 1) * n].astype(np.float64)
    if norm_pix_loss:
      mu = target.mean(axis=-1, keepdims=True)
      sigma = np.sqrt(target.var(axis=-1, ddof=1, keepdims=True) + _EPS)
      guess = guess * sigma + mu
    hidden = mask[f * n:(f + 1) * n].astype(bool)[:, None]
    grey = np.zeros_like(target)  # normalised 0 = the dataset mean colour
    to_rgb = lambda x: np.clip(_unpatchify(x, p, height, width) * std + mean, 0.0, 1.0)
    panels.append([to_rgb(target), to_rgb(np.where(hidden, grey, target)),
                   to_rgb(np.where(hidden, guess, grey)), to_rgb(np.where(hidden, guess, target))])
  return np.asarray(panels, np.float32)


def reconstruction_figure(frames: np.ndarray, mask: np.ndarray, pred: np.ndarray, *,
                          patch_size: int, norm_pix_loss: bool, mean, std, path: str,
                          title: str = "") -> str:
  """Writes a 2 x 4 PNG grid (rows frame x / frame z) to `path` and returns the path."""
  panels = reconstruction_panels(frames, mask, pred, patch_size=patch_size,
                                 norm_pix_loss=norm_pix_loss, mean=mean, std=std)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig, axes = plt.subplots(2, 4, figsize=(12, 6.4))
  columns = ("original", "encoder input", "prediction (hidden)", "prediction + visible")
  for r, row_name in enumerate(("frame x", "frame z")):
    for c in range(4):
      ax = axes[r, c]
      ax.imshow(panels[r, c])
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(columns[c])
      if c == 0:
        ax.set_ylabel(row_name)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path
