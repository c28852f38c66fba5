"""Many sequences at once: S slots in lock-step, one jitted device call a frame for all of them.

`BatchedRunner` (beyond the released code) tracks many sequences at once: S slots advance in
lock-step, one jitted call per frame for all of them, and a finished sequence's slot takes the next
one. Which frame every slot shows at every step follows from the sequence lengths alone, so frames
are decoded on a thread pool (one thread per core) steps ahead of the device, and each step's
frames are uploaded while the device runs the step before. Frames of different sizes in one step
are zero-padded to a common bucket (the largest, rounded up to 64 pixels). With several devices
the slot axis is split over them (`jax.sharding`). Each sequence's boxes are exactly those
`Tracker` gives it alone.
"""
from __future__ import annotations

import collections
import dataclasses
import time
from typing import Callable, Iterable, Iterator

import jax
import numpy as np

from dropmae_jax.data import images
from dropmae_jax.track import device_crop
from dropmae_jax.track import ostrack
from dropmae_jax.track.tracker import SequenceResult, TrackerSettings
from dropmae_jax.track.tracker import make_step, make_template, next_state


BUCKET = 64   # mixed frame sizes in one batched step are padded up to a multiple of this


@dataclasses.dataclass
class RunnerStats:
  """Where a BatchedRunner's time went, in seconds summed over its runs.

  CPU time of the threads doing the work (`time.thread_time`: a busy machine's scheduling is not
  counted as work):
    decode    the pool threads decoding frames;
    host      the main thread's own work excluding decode and the step's launch: crop specs,
              batch assembly and uploads, templates, map-back, bookkeeping (and whatever the
              consumer of `run` does between results);
    dispatch  the main thread inside the jitted step call (its launch; the model-only numbers
              pay it too).
  Wall time: wait_decode (the main thread waiting for a frame still being decoded), wait_device
  (waiting for the boxes), wall (the runs, start to end).
  """
  frames: int = 0
  steps: int = 0
  decode: float = 0.0
  host: float = 0.0
  dispatch: float = 0.0
  wait_decode: float = 0.0
  wait_device: float = 0.0
  wall: float = 0.0


@dataclasses.dataclass
class _Job:
  sequence: object
  boxes: list
  times: list
  state: np.ndarray | None = None


@dataclasses.dataclass
class _Step:
  """One lock-step call: entries[slot] = (job, frame index) or None; starts: slots whose job
  begins here (template from frame 0); singles: one-frame sequences met while filling the slots."""
  entries: list
  starts: list
  singles: list
  futures: dict = dataclasses.field(default_factory=dict)   # (slot, frame index) -> Future
  upload: object = None


class _Schedule:
  """Which frame each slot shows at each step: a function of the sequence lengths alone."""

  def __init__(self, sequences: Iterable, slots: int):
    self._pending = iter(sequences)
    self._current: list[tuple[_Job, int] | None] = [None] * slots

  def next_step(self) -> _Step | None:
    starts, singles = [], []
    for i, cur in enumerate(self._current):
      if cur is not None and cur[1] < len(cur[0].sequence.frames):
        continue
      self._current[i] = None
      for sequence in self._pending:
        job = _Job(sequence, [np.asarray(sequence.ground_truth[0], np.float64)], [])
        if len(sequence.frames) == 1:
          singles.append(job)
          continue
        self._current[i] = (job, 1)
        starts.append(i)
        break
    entries = list(self._current)
    if not any(entries) and not singles:
      return None
    self._current = [None if c is None else (c[0], c[1] + 1) for c in self._current]
    return _Step(entries, starts, singles)


