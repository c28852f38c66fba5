"""OSTrack's `STARKProcessing` for one (template, search) pair, in numpy.

The released pipeline (lib/train/data/processing.py, transforms.py, processing_utils.py;
train_script.py builds it) does, for a sampled pair of raw frames and their GT boxes:

  1. joint transform, one random draw shared by both frames (`new_roll=False` for the search):
     ToGrayscale(p=0.05) (cv2 RGB2GRAY, stacked to 3 channels), then RandomHorizontalFlip(p=0.5):
     pixels `fliplr`, box x' = (W - 1) - (x + w) (the corner formula `(W-1) - x` applied to x1, x2);
  2. per branch s in (template, search): jitter the GT box —
       size' = (w, h) * exp(N(0,1)^2 * scale_jitter_s),
       centre' = centre + sqrt(w'h') * center_jitter_s * (U[0,1)^2 - 0.5);
     reject when ceil(sqrt(w'h') * factor_s) < 1;
  3. crop a square of side ceil(sqrt(w'h') * factor_s) around centre' with zero padding, resized
     (cv2 bilinear) to output_size_s: `track.crop.sample_target`, bit-exact to the cv2 path;
     the GT box in the crop, normalised by the output size: `transform_box_to_crop(normalize=True)`;
  4. per-crop transform, drawn independently for template and search (train only; the val
     transform is ToTensor + Normalize): ToTensorAndJitter(0.2) — a brightness factor
     U[0.8, 1.2), x * (factor / 255) clamped to [0, 1] — then RandomHorizontalFlip_Norm(p=0.5):
     pixels and padding mask flipped, normalised box x' = 1 - (x + w);
  5. reject when the padding mask is all True, or all True after nearest down-sampling to
     output_size // 16 (F.interpolate 'nearest': source index floor(i * in/out)).

What comes back stays uint8 (after steps 1-4's geometry) with the brightness factor beside it: the
multiplication, clamp and ImageNet normalisation run on the device (`tracking_pipeline.model_inputs`),
which keeps host->device traffic at one byte a pixel. All random draws come in a `PairDraws`
(`draw_pair`), so the arithmetic is testable for fixed draws.
Boxes are float64 on the host and float32 in the output (the released code computes in float32
torch tensors: the labels agree to ~1e-6). The normalised search box is not clipped to [0, 1]
(neither is the released `search_anno`; the loss clamps the GT when it converts to xyxy).
"""
from __future__ import annotations

import dataclasses
import math

import ml_collections
import numpy as np

from dropmae_jax.track import crop as crop_lib

BACKBONE_STRIDE = 16   # the released rejection rule down-samples the mask by the ViT's patch size
# OpenCV's RGB2GRAY for uint8 (4.x and later): Y = (9798 R + 19235 G + 3735 B + 2^14) >> 15,
# 0.299 / 0.587 / 0.114 in 15-bit fixed point (imgproc/src/color_rgb.simd.hpp, RY15/GY15/BY15).
_GRAY_WEIGHTS = (9798, 19235, 3735)
_GRAY_SHIFT = 15


@dataclasses.dataclass(frozen=True)
class BranchSettings:
  """One branch's crop recipe (DATA.TEMPLATE.* / DATA.SEARCH.*)."""
  output_size: int          # SIZE: side of the crop fed to the model (192 / 384)
  factor: float             # FACTOR: crop side = factor * sqrt(w'h') (2 / 5)
  center_jitter: float      # CENTER_JITTER (0 / 4.5)
  scale_jitter: float       # SCALE_JITTER (0 / 0.5)


