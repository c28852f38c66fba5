"""STCN's pair augmentation for DropSeg (vos/inputs/augment.py) against torchvision: pixels vs
torchvision.transforms.functional on PIL images for the same parameters, and parameter draws vs
torchvision's own get_params (ranges and distributions)."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from dropmae_jax.data import random_crop
from dropmae_jax.vos.inputs import augment


def random_ids(rng, h, w) -> np.ndarray:
  ids = np.zeros((h, w), np.uint8)
  for k in (1, 2, 3):
    y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
    ids[y:y + rng.integers(4, h // 2), x:x + rng.integers(4, w // 2)] = k
  return ids


# ------------------------------------------------------------------------------------------
# augmentation pixels vs torchvision.transforms.functional

def torchvision_mask(ids: np.ndarray, shared, frame, size):
  gt = Image.fromarray(ids, "P")    # the released reads masks with .convert('P')
  if shared.flip:
    gt = TF.hflip(gt)
  gt = TF.resized_crop(gt, *shared.crop, [size, size], InterpolationMode.NEAREST)
  gt = TF.affine(gt, angle=frame.angle, translate=[0, 0], scale=1.0, shear=[frame.shear, 0.0],
                 interpolation=InterpolationMode.NEAREST, fill=0)
  return np.asarray(gt)


def torchvision_jitter(im, jitter):
  ops = {0: lambda x: TF.adjust_brightness(x, jitter.brightness),
         1: lambda x: TF.adjust_contrast(x, jitter.contrast),
         2: lambda x: TF.adjust_saturation(x, jitter.saturation),
         3: lambda x: x}
  for op in jitter.order:
    im = ops[op](im)
  return im


def torchvision_image(image: np.ndarray, shared, frame, size):
  im = Image.fromarray(image, "RGB")
  if shared.flip:
    im = TF.hflip(im)
  im = TF.resized_crop(im, *shared.crop, [size, size], InterpolationMode.BICUBIC)
  im = torchvision_jitter(im, shared.jitter)
  if shared.grayscale:
    im = TF.rgb_to_grayscale(im, num_output_channels=3)
  im = TF.affine(im, angle=frame.angle, translate=[0, 0], scale=1.0, shear=[frame.shear, 0.0],
                 interpolation=InterpolationMode.BICUBIC, fill=list(augment.IMAGE_FILL))
  return np.asarray(torchvision_jitter(im, frame.jitter))


@pytest.mark.parametrize("seed", range(6))
def test_augment_frame_equals_torchvision_functional(seed):
  """Exact equality (0 grey levels) for images and masks, odd sizes included."""
  rng = np.random.default_rng(100 + seed)
  h, w = [(48, 64), (61, 97), (120, 50)][seed % 3]
  image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
  ids = random_ids(rng, h, w)
  sequence_seed, pair_seed = 7 * seed + 1, 11 * seed + 3
  shared = augment.draw_shared(np.random.default_rng(sequence_seed), w, h)
  frame = augment.draw_per_frame(np.random.default_rng(pair_seed))
  if seed == 0:    # make sure every branch runs at least once
    shared = augment.SharedDraw(True, shared.crop, shared.jitter, True)
  size = 40
  got_image, got_ids = augment.augment_frame(image, ids, sequence_seed, pair_seed, size)
  if seed == 0:    # the forced draw, through the pieces
    want_ids = torchvision_mask(ids, shared, frame, size)
    im = Image.fromarray(image)
    gt = augment.hflip(Image.fromarray(ids, "L"))
    gt = augment.resized_crop(gt, shared.crop, size, Image.Resampling.NEAREST)
    gt = augment.affine(gt, frame.angle, frame.shear, Image.Resampling.NEAREST, 0)
    np.testing.assert_array_equal(np.asarray(gt), want_ids)
    im = augment.color_jitter(augment.resized_crop(augment.hflip(im), shared.crop, size,
                                                   Image.Resampling.BICUBIC), shared.jitter)
    im = augment.affine(augment.grayscale3(im), frame.angle, frame.shear,
                        Image.Resampling.BICUBIC, augment.IMAGE_FILL)
    im = augment.color_jitter(im, frame.jitter)
    np.testing.assert_array_equal(np.asarray(im), torchvision_image(image, shared, frame, size))
    return
  np.testing.assert_array_equal(got_ids, torchvision_mask(ids, shared, frame, size))
  np.testing.assert_array_equal(got_image, torchvision_image(image, shared, frame, size))
  assert got_image.shape == (size, size, 3) and got_ids.shape == (size, size)


def test_affine_fill_and_large_angles_match_torchvision():
  rng = np.random.default_rng(3)
  image = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
  ids = random_ids(rng, 33, 47)
  for angle, shear in [(15.0, 10.0), (-15.0, -10.0), (7.3, -2.1), (90.0, 0.0), (0.0, 0.0)]:
    got = augment.affine(Image.fromarray(ids, "L"), angle, shear, Image.Resampling.NEAREST, 0)
    want = TF.affine(Image.fromarray(ids, "P"), angle=angle, translate=[0, 0], scale=1.0,
                     shear=[shear, 0.0], interpolation=InterpolationMode.NEAREST, fill=0)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    got = augment.affine(Image.fromarray(image), angle, shear, Image.Resampling.BICUBIC,
                         augment.IMAGE_FILL)
    want = TF.affine(Image.fromarray(image), angle=angle, translate=[0, 0], scale=1.0,
                     shear=[shear, 0.0], interpolation=InterpolationMode.BICUBIC,
                     fill=list(augment.IMAGE_FILL))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  corner = np.asarray(augment.affine(Image.fromarray(image), 15.0, 10.0,
                                     Image.Resampling.BICUBIC, augment.IMAGE_FILL))[0, 0]
  assert tuple(corner) == augment.IMAGE_FILL     # rotated out of the source: the mean colour


def test_color_jitter_and_grayscale_match_torchvision():
  rng = np.random.default_rng(5)
  im = Image.fromarray(rng.integers(0, 256, (21, 34, 3), dtype=np.uint8))
  for order in [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)]:
    for factors in [(0.9, 1.03, 0.97), (1.1, 0.97, 1.03), (0.5, 1.8, 0.2)]:
      jitter = augment.Jitter(order, *factors)
      np.testing.assert_array_equal(np.asarray(augment.color_jitter(im, jitter)),
                                    np.asarray(torchvision_jitter(im, jitter)))
  np.testing.assert_array_equal(np.asarray(augment.grayscale3(im)),
                                np.asarray(TF.rgb_to_grayscale(im, num_output_channels=3)))


# ------------------------------------------------------------------------------------------
# parameter draws vs torchvision's get_params

def test_resized_crop_draws_match_torchvision_statistics():
  width, height, n = 854, 480, 4000
  rng = np.random.default_rng(0)
  ours = np.array([random_crop.resized_crop_box(height, width, augment.CROP_SCALE, augment.CROP_RATIO, rng) for _ in range(n)], float)
  torch.manual_seed(0)
  img = Image.new("RGB", (width, height))
  ref = np.array([T.RandomResizedCrop.get_params(img, [0.36, 1.0], [3 / 4, 4 / 3])
                  for _ in range(n)], float)
  for draws in (ours, ref):
    top, left, h, w = draws.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
  area = lambda d: d[:, 2] * d[:, 3] / (width * height)
  ratio = lambda d: np.log(d[:, 3] / d[:, 2])
  assert area(ours).min() > 0.35 and area(ours).max() <= 1.0
  assert np.abs(ratio(ours)).max() < np.log(4 / 3) + 0.01
  assert abs(area(ours).mean() - area(ref).mean()) < 0.015
  assert abs(ratio(ours).mean() - ratio(ref).mean()) < 0.015
  assert abs(ratio(ours).std() - ratio(ref).std()) < 0.015
  # Positions: uniform over the valid range on both sides.
  centre = lambda d: (d[:, 1] + d[:, 3] / 2) / width
  assert abs(centre(ours).mean() - centre(ref).mean()) < 0.015


@pytest.mark.parametrize("size", [(854, 480), (480, 854), (100, 100), (1000, 30)])
def test_resized_crop_fallback_is_torchvision_central_crop(size):
  """A scale that never fits forces the fallback; torchvision's is deterministic then."""
  width, height = size
  ours = random_crop.resized_crop_box(height, width, (2.0, 3.0), augment.CROP_RATIO,
                                     np.random.default_rng(0))
  ref = T.RandomResizedCrop.get_params(Image.new("L", size), [2.0, 3.0], [3 / 4, 4 / 3])
  assert ours == tuple(int(v) for v in ref)


