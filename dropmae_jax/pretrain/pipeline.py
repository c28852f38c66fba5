"""The grain input pipeline: video list -> shuffled, repeated, augmented frame-pair batches.

    items: source (video index) -> seed -> [process_index::process_count]
      -> shuffle (per epoch) -> repeat -> random_map(FramePairSampler)
    batches: range(batch number) -> map(BatchOfItems: items n*b .. n*b + b - 1, decoded by
      read threads) -> to_iter_dataset -> mp_prefetch(worker processes)

Deterministic for a seed, whatever `num_workers` / `read_threads` / `read_buffer` are: grain
seeds each item's RNG from the pipeline seed and the item's position, and batches are formed
BEFORE the hand-off to workers (worker k makes batches k, k + n, ... whole, and grain interleaves
them in order), so batch n is items n*b .. n*b + b - 1 for any worker count. (Batching after
`to_iter_dataset` would batch each worker's own slice of items, k, k + n, ...: other batches for
every worker count.) `get_state()`/`set_state()` (and orbax via `grain.checkpoint.CheckpointSave`)
reproduce the next batch exactly, which makes resumed runs bit-identical; a saved position names
the worker count it was taken with, so resume with the same `num_workers`.

Batches are dicts of numpy arrays (b = per_host_batch, S = img_size):
  frames       uint8 (b, 2, S, S, 3)  frame s (x) then frame e (z); not normalised
  skipped      int32 (b,)  unreadable videos passed over to produce this item
  repeated     int32 (b,)  1 where a one-frame video supplied both frames
  video_index  int32 (b,)  index into `paths` of the video used
  skip_reason  str <U200 (b,)  why the first video passed over for this item failed ('' if none)

Unreadable videos are not logged here (that would be one line per bad file, from every worker
process): `skipped` and `skip_reason` carry them to the trainer, which names the first few and
then counts them (metrics.SkippedVideoLog).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import threading

import grain
import ml_collections
import numpy as np
from absl import logging

from dropmae_jax.data import grain_support
from dropmae_jax.data import video
from dropmae_jax.pretrain import transforms

# The pipeline's iterator is closed the same way as every grain iterator of this package.
close_iterator = grain_support.close_iterator


class VideoIndexSource:
  """grain RandomAccessDataSource over the video list whose records are the video indices.

  Decoding happens in FramePairSampler, which gets grain's per-record RNG: the frame pair and
  the crops then depend only on (seed, position), not on which worker decoded it. Records are
  small ints, so slicing, shuffling and shipping them to workers costs nothing.
  """

  def __init__(self, num_videos: int):
    self._n = int(num_videos)

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, record_key: int) -> int:
    if not 0 <= record_key < self._n:
      raise IndexError(f"video index {record_key} out of range [0, {self._n})")
    return int(record_key)

  def __repr__(self) -> str:   # grain logs/checkpoints name the source by its repr
    return f"VideoIndexSource(num_videos={self._n})"


class VideoFiles:
  """Reader over video files (decoded on the fly with PyAV); same interface as FrameStore."""

  def __init__(self, paths: list[str]):
    self._paths = list(paths)

  def __len__(self) -> int:
    return len(self._paths)

  def read_sampled_frames(self, i: int, choose) -> tuple[np.ndarray, tuple[int, ...]]:
    return video.read_sampled_frames(self._paths[i], choose)

  def describe(self, i: int) -> str:
    return self._paths[i]


def as_reader(paths_or_reader):
  """A list of video paths becomes VideoFiles; a FrameStore (or any reader) passes through."""
  return VideoFiles(paths_or_reader) if isinstance(paths_or_reader, (list, tuple)) else paths_or_reader


@dataclasses.dataclass(frozen=True)
class PairRecipe:
  """What each item is made of (a frozen dataclass: picklable into grain workers)."""
  img_size: int                       # S: output side of each frame
  max_gap: int                        # 0 < e - s < max_gap
  crop_scale: tuple[float, float]     # RandomResizedCrop area fraction range
  crop_ratio: tuple[float, float]     # RandomResizedCrop aspect (w/h) range
  hflip: bool                         # flip each frame independently with p = 0.5
  max_retries: int                    # unreadable videos skipped in a row before raising

  @classmethod
  def from_config(cls, data_cfg: ml_collections.ConfigDict, img_size: int) -> PairRecipe:
    return cls(img_size=int(img_size), max_gap=int(data_cfg.max_gap),
               crop_scale=tuple(float(v) for v in data_cfg.crop_scale),
               crop_ratio=tuple(float(v) for v in data_cfg.crop_ratio),
               hflip=bool(data_cfg.hflip), max_retries=int(data_cfg.max_retries))


# Fixed width: grain stacks items into a batch array, which needs one dtype for every item.
SKIP_REASON_CHARS = 200


class FramePairSampler(grain.transforms.RandomMap):
  """Video index -> {'frames': uint8 (2, S, S, 3), 'skipped', 'repeated', 'video_index',
  'skip_reason'}.

  An unreadable or empty video is skipped: a replacement is drawn with the item's RNG (so the
  choice is reproducible) from this host's own shard (so hosts stay disjoint), and `skipped`
  counts how many were passed over. A one-frame video uses its frame twice (`repeated` = 1).
  Only more than `max_retries` failures in a row raise: a single bad file never ends a run.
  """

  def __init__(self, paths, recipe: PairRecipe, process_index: int = 0, process_count: int = 1):
    self._reader = as_reader(paths)
    self._recipe = recipe
    self._first = process_index
    self._stride = process_count
    self._shard_size = len(range(process_index, len(self._reader), process_count))

  def random_map(self, element: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    r = self._recipe
    index = int(element)
    failures: list[str] = []
    reason = ""
    while True:
      path = self._reader.describe(index)
      try:
        pair, (s, e) = self._reader.read_sampled_frames(
            index, lambda t: transforms.sample_frame_pair(t, r.max_gap, rng))
        break
      except video.VideoDecodeError as err:
        if not failures:
          reason = str(err)
        failures.append(path)
        if len(failures) > r.max_retries:
          raise RuntimeError(
              f"{len(failures)} videos in a row could not be decoded (more than "
              f"config.data.max_retries={r.max_retries}); is config.data.root right? "
              f"Files: {failures}") from err
        index = self._first + self._stride * int(rng.integers(0, self._shard_size))
    frames = np.stack([
        transforms.augment_frame(f, r.img_size, r.crop_scale, r.crop_ratio, r.hflip, rng)
        for f in pair])
    return {"frames": frames, "skipped": np.int32(len(failures)),
            "repeated": np.int32(s == e), "video_index": np.int32(index),
            "skip_reason": np.array(reason[:SKIP_REASON_CHARS], f"<U{SKIP_REASON_CHARS}")}


class BatchOfItems:
  """Batch number n -> items n*b .. n*b + b - 1 of `items`, stacked (a grain map function).

  The batch, not the item, is what grain slices over worker processes, so batch n holds the same
  items for any `num_workers`. Its items are still decoded in parallel: a pool of `threads`
  threads per process (PyAV and PIL release the GIL), shared by the batches in flight, so one
  batch is assembled by every read thread and only a few batches wait in memory. The pool is
  made in the process that uses it (it is not pickled into the workers).
  """

  def __init__(self, items: grain.MapDataset, batch_size: int, threads: int):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self._items = items
    self._batch_size = int(batch_size)
    self._threads = max(1, int(threads))
    self._pool: concurrent.futures.ThreadPoolExecutor | None = None
    self._lock = threading.Lock()

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_pool"] = state["_lock"] = None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
    with self._lock:
      if self._pool is None:
        self._pool = concurrent.futures.ThreadPoolExecutor(self._threads,
                                                           thread_name_prefix="dropmae-read")
      return self._pool

  def __call__(self, number: int) -> dict[str, np.ndarray]:
    first = int(number) * self._batch_size
    indices = range(first, first + self._batch_size)
    if self._threads == 1:
      elements = [self._items[i] for i in indices]
    else:   # map returns the items in order and re-raises the first item's error
      elements = list(self._executor().map(self._items.__getitem__, indices))
    return {k: np.stack([e[k] for e in elements]) for k in elements[0]}


def make_dataset(data_cfg: ml_collections.ConfigDict, paths, *, img_size: int,
                 per_host_batch: int, seed: int, process_index: int = 0,
                 process_count: int = 1) -> grain.IterDataset:
  """This host's pipeline as a grain IterDataset of batches (format: module docstring).

  Args:
    data_cfg: `config.data` (max_gap, crop_scale, crop_ratio, hflip, max_retries, num_workers,
      prefetch, read_threads, read_buffer).
    paths: every host's full video list (`index.list_videos`) or a `FrameStore`;
      `video_index` refers to it.
    img_size: S, the side of the output frames (`config.model.img_size`).
    per_host_batch: b, items per batch on this host (global batch / process_count).
    seed: pipeline seed (order, frame pairs, crops, flips).
    process_index, process_count: this host takes videos process_index::process_count, so
      hosts see disjoint videos; a host epoch is ~len(paths) / process_count items.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  if len(paths) < process_count:
    raise ValueError(f"{len(paths)} videos cannot be split over {process_count} processes")
  if per_host_batch < 1:
    raise ValueError(f"per_host_batch must be >= 1, got {per_host_batch}")
  recipe = PairRecipe.from_config(data_cfg, img_size)
  sampler = FramePairSampler(paths, recipe, process_index, process_count)
  paths = as_reader(paths)
  items = (grain.MapDataset.source(VideoIndexSource(len(paths)))
           .seed(seed)
           [process_index::process_count]
           .shuffle()       # a fresh permutation each epoch (grain reseeds per epoch)
           .repeat()        # infinite; the trainer counts steps
           .random_map(sampler))
  builder = BatchOfItems(items, per_host_batch, threads=int(data_cfg.read_threads))
  ds = grain.MapDataset.range(len(items) // per_host_batch).map(builder)
  # Batches in flight per process: about `read_buffer` items (at least one batch).
  ahead = max(1, math.ceil(int(data_cfg.read_buffer) / per_host_batch))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=ahead, prefetch_buffer_size=ahead))
  if int(data_cfg.num_workers) > 0:
    grain_support.ensure_absl_flags_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(data_cfg.num_workers),
        per_worker_buffer_size=int(data_cfg.prefetch)))
  return ds


def make_train_iterator(data_cfg: ml_collections.ConfigDict, paths, *,
                        img_size: int, per_host_batch: int, seed: int, process_index: int = 0,
                        process_count: int = 1) -> grain.DatasetIterator:
  """`iter(make_dataset(...))`: a grain DatasetIterator with get_state/set_state.

  Call `close()` when done (it stops worker processes and threads).
  """
  return iter(make_dataset(data_cfg, paths, img_size=img_size, per_host_batch=per_host_batch,
                           seed=seed, process_index=process_index,
                           process_count=process_count))
