"""STCN's training augmentation (jimmy-dq/DropSeg `dataset/vos_dataset.py`), on PIL images.

Per frame of a pair, the released `VOSDataset.__getitem__` runs

  image: RandomHorizontalFlip(0.5) -> RandomResizedCrop(S, scale (0.36, 1), BICUBIC)
         -> ColorJitter(0.1, 0.03, 0.03, 0) -> RandomGrayscale(0.05)          [sequence seed]
         -> RandomAffine(15, shear=10, BICUBIC, fill=(124, 116, 104))
         -> ColorJitter(0.01, 0.01, 0.01, 0)                                  [pair seed]
  mask:  RandomHorizontalFlip(0.5) -> RandomResizedCrop(S, NEAREST)           [sequence seed]
         -> RandomAffine(15, shear=10, NEAREST, fill=0)                       [pair seed]

re-seeding torch before the image and before the mask: the sequence seed is the same for both
frames (same flip, crop box for equal frame sizes, jitter factors and grayscale coin), the pair
seed is new for each frame and shared by its image and mask (same affine). Here each seed starts
a numpy Generator, and `draw_shared` / `draw_per_frame` take the draws in torchvision's
`get_params` order and logic (RandomResizedCrop: `data/random_crop.py`, 10 attempts, then the
central crop within the ratio bounds; RandomAffine: angle U(-15, 15), shear x U(-10, 10), shear y 0, no translation or
scale; ColorJitter: a random permutation of brightness / contrast / saturation, hue off). The
pixel work is torchvision's functional ops on PIL, re-written with the same PIL calls (crop then
resize, `Image.transform(AFFINE)` with the inverse matrix about the centre (W/2, H/2), ImageEnhance
blends, 'L' replicated to three channels), so a given set of parameters gives torchvision's pixels
exactly (tests/vos/test_dropseg_data.py). The torch RNG stream itself is not reproduced.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageEnhance

from dropmae_jax.data import random_crop

IMAGE_FILL = (124, 116, 104)     # STCN dataset/range_transform.py im_mean (the affine's image fill)
CROP_SCALE = (0.36, 1.0)         # RandomResizedCrop scale (non-BL30K data)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)   # RandomResizedCrop ratio (torchvision default)
FLIP_PROB = 0.5
SHARED_JITTER = (0.1, 0.03, 0.03)     # ColorJitter(brightness, contrast, saturation, hue=0)
GRAYSCALE_PROB = 0.05
AFFINE_DEGREES = 15.0
AFFINE_SHEAR = 10.0
FRAME_JITTER = (0.01, 0.01, 0.01)


@dataclasses.dataclass(frozen=True)
class Jitter:
  """ColorJitter parameters: order of (0 brightness, 1 contrast, 2 saturation, 3 hue), factors."""
  order: tuple[int, ...]
  brightness: float
  contrast: float
  saturation: float


@dataclasses.dataclass(frozen=True)
class SharedDraw:
  """Sequence-seed draws for one frame: flip, crop box (top, left, height, width), jitter, gray."""
  flip: bool
  crop: tuple[int, int, int, int]
  jitter: Jitter
  grayscale: bool


@dataclasses.dataclass(frozen=True)
class FrameDraw:
  """Pair-seed draws for one frame: affine angle and x shear (degrees), small jitter."""
  angle: float
  shear: float
  jitter: Jitter


def draw_jitter(rng: np.random.Generator, strengths: tuple[float, float, float]) -> Jitter:
  """ColorJitter.get_params with hue 0: a permutation of the 4 ops, then factors in [1-s, 1+s]."""
  order = tuple(int(v) for v in rng.permutation(4))
  b, c, s = (float(rng.uniform(max(0.0, 1.0 - v), 1.0 + v)) for v in strengths)
  return Jitter(order, b, c, s)


def draw_shared(rng: np.random.Generator, width: int, height: int) -> SharedDraw:
  """The sequence-seed draws for a frame of this size (flip, crop, jitter, grayscale, in order)."""
  flip = bool(rng.random() < FLIP_PROB)
  crop = random_crop.resized_crop_box(height, width, CROP_SCALE, CROP_RATIO, rng)
  jitter = draw_jitter(rng, SHARED_JITTER)
  grayscale = bool(rng.random() < GRAYSCALE_PROB)
  return SharedDraw(flip, crop, jitter, grayscale)


def draw_per_frame(rng: np.random.Generator) -> FrameDraw:
  """The pair-seed draws (RandomAffine.get_params with degrees 15, shear 10; then the jitter)."""
  angle = float(rng.uniform(-AFFINE_DEGREES, AFFINE_DEGREES))
  shear = float(rng.uniform(-AFFINE_SHEAR, AFFINE_SHEAR))
  return FrameDraw(angle, shear, draw_jitter(rng, FRAME_JITTER))


# --- pixel operations (torchvision.transforms.functional on PIL images) ---

def hflip(image: Image.Image) -> Image.Image:
  return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def resized_crop(image: Image.Image, box: tuple[int, int, int, int], size: int,
                 resample: int) -> Image.Image:
  """Crop (top, left, height, width), then resize to (size, size) with PIL's `resample`."""
  top, left, h, w = box
  return image.crop((left, top, left + w, top + h)).resize((size, size), resample)


