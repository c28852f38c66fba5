"""The released DropTrack / OSTrack online tracker, one jitted device call a frame.

`Tracker` follows `lib/test/tracker/ostrack.py` for one sequence: the template is cropped once from
the first frame (factor 2, never updated); each frame's search region is cropped at factor 5 around
the previous box, the score map is multiplied by a Hann window, the box is decoded at its argmax,
mapped back to the image and clipped with a 10-pixel margin.

What runs where, per frame:
  host    the crop window of the previous box (`device_crop.crop_spec`: the released float64
          corner arithmetic and a cached tap table, a few microseconds) and, once the box is back,
          map-back and clipping in float64 Python as released (the next window's corners round
          that state, so it is kept in the released precision);
  device  one jitted call (`make_step`): the uint8 frame in, the crop (bit for bit cv2's), the
          normalisation, the network, the Hann window and the box decoding; four floats out.
Only the frame (and the 12 KB window spec) goes up, and only the box comes down.

`runner.BatchedRunner` tracks many sequences at once with exactly these boxes.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dropmae_jax.data import images
from dropmae_jax.track import box_head
from dropmae_jax.track import crop
from dropmae_jax.track import device_crop
from dropmae_jax.track import ostrack


@dataclasses.dataclass(frozen=True)
class TrackerSettings:
  """The test-time knobs (OSTrack's TEST.* and the tracker's constants)."""
  template_size: int = 192
  search_size: int = 384
  template_factor: float = 2.0
  search_factor: float = 5.0
  clip_margin: int = 10

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "TrackerSettings":
    return cls(template_size=config.model.template_size, search_size=config.model.search_size,
               template_factor=config.tracker.template_factor,
               search_factor=config.tracker.search_factor,
               clip_margin=config.tracker.clip_margin)


def next_state(box_crop: np.ndarray, state: np.ndarray, resize_factor: float, image_hw: tuple[int, int],
               settings: TrackerSettings) -> np.ndarray:
  """Normalised (cx, cy, w, h) in the search crop -> the new state (x, y, w, h) in the image.

  The released arithmetic: the float32 head output read as Python floats, scaled by
  search_size / resize_factor, `map_box_back`, `clip_box(margin=10)`, all in float64.
  """
  scale = settings.search_size / resize_factor
  pixels = [float(v) * scale for v in box_crop]
  box = crop.map_box_back(pixels, state, resize_factor, settings.search_size)
  return np.asarray(crop.clip_box(box, image_hw[0], image_hw[1], margin=settings.clip_margin),
                    np.float64)


def _hann_window(model: ostrack.OSTrackCE) -> jax.Array:
  return jnp.asarray(crop.hann2d(model.feat_x), jnp.float32)


def _decode_boxes(out: dict, window: jax.Array) -> tuple[jax.Array, jax.Array]:
  response = out["score_map"] * window
  boxes = box_head.cal_bbox(response, out["size_map"], out["offset_map"])
  return boxes, response.reshape(response.shape[0], -1).max(axis=1)


def make_predict(model: ostrack.OSTrackCE) -> Callable:
  """jitted (variables, templates (B, Hz, Wz, 3), searches (B, Hx, Wx, 3)) ->
  (boxes (B, 4) normalised (cx, cy, w, h) at the argmax of the Hann-windowed score map, peak (B,)).
  The network alone on crops already on the device: the benchmarks' model-only baseline."""
  window = _hann_window(model)

  def predict(variables, templates, searches):
    return _decode_boxes(model.apply(variables, templates, searches, train=False), window)

  return jax.jit(predict)


