"""DropSeg fine-tuning figures: the memory frame with its object masks, the query frame, the query's
ground truth and the prediction over it (target red, second object green), as the released
`pool_pairs` images show a training pair."""
from __future__ import annotations

import os

import numpy as np
# A bare Figure drawn by the Agg canvas: no pyplot global backend (notebooks keep theirs).
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Colours of labels 1 (target) and 2 (second object), RGB in [0, 1].
COLORS = np.array([[1.0, 0.15, 0.1], [0.1, 0.9, 0.2]])
ALPHA = 0.5


def overlay(image_u8: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """(H, W, 3) uint8 + (H, W) ids in {0, 1, 2} -> (H, W, 3) float image, objects tinted."""
  out = image_u8.astype(np.float64) / 255.0
  for k, color in enumerate(COLORS, start=1):
    where = labels == k
    out[where] = (1 - ALPHA) * out[where] + ALPHA * color
  return out


def segmentation_figure(memory_u8: np.ndarray, memory_masks: np.ndarray, query_u8: np.ndarray,
                        truth: np.ndarray, prediction: np.ndarray, path: str, *,
                        title: str = "") -> str:
  """Writes a 1 x 4 PNG (memory + masks | query | ground truth | prediction); returns `path`.

  Args (ONE pair):
    memory_u8, query_u8: (S, S, 3) uint8 frames of the batch.
    memory_masks: (2, S, S) {0, 1} masks of the target and the second object.
    truth: (S, S) query ids in {0, 1, 2} (the batch's query_labels).
    prediction: (S, S) predicted ids (argmax over {background, target, second}).
    path: output file; parent folders are created.
  """
  memory, query = np.asarray(memory_u8), np.asarray(query_u8)
  s = memory.shape[0]
  for name, x, shape in (("memory_u8", memory, (s, s, 3)), ("query_u8", query, (s, s, 3)),
                         ("memory_masks", np.asarray(memory_masks), (2, s, s)),
                         ("truth", np.asarray(truth), (s, s)),
                         ("prediction", np.asarray(prediction), (s, s))):
    if x.shape != shape:
      raise ValueError(f"segmentation_figure: {name} must be {shape}, got {x.shape}")
  masks = np.asarray(memory_masks) > 0.5
  memory_ids = np.where(masks[0], 1, np.where(masks[1], 2, 0))
  truth, prediction = np.asarray(truth), np.asarray(prediction)
  inter = np.sum((truth == 1) & (prediction == 1))
  union = np.sum((truth == 1) | (prediction == 1))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig = Figure(figsize=(14, 4))
  FigureCanvasAgg(fig)   # attaches itself as fig.canvas; not registered with pyplot
  axes = fig.subplots(1, 4)
  panels = ((overlay(memory, memory_ids), "memory frame + masks"), (query, "query frame"),
            (overlay(query, truth), "ground truth"),
            (overlay(query, prediction),
             f"prediction (target IoU {(inter + 1) / (union + 1):.2f})"))
  for ax, (image, name) in zip(axes, panels):
    ax.imshow(image, interpolation="nearest")
    ax.set_title(name)
    ax.set_xticks([])
    ax.set_yticks([])
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  return path