def test_affine_jitter_flip_grayscale_draws():
  n = 4000
  rng = np.random.default_rng(1)
  frames = [augment.draw_per_frame(rng) for _ in range(n)]
  angle = np.array([f.angle for f in frames])
  shear = np.array([f.shear for f in frames])
  torch.manual_seed(1)
  ref = [T.RandomAffine.get_params([-15.0, 15.0], None, None, [-10.0, 10.0], [64, 48])
         for _ in range(n)]
  ref_angle = np.array([r[0] for r in ref])
  ref_shear = np.array([r[3] for r in ref])
  assert all(r[1] == (0, 0) and r[2] == 1.0 for r in ref)
  assert (ref_shear[:, 1] == 0).all()       # no y shear in the released transform either
  assert np.abs(angle).max() <= 15 and np.abs(shear).max() <= 10
  assert abs(angle.mean()) < 0.5 and abs(shear.mean()) < 0.35
  assert abs(angle.std() - ref_angle.std()) < 0.3 and abs(shear.std() - ref_shear[:, 0].std()) < 0.2
  # ColorJitter's ranges as torchvision parses them (hue off).
  for strengths, frame_level in [(augment.SHARED_JITTER, False), (augment.FRAME_JITTER, True)]:
    cj = T.ColorJitter(*strengths, 0)
    jit = [f.jitter for f in frames] if frame_level else [
        augment.draw_jitter(rng, strengths) for _ in range(n)]
    assert cj.hue is None
    for name, values in [("brightness", [j.brightness for j in jit]),
                         ("contrast", [j.contrast for j in jit]),
                         ("saturation", [j.saturation for j in jit])]:
      lo, hi = getattr(cj, name)
      assert lo <= min(values) and max(values) <= hi
      assert min(values) < lo + 0.02 * (hi - lo) and max(values) > hi - 0.02 * (hi - lo)
    orders = {j.order for j in jit}
    assert len(orders) == 24       # every permutation of the four ops
  shared = [augment.draw_shared(rng, 64, 48) for _ in range(n)]
  assert abs(np.mean([s.flip for s in shared]) - 0.5) < 0.03
  assert abs(np.mean([s.grayscale for s in shared]) - 0.05) < 0.012