def inverse_affine_matrix(width: int, height: int, angle: float,
                          shear: tuple[float, float]) -> list[float]:
  """PIL AFFINE coefficients (output pixel -> input pixel) of a rotation by `angle` and a shear
  (degrees) about the centre (W/2, H/2), no translation, scale 1.

  The forward linear map is R(angle - shear_y) composed with the shears; its determinant is 1, so
  the inverse is the adjugate [[d, -b], [-c, a]], applied after moving the centre to the origin.
  """
  rot = math.radians(angle)
  sx, sy = math.radians(shear[0]), math.radians(shear[1])
  cx, cy = width * 0.5, height * 0.5
  a = math.cos(rot - sy) / math.cos(sy)
  b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
  c = math.sin(rot - sy) / math.cos(sy)
  d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
  inv = [d, -b, -c, a]
  # Same float operations and order as the closed form torchvision evaluates (last-ulp ties
  # would move a NEAREST sample otherwise).
  x0 = inv[0] * -cx + inv[1] * -cy + cx
  y0 = inv[2] * -cx + inv[3] * -cy + cy
  return [inv[0], inv[1], x0, inv[2], inv[3], y0]


def affine(image: Image.Image, angle: float, shear: float, resample: int, fill) -> Image.Image:
  """Rotate + x-shear about the centre, same size, `fill` outside the source."""
  matrix = inverse_affine_matrix(image.width, image.height, angle, (shear, 0.0))
  return image.transform(image.size, Image.Transform.AFFINE, matrix, resample, fillcolor=fill)


def grayscale3(image: Image.Image) -> Image.Image:
  """rgb_to_grayscale(num_output_channels=3): PIL's 'L' (ITU-R 601-2 luma) in all three channels."""
  luma = np.asarray(image.convert("L"), np.uint8)
  return Image.fromarray(np.dstack([luma, luma, luma]), "RGB")


def color_jitter(image: Image.Image, jitter: Jitter) -> Image.Image:
  """adjust_brightness / contrast / saturation in `jitter.order` (hue, op 3, is off)."""
  for op in jitter.order:
    if op == 0:
      image = ImageEnhance.Brightness(image).enhance(jitter.brightness)
    elif op == 1:
      image = ImageEnhance.Contrast(image).enhance(jitter.contrast)
    elif op == 2:
      image = ImageEnhance.Color(image).enhance(jitter.saturation)
  return image


def augment_frame(image: np.ndarray, ids: np.ndarray, sequence_seed: int, pair_seed: int,
                  size: int) -> tuple[np.ndarray, np.ndarray]:
  """One frame and its id mask through the whole augmentation (module docstring).

  Args:
    image: uint8 (H, W, 3) RGB.
    ids: uint8 (H, W) object ids (same H, W).
    sequence_seed: the pair's shared seed (flip, crop, jitter, grayscale).
    pair_seed: this frame's seed (affine, small jitter).
    size: S, the output side.
  Returns:
    (uint8 (S, S, 3) image, uint8 (S, S) ids).
  """
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"augment_frame wants uint8 (H, W, 3), got {image.dtype} {image.shape}")
  if ids.shape != image.shape[:2]:
    raise ValueError(f"mask {ids.shape} does not match the frame {image.shape[:2]}")
  height, width = ids.shape
  shared = draw_shared(np.random.default_rng(sequence_seed), width, height)
  frame = draw_per_frame(np.random.default_rng(pair_seed))
  im = Image.fromarray(image, "RGB")
  gt = Image.fromarray(np.ascontiguousarray(ids, np.uint8), "L")
  if shared.flip:
    im, gt = hflip(im), hflip(gt)
  im = resized_crop(im, shared.crop, size, Image.Resampling.BICUBIC)
  gt = resized_crop(gt, shared.crop, size, Image.Resampling.NEAREST)
  im = color_jitter(im, shared.jitter)
  if shared.grayscale:
    im = grayscale3(im)
  im = affine(im, frame.angle, frame.shear, Image.Resampling.BICUBIC, IMAGE_FILL)
  gt = affine(gt, frame.angle, frame.shear, Image.Resampling.NEAREST, 0)
  im = color_jitter(im, frame.jitter)
  return np.asarray(im, np.uint8), np.asarray(gt, np.uint8)
