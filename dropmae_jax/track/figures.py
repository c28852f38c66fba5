"""Fine-tuning figures: the template, the search crop with the GT (green) and predicted (red) boxes,
and the predicted score map with the GT and predicted centres."""
from __future__ import annotations

import os

import numpy as np
# A bare Figure drawn by the Agg canvas: no pyplot global backend (notebooks keep theirs).
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

GT_COLOR = "#00ff00"
PRED_COLOR = "#ff0000"


def _image(x: np.ndarray, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 3 or x.shape[-1] != 3:
    raise ValueError(f"tracking_figure: {what} must be (H, W, 3), got {x.shape}")
  if x.dtype != np.uint8:
    raise ValueError(f"tracking_figure: {what} must be uint8 (the batch's crops), got {x.dtype}")
  return x


def tracking_figure(template_u8: np.ndarray, search_u8: np.ndarray, gt_box: np.ndarray,
                    pred_box: np.ndarray, score_map: np.ndarray, path: str, *,
                    title: str = "") -> str:
  """Writes a 1 x 3 PNG (template | search + boxes | score map) to `path`; returns `path`.

  Args (ONE example):
    template_u8: (Hz, Wz, 3) uint8 template crop.
    search_u8: (Hx, Wx, 3) uint8 search crop.
    gt_box: (4,) GT normalised (x, y, w, h) in the search crop (the batch's `search_box`).
    pred_box: (4,) predicted normalised (x, y, w, h) — the model's `pred_boxes` (cx, cy, w, h)
      converted, so both boxes come in the same format.
    score_map: (F, F) predicted centre score map.
    path: output file; parent folders are created.
  """
  template = _image(template_u8, "template_u8")
  search = _image(search_u8, "search_u8")
  gt = np.asarray(gt_box, np.float64).reshape(-1)
  pred = np.asarray(pred_box, np.float64).reshape(-1)
  score = np.asarray(score_map, np.float64)
  if gt.shape != (4,) or pred.shape != (4,):
    raise ValueError(f"tracking_figure: gt_box and pred_box must have 4 values, got {gt.shape} "
                     f"and {pred.shape}")
  if score.ndim != 2 or score.shape[0] != score.shape[1]:
    raise ValueError(f"tracking_figure: score_map must be (F, F), got {score.shape}")
  height, width = search.shape[:2]
  feat = score.shape[0]
  # Normalised boxes -> search-crop pixels (x1, y1, w, h).
  gt_px = gt * np.array([width, height, width, height])
  pred_px = pred * np.array([width, height, width, height])

  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig = Figure(figsize=(12, 4.4))
  FigureCanvasAgg(fig)   # attaches itself as fig.canvas; not registered with pyplot
  ax_t, ax_s, ax_m = fig.subplots(1, 3)
  ax_t.imshow(template, interpolation="nearest")
  ax_t.set_title("template")
  ax_s.imshow(search, interpolation="nearest")
  ax_s.set_title("search: GT (green), prediction (red)")
  for box, color in ((gt_px, GT_COLOR), (pred_px, PRED_COLOR)):
    ax_s.add_patch(Rectangle((box[0], box[1]), box[2], box[3], fill=False, edgecolor=color,
                             linewidth=2))
  ax_s.set_xlim(-0.5, width - 0.5)
  ax_s.set_ylim(height - 0.5, -0.5)
  im = ax_m.imshow(score, interpolation="nearest", cmap="viridis", vmin=0.0,
                   vmax=max(1e-6, float(score.max())))
  fig.colorbar(im, ax=ax_m, fraction=0.046, pad=0.04)
  # Centres in feature cells: the GT one as the heatmap places it, the predicted box's.
  gt_centre = (gt[:2] + gt[2:] / 2) * feat
  ax_m.plot(np.round(gt_centre[0]), np.round(gt_centre[1]), "x", color=GT_COLOR, markersize=10,
            mew=2)
  pred_centre = (pred[:2] + pred[2:] / 2) * feat
  ax_m.plot(pred_centre[0], pred_centre[1], "+", color=PRED_COLOR, markersize=10, mew=2)
  ax_m.set_xlim(-0.5, feat - 0.5)
  ax_m.set_ylim(feat - 0.5, -0.5)
  ax_m.set_title(f"score map (max {score.max():.3f})")
  for ax in (ax_t, ax_s, ax_m):
    ax.set_xticks([])
    ax.set_yticks([])
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  return path
