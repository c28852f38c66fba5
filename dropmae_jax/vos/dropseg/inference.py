"""One-shot DropSeg inference: a later frame segmented from frame 0 and its object masks.

As jimmy-dq/DropSeg `submit_eval_davis17.py` with `inference_core.py` (`InferenceCore_ViT`): the
first frame and its ground-truth masks are the only memory (no memory update). For a frame t:

  1. ImageNet-normalise both frames; one binary mask per object id present in frame 0's mask.
  2. Pad frames and masks to multiples of 16 with zeros, centred, the smaller half top / left
     (`pad_divide_by` in `util/tensor_util.py`); the model re-interpolates its position table to
     the padded grid.
  3. Per-object logits for all K objects in one device call (the released code runs one forward
     per object), sigmoid, soft aggregation with the background, softmax.
  4. Unpad, resize bilinearly (align_corners=False) to the output size, argmax over
     {background, objects}.

Frame 0's own output is its given mask. Reading DAVIS / YouTube-VOS, writing palette PNGs and the
`vos segment` command are not here yet (docs/segmentation.md).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from dropmae_jax.data import images
from dropmae_jax.vos.dropseg import model as model_lib

PAD_MULTIPLE = 16   # pad_divide_by(images, 16)


def pad_amounts(height: int, width: int, multiple: int = PAD_MULTIPLE
                ) -> tuple[int, int, int, int]:
  """(top, bottom, left, right) zero padding to multiples of `multiple`, centred with the
  smaller half top / left (`pad_divide_by`: int((new - old) / 2) before, the rest after)."""
  def split(side):
    extra = (-side) % multiple
    return extra // 2, extra - extra // 2
  return split(height) + split(width)


def pad_to_multiple(array: np.ndarray, multiple: int = PAD_MULTIPLE, axes: tuple[int, int] = (0, 1)
                    ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
  """Zero-pad the (height, width) `axes` of `array` to multiples of `multiple` (`pad_amounts`).
  Returns (padded, (top, bottom, left, right))."""
  h_axis, w_axis = (a % array.ndim for a in axes)
  pads = pad_amounts(array.shape[h_axis], array.shape[w_axis], multiple)
  widths = [(0, 0)] * array.ndim
  widths[h_axis], widths[w_axis] = pads[:2], pads[2:]
  return np.pad(array, widths), pads


def unpad(array, pads: tuple[int, int, int, int], axes: tuple[int, int] = (0, 1)):
  """Undo `pad_to_multiple` on the (height, width) `axes` (numpy or jax arrays)."""
  top, bottom, left, right = pads
  h_axis, w_axis = (a % array.ndim for a in axes)
  index = [slice(None)] * array.ndim
  index[h_axis] = slice(top, array.shape[h_axis] - bottom)
  index[w_axis] = slice(left, array.shape[w_axis] - right)
  return array[tuple(index)]


def normalize(frame: jax.Array) -> jax.Array:
  """uint8 RGB (..., H, W, 3) -> float32 as torchvision's ToTensor + Normalize(ImageNet)."""
  x = frame.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(images.IMAGENET_MEAN, jnp.float32)) / jnp.asarray(images.IMAGENET_STD,
                                                                            jnp.float32)


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """(C, H, W) -> (C, h, w): F.interpolate(mode='bilinear', align_corners=False), no
  antialiasing when shrinking (as torch)."""
  if tuple(x.shape[1:]) == tuple(size):
    return x
  return jax.image.resize(x, (x.shape[0],) + tuple(size), "linear", antialias=False)


@dataclasses.dataclass
class Segmentation:
  """One frame's result.

  labels: (h, w) the object ids of frame 0's mask (0 = background) at the output size.
  probabilities: (K + 1, h, w) float32 over {background, objects in `ids` order}.
  ids: (K,) the object ids, ascending (DAVIS: 1..K).
  """
  labels: np.ndarray
  probabilities: np.ndarray
  ids: np.ndarray