def _bucket(shapes: list[tuple[int, int]]) -> tuple[int, int]:
  if len(set(shapes)) == 1:
    return shapes[0]
  height = max(h for h, _ in shapes)
  width = max(w for _, w in shapes)
  return -(-height // BUCKET) * BUCKET, -(-width // BUCKET) * BUCKET


def _data_mesh(devices: list | None) -> jax.sharding.Mesh:
  devices = devices or jax.devices()
  return jax.sharding.Mesh(np.asarray(devices), ("data",))


class BatchedRunner:
  """Tracks many sequences in lock-step: one jitted call per frame for up to `slots` sequences.

  Frames are decoded `ahead` steps in advance on a pool of `decode_threads` threads (default: one
  per core); on an accelerator (`upload_ahead`, default: any device not a CPU) each step's frames
  go up while the device runs the previous step, on a CPU with the call.
  `devices` (default: all) split the slot axis; `slots` is rounded up to a multiple of their count.
  The time recorded for a frame is its step's wall time divided by the sequences in that step;
  `stats` adds up where the time went.
  """

  def __init__(self, model: ostrack.OSTrackCE, variables: dict, settings: TrackerSettings, *,
               slots: int = 16, devices: list | None = None, decode_threads: int | None = None,
               ahead: int = 2, upload_ahead: bool | None = None):
    self.settings = settings
    self.mesh = _data_mesh(devices)
    n_dev = self.mesh.devices.size
    self.slots = -(-max(1, slots) // n_dev) * n_dev
    self.ahead = max(1, ahead)
    self._sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("data"))
    replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    self.variables = jax.device_put(variables, replicated)
    self._step = make_step(model, settings, self._sharding)
    s = settings
    template_fn = make_template(settings)

    def put_template(templates, frame, spec, slot):
      return templates.at[slot].set(template_fn(frame[None], spec[None])[0])

    self._put_template = jax.jit(put_template, donate_argnums=0, out_shardings=self._sharding)
    self._templates = jax.device_put(
        np.zeros((self.slots, s.template_size, s.template_size, 3), np.float32), self._sharding)
    self._decoder = images.DecodePool(decode_threads)
    # An accelerator copies the next step's frames up while it runs this one. On a CPU "device"
    # the copy would queue behind the running step; the frames go with the call instead.
    self._upload_ahead = (any(d.platform != "cpu" for d in self.mesh.devices.flat)
                          if upload_ahead is None else upload_ahead)
    self._buffers: dict[tuple[int, int], list[np.ndarray]] = {}
    self.stats = RunnerStats()

  def close(self) -> None:
    self._decoder.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  # --------------------------------------------------------------------------- pipeline stages

  def _submit(self, step: _Step) -> None:
    """Starts decoding every frame `step` needs."""
    for slot, entry in enumerate(step.entries):
      if entry is not None:
        job, t = entry
        step.futures[(slot, t)] = self._decoder.submit(job.sequence.frames[t])
        if slot in step.starts:
          step.futures[(slot, 0)] = self._decoder.submit(job.sequence.frames[0])
    for job in step.singles:
      step.futures[("single", id(job))] = self._decoder.submit(job.sequence.frames[0])

  def _frame(self, step: _Step, key) -> np.ndarray:
    future = step.futures.pop(key)
    start = time.perf_counter()
    image, seconds = future.result()
    self.stats.wait_decode += time.perf_counter() - start
    self.stats.decode += seconds
    return image

  def _batch_buffer(self, shape: tuple[int, int]) -> np.ndarray:
    """Host buffers for stacked frames, three per shape used in turn: one being filled, one
    whose step is on the device, one whose step has finished."""
    if shape not in self._buffers and len(self._buffers) >= 8:
      self._buffers.clear()   # many bucket shapes in turn: keep the memory bounded
    ring = self._buffers.setdefault(shape, [])
    if len(ring) < 3:
      ring.append(np.zeros((self.slots, *shape, 3), np.uint8))
      return ring[-1]
    ring.append(ring.pop(0))
    return ring[-1]

  def _upload(self, step: _Step) -> None:
    """Waits for the step's frames, stacks them (padding mixed sizes) and, on an accelerator,
    starts their upload."""
    try:
      frames = {slot: self._frame(step, (slot, t))
                for slot, (job, t) in ((i, e) for i, e in enumerate(step.entries) if e)}
    except images.ImageReadError as e:   # raised when the step is run, after earlier results
      step.upload = e
      return
    if not frames:
      return
    shapes = {slot: f.shape[:2] for slot, f in frames.items()}
    if self.slots == 1:
      batch = frames[0][None]
    else:
      batch = self._batch_buffer(_bucket(list(shapes.values())))
      for slot, frame in frames.items():
        batch[slot, :frame.shape[0], :frame.shape[1]] = frame
    if self._upload_ahead:
      batch = jax.device_put(batch, self._sharding)
    step.upload = (batch, shapes)

  def _start_job(self, step: _Step, slot: int) -> None:
    job = step.entries[slot][0]
    frame = self._frame(step, (slot, 0))
    s = self.settings
    spec, _ = device_crop.make_spec(job.boxes[0], s.template_factor, s.template_size,
                                    frame.shape[:2])
    self._templates = self._put_template(self._templates, frame, spec, slot)
    job.state = job.boxes[0]

  # --------------------------------------------------------------------------- the loop

  def run(self, sequences: Iterable, on_frames: Callable[[int], None] | None = None
          ) -> Iterator[SequenceResult]:
    """Yields each sequence's result as soon as it finishes (not in input order)."""
    s, stats = self.settings, self.stats
    schedule = _Schedule(sequences, self.slots)
    window: collections.deque[_Step] = collections.deque()

    def top_up():
      while len(window) <= self.ahead:
        step = schedule.next_step()
        if step is None:
          return
        self._submit(step)
        window.append(step)

    run_start = last = time.perf_counter()
    cpu_start, dispatched = time.thread_time(), stats.dispatch
    top_up()
    if window:
      self._upload(window[0])
    while window:
      step = window.popleft()
      for job in step.singles:                # one frame: the given box is the whole result
        self._frame(step, ("single", id(job)))
        job.times.append(time.perf_counter() - last)
        yield SequenceResult(job.sequence, np.stack(job.boxes), np.asarray(job.times))
      active = [i for i, e in enumerate(step.entries) if e is not None]
      if not active:
        continue
      if isinstance(step.upload, Exception):
        raise step.upload
      frames_dev, shapes = step.upload
      for slot in step.starts:
        self._start_job(step, slot)
      specs = np.zeros((self.slots, device_crop.spec_length(s.search_size)), np.int32)
      factors = {}
      for slot in active:
        factors[slot] = device_crop.crop_spec(step.entries[slot][0].state, s.search_factor,
                                              s.search_size, shapes[slot], specs[slot])
      launch = time.thread_time()   # the specs (S x 12 KB) go up with the call
      boxes_dev, _ = self._step(self.variables, self._templates, frames_dev, specs)
      stats.dispatch += time.thread_time() - launch
      # While the device runs: decode further ahead and send the next step's frames up.
      top_up()
      if window:
        self._upload(window[0])
      wait = time.perf_counter()
      boxes = np.asarray(boxes_dev)
      stats.wait_device += time.perf_counter() - wait
      now = time.perf_counter()
      per_frame = (now - last) / len(active)
      last = now
      for slot in active:
        job, t = step.entries[slot]
        job.state = next_state(boxes[slot], job.state, factors[slot], shapes[slot], s)
        job.boxes.append(job.state)
        if t == 1:
          job.times.append(per_frame)   # frame 0 (the template) shares its first step's time
        job.times.append(per_frame)
      stats.frames += len(active)
      stats.steps += 1
      for slot in active:
        job, t = step.entries[slot]
        if t + 1 == len(job.sequence.frames):
          yield SequenceResult(job.sequence, np.stack(job.boxes), np.asarray(job.times))
      if on_frames is not None:
        on_frames(len(active))
    stats.wall += time.perf_counter() - run_start
    stats.host += time.thread_time() - cpu_start - (stats.dispatch - dispatched)
