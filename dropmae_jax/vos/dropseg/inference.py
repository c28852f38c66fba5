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

Frame 0's own output is its given mask. Over a sequence (`segment_sequence`, `segment_video`)
every object of every frame in a fixed chunk of query frames is one row of one device call (the
last chunk padded with copies of its last frame, so one program serves a sequence), and the next
chunk's frames are decoded while the device works on the current one. Each row carries its own
memory frame and mask, so objects that first appear after frame 0 (YouTube-VOS) take that frame
and its annotation as their memory; before it they are absent (zeroed before the aggregation),
and on it the given annotation is written. Reading the datasets and writing results:
`vos/dropseg/segment.py`.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping, Sequence

import chex
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


def _segment_rows(model, variables, memory_frames, object_memory, masks, queries, present, *,
                  pads, out_size):
  """memory_frames uint8 (M, H, W, 3); object_memory int32 (K,) each object's memory frame;
  masks float32 (K, H, W); queries uint8 (C, H, W, 3); present float32 (C, K).
  Returns (argmax int32 (C, h, w), probabilities float32 (C, K + 1, h, w))."""
  c, k = present.shape
  top, bottom, left, right = pads
  spatial = ((top, bottom), (left, right))
  memory = jnp.pad(normalize(memory_frames), ((0, 0),) + spatial + ((0, 0),))[object_memory]
  masks = jnp.pad(masks, ((0, 0),) + spatial)
  query = jnp.pad(normalize(queries), ((0, 0),) + spatial + ((0, 0),))
  hp, wp = masks.shape[1:]
  # rows c·K + k: query frame c with object k's memory (the model's object axis is 1 here)
  logits = model.apply(variables, jnp.tile(memory, (c, 1, 1, 1)),
                       jnp.tile(masks, (c, 1, 1))[:, None], jnp.repeat(query, k, axis=0))
  logits = logits.reshape(c, k, hp, wp)
  prob = jax.nn.softmax(model_lib.soft_aggregate(jax.nn.sigmoid(logits), axis=1,
                                                 selector=present[:, :, None, None]), axis=1)
  prob = unpad(prob, pads, axes=(2, 3))
  prob = jax.vmap(lambda p: resize_bilinear(p, out_size))(prob)
  return jnp.argmax(prob, axis=1), prob


@functools.lru_cache(maxsize=16)
def _program(model: model_lib.DropSeg):
  """(the jitted `_segment_rows` of `model`, its trace counter), shared by every segmenter of an
  equal model (a command building several segmenters compiles once per shape)."""
  counter = {"traces": 0}

  def run(variables, *arrays, pads, out_size):
    counter["traces"] += 1
    return _segment_rows(model, variables, *arrays, pads=pads, out_size=out_size)

  return jax.jit(run, static_argnames=("pads", "out_size")), counter


class OneShotSegmenter:
  """Segments query frames from memory frames and their object masks (module docstring).

    segmenter = OneShotSegmenter(model, variables, chunk=4)
    result = segmenter.segment(frame0, mask0, frame_t)   # uint8 (H, W, 3), ids (H, W), uint8

  Every (query frame, object) pair is one row of the model's batch, with its own memory frame and
  mask; the K objects of a frame are aggregated together. One compiled program per (frame size,
  memory frames, objects, query frames per call, output size); `traces` counts the compilations.
  `chunk` is how many query frames `segment_video` puts in one call.
  """

  def __init__(self, model: model_lib.DropSeg, variables: dict, chunk: int = 1):
    if chunk < 1:
      raise ValueError(f"chunk must be >= 1 query frames per call, got {chunk}")
    self.model = model
    self.chunk = int(chunk)
    self.variables = jax.device_put(
        {c: variables[c] for c in ("params", model_lib.FROZEN)})
    self._run, self._counter = _program(model)

  @property
  def traces(self) -> int:
    """Compilations of this model's program so far (shared by segmenters of equal models)."""
    return self._counter["traces"]

  def dispatch(self, memory_frames: np.ndarray, object_memory: np.ndarray, masks: np.ndarray,
               queries: np.ndarray, present: np.ndarray, out_size: tuple[int, int]):
    """Starts one device call (asynchronously; see `_segment_rows` for the shapes); returns the
    device arrays (argmax, probabilities)."""
    h, w = masks.shape[1:]
    chex.assert_shape([memory_frames, queries], (None, h, w, 3))
    chex.assert_shape(present, (queries.shape[0], masks.shape[0]))
    pads = pad_amounts(h, w, self.model.patch_size)
    return self._run(self.variables, memory_frames, np.asarray(object_memory, np.int32),
                     np.asarray(masks, np.float32), queries, np.asarray(present, np.float32),
                     pads=pads, out_size=tuple(int(s) for s in out_size))

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
    masks = first_mask[None] == ids[:, None, None]                            # (K, H, W)
    index, prob = self.dispatch(first_frame[None], np.zeros(len(ids)), masks, frame[None],
                                np.ones((1, len(ids))), out_size)
    lookup = np.concatenate([[0], ids]).astype(first_mask.dtype)
    return Segmentation(lookup[np.asarray(index)[0]], np.asarray(prob)[0], ids)