@dataclasses.dataclass(frozen=True)
class ProcessingSettings:
  """Everything STARKProcessing needs; a frozen dataclass so it pickles into grain workers."""
  template: BranchSettings
  search: BranchSettings
  grayscale_prob: float = 0.05      # joint ToGrayscale probability
  joint_flip_prob: float = 0.5      # joint RandomHorizontalFlip probability
  brightness_jitter: float = 0.2    # ToTensorAndJitter(0.2); 0 = the val transform (factor 1)
  norm_flip_prob: float = 0.5       # RandomHorizontalFlip_Norm; 0 = the val transform

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, split: str) -> ProcessingSettings:
    """From the droptrack config: crop sizes from `config.model`, the rest from `config.data`.

    split 'val' uses the released val transform: same joint transform and jitter, no brightness
    jitter and no normalised-coordinate flip.
    """
    if split not in ("train", "val"):
      raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    data = config.data
    branches = {}
    for name, size in (("template", config.model.template_size),
                       ("search", config.model.search_size)):
      b = data[name]
      branches[name] = BranchSettings(output_size=int(size), factor=float(b.factor),
                                      center_jitter=float(b.center_jitter),
                                      scale_jitter=float(b.scale_jitter))
    train = split == "train"
    return cls(template=branches["template"], search=branches["search"],
               grayscale_prob=float(data.grayscale_prob),
               joint_flip_prob=float(data.get("flip_prob", 0.5)),
               brightness_jitter=float(data.get("brightness_jitter", 0.2)) if train else 0.0,
               norm_flip_prob=float(data.get("norm_flip_prob", 0.5)) if train else 0.0)


@dataclasses.dataclass(frozen=True)
class BranchDraws:
  """One branch's random numbers: jitter noise (torch.randn(2), torch.rand(2)), brightness, flip."""
  scale_noise: tuple[float, float]     # N(0, 1) for (w, h)
  centre_noise: tuple[float, float]    # U[0, 1) for (x, y)
  brightness: float                    # U[1 - j, 1 + j)
  norm_flip: bool                      # RandomHorizontalFlip_Norm fired


@dataclasses.dataclass(frozen=True)
class PairDraws:
  grayscale: bool                      # joint ToGrayscale fired (both frames)
  flip: bool                           # joint RandomHorizontalFlip fired (both frames)
  template: BranchDraws
  search: BranchDraws


def draw_pair(rng: np.random.Generator, settings: ProcessingSettings) -> PairDraws:
  """Every random number one pair needs, in a fixed order (joint first, then template, search)."""
  grayscale = bool(rng.random() < settings.grayscale_prob)
  flip = bool(rng.random() < settings.joint_flip_prob)

  def branch() -> BranchDraws:
    scale = rng.standard_normal(2)
    centre = rng.random(2)
    j = settings.brightness_jitter
    brightness = float(rng.uniform(max(0.0, 1.0 - j), 1.0 + j))
    norm_flip = bool(rng.random() < settings.norm_flip_prob)
    return BranchDraws((float(scale[0]), float(scale[1])), (float(centre[0]), float(centre[1])),
                       brightness, norm_flip)

  return PairDraws(grayscale, flip, branch(), branch())


def rgb_to_gray(image: np.ndarray) -> np.ndarray:
  """cv2.cvtColor(image, COLOR_RGB2GRAY) stacked to 3 channels: uint8 (H, W, 3) -> (H, W, 3)."""
  r, g, b = (image[..., c].astype(np.int32) for c in range(3))
  wr, wg, wb = _GRAY_WEIGHTS
  gray = (r * wr + g * wg + b * wb + (1 << (_GRAY_SHIFT - 1))) >> _GRAY_SHIFT
  gray = gray.astype(np.uint8)
  return np.stack([gray, gray, gray], axis=-1)


def flip_box(box: np.ndarray, width: int) -> np.ndarray:
  """RandomHorizontalFlip's box rule on a W-wide frame: x' = (W - 1) - (x + w); y, w, h kept."""
  box = np.asarray(box, np.float64)
  return np.array([(width - 1) - (box[0] + box[2]), box[1], box[2], box[3]])


