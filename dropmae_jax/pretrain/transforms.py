"""The released per-item recipe: a frame pair within `max_gap`, each frame cropped and flipped.

Pure numpy/PIL functions of an explicit `np.random.Generator`, so grain's per-record RNG makes
every item reproducible (and resumable). Frames stay uint8 here; the model normalises with
IMAGENET_MEAN/STD on device, which keeps host->device transfers 4x smaller than float32.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from dropmae_jax.data.images import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (normalised on device)
from dropmae_jax.data.random_crop import resized_crop_box


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


def resized_crop_image(image: np.ndarray | Image.Image, size: int, scale: tuple[float, float],
                       ratio: tuple[float, float], rng: np.random.Generator) -> Image.Image:
  """uint8 (H, W, 3) or an RGB PIL image -> RGB PIL image (size, size): torchvision's
  RandomResizedCrop, crop then a PIL bicubic resize.

  Crop-then-resize (not `resize(box=...)`) as torchvision does on PIL images, so pixels match.
  """
  pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
  top, left, h, w = resized_crop_box(pil.height, pil.width, scale, ratio, rng)
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
