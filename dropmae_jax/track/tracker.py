"""The released DropTrack / OSTrack online tracker, one jitted device call a frame.

`Tracker` follows `lib/test/tracker/ostrack.py` for one sequence: the template is cropped once from the
first frame (factor 2, never updated); each frame's search region is cropped at factor 5 around the
previous box, the score map is multiplied by a Hann window, the box is decoded at its argmax, mapped
back to the image and clipped with a 10-pixel margin. Crops run on the host (numpy, `crop.py`); the
network, the window and the box decoding are one jitted call.

`BatchedRunner` (beyond the released code) tracks many sequences at once: S slots advance in
lock-step, one jitted call per frame for all of them, and a finished sequence's slot takes the next
one. With several devices the slot axis is split over them (`jax.sharding`), so every device runs
S / n_devices sequences. Each sequence's boxes are exactly those `Tracker` gives it alone.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from typing import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dropmae_jax.data import images
from dropmae_jax.track import box_head
from dropmae_jax.track import ostrack
from dropmae_jax.track import crop


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




def template_input(image: np.ndarray, box: np.ndarray, settings: TrackerSettings) -> np.ndarray:
  """First frame and its box -> the normalised template (Hz, Wz, 3) float32."""
  patch, _, _ = crop.sample_target(image, box, settings.template_factor, settings.template_size)
  return crop.normalize(patch)


def search_input(image: np.ndarray, state: np.ndarray, settings: TrackerSettings
                 ) -> tuple[np.ndarray, float]:
  """Frame and previous box -> (normalised search crop (Hx, Wx, 3), resize_factor)."""
  patch, resize_factor, _ = crop.sample_target(image, state, settings.search_factor,
                                               settings.search_size)
  return crop.normalize(patch), resize_factor


def next_state(box_crop: np.ndarray, state: np.ndarray, resize_factor: float, image_hw: tuple[int, int],
               settings: TrackerSettings) -> np.ndarray:
  """Normalised (cx, cy, w, h) in the search crop -> the new state (x, y, w, h) in the image."""
  pixels = np.asarray(box_crop, np.float64) * settings.search_size / resize_factor
  box = crop.map_box_back(pixels, state, resize_factor, settings.search_size)
  return np.asarray(crop.clip_box(box, image_hw[0], image_hw[1], margin=settings.clip_margin),
                    np.float64)


def make_predict(model: ostrack.OSTrackCE) -> Callable:
  """jitted (variables, templates (B, Hz, Wz, 3), searches (B, Hx, Wx, 3)) ->
  (boxes (B, 4) normalised (cx, cy, w, h) at the argmax of the Hann-windowed score map, peak (B,))."""
  window = jnp.asarray(crop.hann2d(model.feat_x), jnp.float32)

  def predict(variables, templates, searches):
    out = model.apply(variables, templates, searches, train=False)
    response = out["score_map"] * window
    boxes = box_head.cal_bbox(response, out["size_map"], out["offset_map"])
    return boxes, response.reshape(response.shape[0], -1).max(axis=1)

  return jax.jit(predict)


class Tracker:
  """One sequence at a time: `initialize(frame, box)`, then `track(frame) -> box` per frame."""

  def __init__(self, model: ostrack.OSTrackCE, variables: dict, settings: TrackerSettings,
               predict: Callable | None = None):
    self.settings = settings
    self.variables = jax.device_put(variables)
    self._predict = predict or make_predict(model)
    self._template = None
    self.state = None

  def initialize(self, image: np.ndarray, box) -> None:
    box = np.asarray(box, np.float64)
    self._template = jnp.asarray(template_input(image, box, self.settings)[None])
    self.state = box

  def track(self, image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> the new box (x, y, w, h) float64 in image pixels."""
    if self._template is None:
      raise RuntimeError("Tracker.track called before initialize")
    search, resize_factor = search_input(image, self.state, self.settings)
    boxes, _ = self._predict(self.variables, self._template, jnp.asarray(search[None]))
    self.state = next_state(np.asarray(boxes)[0], self.state, resize_factor, image.shape[:2],
                            self.settings)
    return self.state


@dataclasses.dataclass
class SequenceResult:
  """Boxes (N, 4) xywh float64 (frame 0 = the given box) and seconds spent per frame (N,)."""
  sequence: object
  boxes: np.ndarray
  times: np.ndarray


@dataclasses.dataclass
class _Slot:
  sequence: object
  frame: int                 # index of the next frame to track
  state: np.ndarray
  boxes: list
  times: list


def _data_mesh(devices: list | None) -> jax.sharding.Mesh:
  devices = devices or jax.devices()
  return jax.sharding.Mesh(np.asarray(devices), ("data",))