def make_step(model: ostrack.OSTrackCE, settings: TrackerSettings,
              batch_sharding: jax.sharding.NamedSharding | None = None) -> Callable:
  """The tracking step, jitted: (variables, templates (B, Hz, Wz, 3) float32, frames (B, H, W, 3)
  uint8, specs (B, spec_length(search_size)) int32) -> (boxes (B, 4) normalised (cx, cy, w, h)
  in the search crop, peak (B,)). Crop, normalisation, network, Hann window and box decoding.
  With `batch_sharding` the batch axis is split over its mesh (variables replicated), and host
  arrays passed in are sharded on the way up."""
  window = _hann_window(model)
  size = settings.search_size

  def step(variables, templates, frames, specs):
    searches = device_crop.normalize(device_crop.crop_frames(frames, specs, size))
    return _decode_boxes(model.apply(variables, templates, searches, train=False), window)

  if batch_sharding is None:
    return jax.jit(step)
  replicated = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
  return jax.jit(step, in_shardings=(replicated, batch_sharding, batch_sharding, batch_sharding),
                 out_shardings=batch_sharding)


def make_template(settings: TrackerSettings) -> Callable:
  """jitted (frames (B, H, W, 3) uint8, specs (B, spec_length(template_size))) -> normalised
  templates (B, Hz, Wz, 3) float32."""
  size = settings.template_size
  return jax.jit(lambda frames, specs: device_crop.normalize(
      device_crop.crop_frames(frames, specs, size)))


def _check_frame(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError(f"the tracker wants uint8 (H, W, 3) RGB frames, got {image.dtype} "
                     f"{image.shape}")
  return image


class Tracker:
  """One sequence at a time: `initialize(frame, box)`, then `track(frame) -> box` per frame."""

  def __init__(self, model: ostrack.OSTrackCE, variables: dict, settings: TrackerSettings,
               step: Callable | None = None):
    self.settings = settings
    self.variables = jax.device_put(variables)
    self._step = step or make_step(model, settings)
    self._template_fn = make_template(settings)
    self._template = None
    self._spec = np.empty((1, device_crop.spec_length(settings.search_size)), np.int32)
    self.state = None

  def initialize(self, image: np.ndarray, box) -> None:
    image = _check_frame(image)
    box = np.asarray(box, np.float64)
    spec, _ = device_crop.make_spec(box, self.settings.template_factor,
                                    self.settings.template_size, image.shape[:2])
    self._template = self._template_fn(image[None], spec[None])
    self.state = box

  def track(self, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> the new box (x, y, w, h) float64 in image pixels."""
    if self._template is None:
      raise RuntimeError("Tracker.track called before initialize")
    image = _check_frame(image)
    s = self.settings
    spec = np.empty_like(self._spec)   # a fresh array: the last one may still be on its way up
    factor = device_crop.crop_spec(self.state, s.search_factor, s.search_size, image.shape[:2],
                                   spec[0])
    boxes, _ = self._step(self.variables, self._template, image[None], spec)
    self.state = next_state(np.asarray(boxes)[0], self.state, factor, image.shape[:2], s)
    return self.state


@dataclasses.dataclass
class SequenceResult:
  """Boxes (N, 4) xywh float64 (frame 0 = the given box) and seconds spent per frame (N,)."""
  sequence: object
  boxes: np.ndarray
  times: np.ndarray


def track_sequence(tracker: Tracker, sequence, decoder: images.DecodePool | None = None
                   ) -> SequenceResult:
  """The released per-sequence loop: frame 0's box is the given one; every later frame is tracked.
  Frames are decoded ahead on `decoder` (default: a pool for this call)."""
  own = decoder is None
  decoder = decoder or images.DecodePool()
  try:
    frames = decoder.read_ahead(sequence.frames)
    times = []
    t0 = time.perf_counter()
    tracker.initialize(next(frames), sequence.ground_truth[0])
    boxes = [np.asarray(sequence.ground_truth[0], np.float64)]
    times.append(time.perf_counter() - t0)
    for image in frames:
      t0 = time.perf_counter()
      boxes.append(tracker.track(image))
      times.append(time.perf_counter() - t0)
  finally:
    if own:
      decoder.close()
  return SequenceResult(sequence, np.stack(boxes), np.asarray(times))
