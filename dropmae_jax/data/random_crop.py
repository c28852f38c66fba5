"""torchvision's RandomResizedCrop box draw, on an explicit numpy Generator.

Both fine-tuning-style recipes that crop with RandomResizedCrop (DropMAE pre-training's per-frame
crop, STCN's pair augmentation for DropSeg) draw their boxes here, so the rule is written once.
"""
from __future__ import annotations

import math

import numpy as np

ATTEMPTS = 10   # RandomResizedCrop.get_params tries this many boxes before the central fallback


def resized_crop_box(height: int, width: int, scale: tuple[float, float],
                     ratio: tuple[float, float], rng: np.random.Generator
                     ) -> tuple[int, int, int, int]:
  """torchvision's RandomResizedCrop.get_params: (top, left, h, w) of the crop.

  Ten tries at an area fraction ~ U(scale) and an aspect ratio (w/h) log-uniform in `ratio`;
  if none fits, the central crop of the largest box whose aspect is clamped into `ratio`.
  """
  area = height * width
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(ATTEMPTS):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w