def joint_transform(frame: np.ndarray, box: np.ndarray, grayscale: bool, flip: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
  """ToGrayscale then RandomHorizontalFlip on a raw frame (H, W, 3) and its box (x, y, w, h)."""
  box = np.asarray(box, np.float64)
  if grayscale:
    frame = rgb_to_gray(frame)
  if flip:
    box = flip_box(box, frame.shape[1])
    frame = frame[:, ::-1]    # a view: sample_target gathers only the taps it needs
  return frame, box


def jitter_box(box: np.ndarray, draws: BranchDraws, branch: BranchSettings) -> np.ndarray:
  """STARKProcessing._get_jittered_box: (x, y, w, h) -> the jittered crop centre box (4,)."""
  box = np.asarray(box, np.float64)
  size = box[2:] * np.exp(np.asarray(draws.scale_noise) * branch.scale_jitter)
  max_offset = math.sqrt(size[0] * size[1]) * branch.center_jitter
  centre = box[:2] + 0.5 * box[2:] + max_offset * (np.asarray(draws.centre_noise) - 0.5)
  return np.concatenate([centre - 0.5 * size, size])


def downsample_nearest(mask: np.ndarray, size: int) -> np.ndarray:
  """F.interpolate(mask[None, None].float(), size=size) (mode 'nearest') for a square (S, S) mask.

  PyTorch's legacy nearest: source index = min(floor(i * float32(S / size)), S - 1).
  """
  side = mask.shape[0]
  scale = np.float32(side) / np.float32(size)
  idx = np.minimum(np.floor(np.arange(size, dtype=np.float32) * scale).astype(np.int64), side - 1)
  return mask[np.ix_(idx, idx)]


def _process_branch(frame: np.ndarray, box: np.ndarray, draws: BranchDraws,
                    branch: BranchSettings) -> tuple[dict[str, np.ndarray] | None, str]:
  jittered = jitter_box(box, draws, branch)
  area = jittered[2] * jittered[3]
  # The released check (crop_sz < 1 -> invalid); a negative or NaN area raises in sample_target
  # (released: math.sqrt -> exception -> resample), which the sampler counts the same way.
  if area >= 0 and math.ceil(math.sqrt(area) * branch.factor) < 1:
    return None, "crop side < 1"
  patch, resize_factor, att = crop_lib.sample_target(frame, jittered, branch.factor,
                                                     branch.output_size)
  label = crop_lib.transform_box_to_crop(box, jittered, resize_factor, branch.output_size,
                                         normalize=True)
  if draws.norm_flip:
    patch = patch[:, ::-1]
    att = att[:, ::-1]
    label = np.array([1.0 - (label[0] + label[2]), label[1], label[2], label[3]])
  if att.all():
    return None, "crop is all padding"
  if downsample_nearest(att, branch.output_size // BACKBONE_STRIDE).all():
    return None, "crop is all padding at stride 16"
  return {"image": np.ascontiguousarray(patch), "box": label.astype(np.float32),
          "brightness": np.float32(draws.brightness)}, ""


def process_pair(template_frame: np.ndarray, template_box: np.ndarray, search_frame: np.ndarray,
                 search_box: np.ndarray, settings: ProcessingSettings, draws: PairDraws
                 ) -> tuple[dict[str, np.ndarray] | None, str]:
  """One sampled pair -> (item, '') or (None, why it was rejected).

  Args:
    template_frame, search_frame: uint8 (H, W, 3) raw RGB frames (may be the same array: COCO).
    template_box, search_box: (4,) GT (x, y, w, h) in pixels of their frames.
  Returns item: template uint8 (Hz, Hz, 3), search uint8 (Hx, Hx, 3), template_box /
    search_box float32 (4,) normalised (x, y, w, h) in the crop, template_brightness /
    search_brightness float32 (): the factors model_inputs applies.
  Raises ValueError for a frame that is not uint8 (H, W, 3) or a non-finite / negative-area box.
  """
  out: dict[str, np.ndarray] = {}
  t_frame, t_box = joint_transform(template_frame, template_box, draws.grayscale, draws.flip)
  if search_frame is template_frame:   # one image (COCO): convert and flip it once
    s_frame = t_frame
    s_box = flip_box(search_box, search_frame.shape[1]) if draws.flip else np.asarray(
        search_box, np.float64)
  else:
    s_frame, s_box = joint_transform(search_frame, search_box, draws.grayscale, draws.flip)
  for name, frame, box, branch_draws, branch in (
      ("template", t_frame, t_box, draws.template, settings.template),
      ("search", s_frame, s_box, draws.search, settings.search)):
    result, why = _process_branch(frame, box, branch_draws, branch)
    if result is None:
      return None, f"{name}: {why}"
    out[name] = result["image"]
    out[f"{name}_box"] = result["box"]
    out[f"{name}_brightness"] = result["brightness"]
  return out, ""