class OneShotSegmenter:
  """Segments frames of a sequence from its first frame and first mask (module docstring).

    segmenter = OneShotSegmenter(model, variables)
    result = segmenter.segment(frame0, mask0, frame_t)   # uint8 (H, W, 3), ids (H, W), uint8

  One compiled program per (frame size, number of objects, output size); `traces` counts the
  compilations (tests check that the K objects share one call).
  """

  def __init__(self, model: model_lib.DropSeg, variables: dict):
    self.model = model
    self.variables = jax.device_put(
        {c: variables[c] for c in ("params", model_lib.FROZEN)})
    self.traces = 0
    self._run = jax.jit(self._segment, static_argnames=("pads", "out_size"))

  def _segment(self, variables, first_frame, masks, frame, *, pads, out_size):
    self.traces += 1
    top, bottom, left, right = pads
    spatial = ((top, bottom), (left, right))
    first = jnp.pad(normalize(first_frame), spatial + ((0, 0),))
    query = jnp.pad(normalize(frame), spatial + ((0, 0),))
    masks = jnp.pad(masks, ((0, 0),) + spatial)
    logits = self.model.apply(variables, first[None], masks[None], query[None])[0]   # (K, Hp, Wp)
    prob = model_lib.aggregate_probabilities(logits, axis=0)                           # (K+1, ..)
    prob = resize_bilinear(unpad(prob, pads, axes=(1, 2)), out_size)
    return jnp.argmax(prob, axis=0), prob

  def segment(self, first_frame: np.ndarray, first_mask: np.ndarray, frame: np.ndarray,
              out_size: tuple[int, int] | None = None) -> Segmentation:
    """Segment `frame` from `first_frame` and its mask.

    Args:
      first_frame, frame: uint8 RGB (H, W, 3), the same size.
      first_mask: (H, W) integer object ids, 0 = background (a DAVIS annotation).
      out_size: (h, w) of the result (default (H, W); released: the 480p size).
    """
    first_frame, frame = np.asarray(first_frame), np.asarray(frame)
    first_mask = np.asarray(first_mask)
    h, w = first_mask.shape
    if first_frame.shape != (h, w, 3) or frame.shape != (h, w, 3):
      raise ValueError(f"frames {first_frame.shape} and {frame.shape} must be (H, W, 3) of the "
                       f"mask's size {first_mask.shape}")
    out_size = (h, w) if out_size is None else tuple(int(s) for s in out_size)
    ids = np.unique(first_mask)
    ids = ids[ids != 0]
    if ids.size == 0:   # nothing to carry: all background, no device call
      return Segmentation(np.zeros(out_size, first_mask.dtype),
                          np.ones((1,) + out_size, np.float32), ids)
    masks = (first_mask[None] == ids[:, None, None]).astype(np.float32)       # (K, H, W)
    pads = pad_amounts(h, w, self.model.patch_size)
    index, prob = self._run(self.variables, first_frame, masks, frame, pads=pads,
                            out_size=out_size)
    lookup = np.concatenate([[0], ids]).astype(first_mask.dtype)
    return Segmentation(lookup[np.asarray(index)], np.asarray(prob), ids)


def segment_sequence(segmenter: OneShotSegmenter, frames: np.ndarray, first_ids: np.ndarray,
                     out_size: tuple[int, int] | None = None) -> np.ndarray:
  """A whole sequence, one-shot from frame 0: uint8 (T, h, w) object ids.

  Args:
    segmenter: the model and its variables.
    frames: uint8 (T, H, W, 3) RGB, T >= 1.
    first_ids: (H, W) frame 0's object ids (0 = background); frame 0's result is this mask
      (resized nearest when out_size differs), as the released scripts write it.
    out_size: (h, w) of the results (default (H, W)).
  """
  frames = np.asarray(frames)
  first_ids = np.asarray(first_ids)
  h, w = first_ids.shape
  out_size = (h, w) if out_size is None else tuple(int(s) for s in out_size)
  result = np.zeros((len(frames),) + out_size, np.uint8)
  rows = (np.arange(out_size[0]) * h // out_size[0])[:, None]
  cols = (np.arange(out_size[1]) * w // out_size[1])[None, :]
  result[0] = first_ids[rows, cols]
  for t in range(1, len(frames)):
    result[t] = segmenter.segment(frames[0], first_ids, frames[t], out_size).labels
  return result