def default_chunk() -> int:
  """Query frames per device call when none is asked for: 1 on the CPU (measured there: larger
  chunks were ~15% slower on 2 busy cores at 432x240; the CPU is compute-bound either way), 4 on
  accelerators (fuller batches; not measured here)."""
  return 1 if jax.default_backend() == "cpu" else 4


def resize_nearest(ids: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
  """(H, W) -> (h, w) taking source pixel floor(i·H/h) (the identity when the sizes agree)."""
  h, w = ids.shape
  rows = (np.arange(out_size[0]) * h // out_size[0])[:, None]
  cols = (np.arange(out_size[1]) * w // out_size[1])[None, :]
  return ids[rows, cols]


def _object_starts(annotations: Mapping[int, np.ndarray]) -> dict[int, int]:
  """{object id: the first annotated frame holding it}."""
  starts: dict[int, int] = {}
  for t in sorted(annotations):
    for i in np.unique(annotations[t]):
      if i and int(i) not in starts:
        starts[int(i)] = t
  return starts


def segment_video(segmenter: OneShotSegmenter, frames: Sequence[np.ndarray],
                  annotations: Mapping[int, np.ndarray], out_size: tuple[int, int] | None = None,
                  ) -> Iterator[tuple[int, np.ndarray]]:
  """Yields (t, uint8 (h, w) object ids) for t = 0 .. T-1, in order.

  Args:
    segmenter: the model, its variables and `chunk` (query frames per device call).
    frames: T frames, uint8 RGB (H, W, 3) each; indexed lazily (a reader may decode on access:
      a chunk's frames are read while the device runs the previous chunk).
    annotations: {t: (H, W) ids} the given masks (DAVIS: {0: frame 0's}). Each object's memory is
      the first annotated frame holding it and its mask there; it is absent before that frame
      and its annotation is written on it (over the other objects' prediction).
    out_size: (h, w) of the results (default (H, W)); annotations are resized nearest.
  """
  t_total = len(frames)
  first_t = min(annotations)
  h, w = np.asarray(annotations[first_t]).shape
  out_size = (h, w) if out_size is None else tuple(int(s) for s in out_size)
  starts = _object_starts(annotations)
  ids = np.array(sorted(starts), np.int64)
  memory_ts = sorted(set(starts.values()))
  memory_frames = np.stack([np.asarray(frames[t]) for t in memory_ts]) if ids.size else None
  object_memory = np.array([memory_ts.index(starts[i]) for i in ids], np.int32)
  masks = np.stack([np.asarray(annotations[starts[i]]) == i for i in ids]) if ids.size else None
  begin = np.array([starts[i] for i in ids])
  lookup = np.concatenate([[0], ids]).astype(np.uint8)
  todo = [t for t in range(t_total) if ids.size and t > begin.min()]
  chunk = segmenter.chunk

  def read(t: int) -> np.ndarray:
    frame = np.asarray(frames[t])
    if frame.shape != (h, w, 3):
      raise ValueError(f"frame {t} is {frame.shape}, expected ({h}, {w}, 3) as the annotations")
    return frame

  def finish(t: int, predicted: np.ndarray | None) -> np.ndarray:
    labels = np.zeros(out_size, np.uint8) if predicted is None else predicted
    if t in annotations:
      given = resize_nearest(np.asarray(annotations[t]), out_size)
      for i in ids[begin == t]:
        labels[given == i] = i
    return labels

  done: dict[int, np.ndarray] = {}
  next_t = 0

  def ready() -> Iterator[tuple[int, np.ndarray]]:
    nonlocal next_t
    while next_t < t_total and (next_t in done or next_t not in todo_set):
      yield next_t, finish(next_t, done.pop(next_t, None))
      next_t += 1

  todo_set = set(todo)
  pending = None
  for i in range(0, len(todo), chunk):
    part = todo[i:i + chunk]
    padded = part + [part[-1]] * (chunk - len(part))   # one program for every chunk
    queries = np.stack([read(t) for t in padded])      # decoded while the device works
    present = begin[None, :] < np.array(padded)[:, None]
    handle = segmenter.dispatch(memory_frames, object_memory, masks, queries, present, out_size)
    if pending is not None:
      done.update(zip(pending[0], lookup[np.asarray(pending[1][0])]))
      yield from ready()
    pending = (part, handle)
  if pending is not None:
    done.update(zip(pending[0], lookup[np.asarray(pending[1][0])]))
  yield from ready()


def segment_sequence(segmenter: OneShotSegmenter, frames: np.ndarray, first_ids: np.ndarray,
                     out_size: tuple[int, int] | None = None) -> np.ndarray:
  """A whole sequence, one-shot from frame 0: uint8 (T, h, w) object ids.

  Args:
    segmenter: the model and its variables (and `chunk`, query frames per device call).
    frames: uint8 (T, H, W, 3) RGB, T >= 1.
    first_ids: (H, W) frame 0's object ids (0 = background); frame 0's result is this mask
      (resized nearest when out_size differs), as the released scripts write it.
    out_size: (h, w) of the results (default (H, W)).
  """
  frames = np.asarray(frames)
  return np.stack([labels for _, labels in
                   segment_video(segmenter, frames, {0: np.asarray(first_ids)}, out_size)])