class BatchedRunner:
  """Tracks many sequences in lock-step: one jitted call per frame for up to `slots` sequences.

  Frames for the next step are decoded by a thread pool while the device runs the current one;
  the search crops are cut on the same pool.
  `devices` (default: all) split the slot axis; `slots` is rounded up to a multiple of their count.
  The time recorded for a frame is its step's wall time divided by the sequences in that step.
  """

  def __init__(self, model: ostrack.OSTrackCE, variables: dict, settings: TrackerSettings, *,
               slots: int = 16, devices: list | None = None, read_threads: int = 8):
    self.settings = settings
    self.mesh = _data_mesh(devices)
    n_dev = self.mesh.devices.size
    self.slots = -(-max(1, slots) // n_dev) * n_dev
    self._batch_sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("data"))
    replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    self.variables = jax.device_put(variables, replicated)
    self._predict = make_predict(model)
    self._pool = concurrent.futures.ThreadPoolExecutor(read_threads)
    s = settings
    self._templates = np.zeros((self.slots, s.template_size, s.template_size, 3), np.float32)
    self._searches = np.zeros((self.slots, s.search_size, s.search_size, 3), np.float32)

  def close(self) -> None:
    self._pool.shutdown(wait=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def _start(self, sequence) -> tuple[_Slot | None, SequenceResult | None]:
    t0 = time.perf_counter()
    image = images.read_rgb(sequence.frames[0])
    box = np.asarray(sequence.ground_truth[0], np.float64)
    template = template_input(image, box, self.settings)
    slot = _Slot(sequence, 1, box, [box], [time.perf_counter() - t0])
    if len(sequence.frames) == 1:
      return None, SequenceResult(sequence, np.stack(slot.boxes), np.asarray(slot.times))
    return (slot, template), None

  def run(self, sequences: Iterable, on_frames: Callable[[int], None] | None = None
          ) -> Iterator[SequenceResult]:
    """Yields each sequence's result as soon as it finishes (not in input order)."""
    pending = iter(sequences)
    slots: list[_Slot | None] = [None] * self.slots
    templates_dev = None
    prefetched: dict[str, concurrent.futures.Future] = {}
    exhausted = False
    while True:
      # Fill free slots with new sequences (their templates change; upload once per refill).
      refilled = False
      for i in range(self.slots):
        while slots[i] is None and not exhausted:
          sequence = next(pending, None)
          if sequence is None:
            exhausted = True
            break
          started, done = self._start(sequence)
          if done is not None:
            yield done
            continue
          slots[i], self._templates[i] = started
          refilled = True
      active = [i for i in range(self.slots) if slots[i] is not None]
      if not active:
        return
      if refilled or templates_dev is None:
        templates_dev = jax.device_put(self._templates, self._batch_sharding)
      t0 = time.perf_counter()
      frame_images = {}
      for i in active:
        path = slots[i].sequence.frames[slots[i].frame]
        future = prefetched.pop(path, None) or self._pool.submit(images.read_rgb, path)
        frame_images[i] = future.result()
      # Crops on the pool too (numpy releases the GIL in its gathers and arithmetic).
      factors = {}
      crops = self._pool.map(lambda i: search_input(frame_images[i], slots[i].state, self.settings),
                             active)
      for i, (search, factor) in zip(active, crops):
        self._searches[i], factors[i] = search, factor
      boxes, _ = self._predict(self.variables, templates_dev,
                               jax.device_put(self._searches, self._batch_sharding))
      # The call above is dispatched asynchronously: decode the next frames while it runs.
      for i in active:
        frames = slots[i].sequence.frames
        if slots[i].frame + 1 < len(frames):
          prefetched[frames[slots[i].frame + 1]] = self._pool.submit(images.read_rgb,
                                                                     frames[slots[i].frame + 1])
      boxes = np.asarray(boxes)
      per_frame = (time.perf_counter() - t0) / len(active)
      for i in active:
        slot = slots[i]
        slot.state = next_state(boxes[i], slot.state, factors[i], frame_images[i].shape[:2], self.settings)
        slot.boxes.append(slot.state)
        slot.times.append(per_frame)
        slot.frame += 1
        if slot.frame == len(slot.sequence.frames):
          slots[i] = None
          yield SequenceResult(slot.sequence, np.stack(slot.boxes), np.asarray(slot.times))
      if on_frames is not None:
        on_frames(len(active))


def track_sequence(tracker: Tracker, sequence) -> SequenceResult:
  """The released per-sequence loop: frame 0's box is the given one; every later frame is tracked."""
  times = []
  t0 = time.perf_counter()
  tracker.initialize(images.read_rgb(sequence.frames[0]), sequence.ground_truth[0])
  boxes = [np.asarray(sequence.ground_truth[0], np.float64)]
  times.append(time.perf_counter() - t0)
  for path in sequence.frames[1:]:
    t0 = time.perf_counter()
    boxes.append(tracker.track(images.read_rgb(path)))
    times.append(time.perf_counter() - t0)
  return SequenceResult(sequence, np.stack(boxes), np.asarray(times))
