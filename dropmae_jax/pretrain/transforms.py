"""The released per-item recipe: a frame pair within `max_gap`, each frame cropped and flipped.

Pure numpy/PIL functions of an explicit `np.random.Generator`, so grain's per-record RNG makes
every item reproducible (and resumable). Frames stay uint8 here; the model normalises with
IMAGENET_MEAN/STD on device, which keeps host->device transfers 4x smaller than float32.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from dropmae_jax.data.images import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (normalised on device)


def sample_frame_pair(num_frames: int, max_gap: int,
                      rng: np.random.Generator) -> tuple[int, int]:
  """Released rule: s ~ U{0..T-2}, e ~ U{s+1 .. min(T, s+gap)-1} (inclusive bounds).

  So 0 < e - s < gap. A one-frame video gives (0, 0): the caller repeats the frame and counts it.
  """
  if num_frames < 1:
    raise ValueError(f"a video needs at least one frame, got {num_frames}")
  if max_gap < 2:
    raise ValueError(f"config.data.max_gap must be >= 2 (e - s < gap), got {max_gap}")
  if num_frames == 1:
    return 0, 0
  s = int(rng.integers(0, num_frames - 1))                  # high is exclusive: s <= T-2
  e = int(rng.integers(s + 1, min(num_frames, s + max_gap)))  # e <= min(T, s+gap) - 1
  return s, e


def crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
             rng: np.random.Generator) -> tuple[int, int, int, int]:
  """torchvision's RandomResizedCrop.get_params: (top, left, h, w) of the crop.

  Ten tries at an area fraction ~ U(scale) and an aspect ratio (w/h) log-uniform in `ratio`;
  if none fits, the central crop of the largest box whose aspect is clamped into `ratio`.
  """
  area = height * width
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(10):
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


def resized_crop_image(image: np.ndarray | Image.Image, size: int, scale: tuple[float, float],
                       ratio: tuple[float, float], rng: np.random.Generator) -> Image.Image:
  """uint8 (H, W, 3) or an RGB PIL image -> RGB PIL image (size, size): torchvision's
  RandomResizedCrop, crop then a PIL bicubic resize.

  Crop-then-resize (not `resize(box=...)`) as torchvision does on PIL images, so pixels match.
  """
  pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
  top, left, h, w = crop_box(pil.height, pil.width, scale, ratio, rng)
  return pil.crop((left, top, left + w, top + h)).resize((size, size), Image.Resampling.BICUBIC)


def random_resized_crop(image: np.ndarray | Image.Image, size: int, scale: tuple[float, float],
                        ratio: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
  """`resized_crop_image` as uint8 (size, size, 3)."""
  return np.asarray(resized_crop_image(image, size, scale, ratio, rng))


def hflip(image: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
  """(H, W, C) mirrored left-right with probability p (torchvision: flip if U[0,1) < p)."""
  return image[:, ::-1] if rng.random() < p else image


def augment_frame(image: np.ndarray | Image.Image, size: int, scale: tuple[float, float],
                  ratio: tuple[float, float], flip: bool, rng: np.random.Generator) -> np.ndarray:
  """One frame's own RandomResizedCrop(size, scale, ratio, bicubic) + horizontal flip.

  uint8 (H, W, 3) (or an RGB PIL image) -> contiguous uint8 (size, size, 3). The flip happens
  on the PIL image (same draw as `hflip`), so the pixels are copied out once.
  """
  out = resized_crop_image(image, size, scale, ratio, rng)
  if flip and rng.random() < 0.5:
    out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return np.asarray(out)
