"""The DropSeg fine-tuning input: grain over training pairs (`pairs.VosItemMap`).

    range(global item)[process_index::process_count] -> map(VosItemMap) -> batch(b)
      -> to_iter_dataset(read threads) -> mp_prefetch(worker processes)

Each item's randomness is seeded by (seed, global item index) alone and batches are formed
BEFORE the hand-off to grain's workers (worker k makes whole batches k, k + n, ...), so the same
seed gives the same batches for any `num_workers` / `read_threads`, and hosts see disjoint items
(one optimizer step uses a contiguous block of global items, so the per-epoch permutation of
`pairs.VosItemMap.video_of` is walked in order). The stream is endless; the trainer counts
`num_videos // batch_size` steps an epoch (released: len(ConcatDataset) // batch with
drop_last). `get_state()` / `set_state()` resume at the next batch; a saved state names the
worker count it was taken with, so resume with the same `config.data.num_workers`.

Batch (numpy, b = config.batch_size // process_count, S = config.model.img_size):
  memory_frame, query_frame uint8 (b, S, S, 3)   RGB, not normalised (the step normalises)
  memory_masks float32 (b, 2, S, S)              target, second object of the memory frame
  query_labels int32 (b, S, S)                   the query frame's cls_gt in {0, 1, 2}
  selector float32 (b, 2)
  skip_count, video_index, memory_index, query_index int32 (b,)

`config.data.davis_root = 'synthetic'` trains on WORKDIR/vos_synthetic_dropseg, the DAVIS-layout
set of `vos/synthetic.py` with train AND val sequences (`config.data.synthetic`), made once. It
is not WORKDIR/vos_synthetic, the val-only set that pre-training's label propagation makes
(`vos/during_training.py`, other size): a pre-training workdir reused for fine-tuning keeps both.
"""
from __future__ import annotations

import os

import grain
import ml_collections

from dropmae_jax.data import grain_support
from dropmae_jax.data import synthetic_scenes as scenes
from dropmae_jax.vos.inputs import pairs as vos_pairs
from dropmae_jax.vos.inputs import videos as vos_videos

SYNTHETIC = "synthetic"
SYNTHETIC_DIR = "vos_synthetic_dropseg"
_ENDLESS = 2 ** 62        # global item indices (never reached)

close_iterator = grain_support.close_iterator


def _config_error(message: str) -> Exception:
  from dropmae_jax.config.loading import ConfigError
  return ConfigError(message)


def ensure_synthetic(workdir: str, data_cfg: ml_collections.ConfigDict) -> str:
  """WORKDIR/vos_synthetic_dropseg with train (and val) sequences, made now if absent -> its path.

  Several processes may call this at once (`synthetic_scenes.build_once`).
  """
  if not workdir:
    raise _config_error("a data root of 'synthetic' needs --workdir (the set is made there)")
  syn = data_cfg.synthetic
  if int(syn.train) < 1:
    raise _config_error(f"config.data.synthetic.train={int(syn.train)}: the synthetic training "
                        "set needs at least one train sequence")
  target = os.path.join(os.path.abspath(workdir), SYNTHETIC_DIR)
  splits = ("train", "val") if int(syn.val) > 0 else ("train",)

  def complete() -> bool:
    return all(os.path.isfile(os.path.join(target, "ImageSets", "2017", f"{s}.txt"))
               for s in splits)

  from dropmae_jax.vos import synthetic as make_vos_sequences
  return scenes.build_once(target, complete, lambda folder: make_vos_sequences.make_dataset(
      folder, train=int(syn.train), val=int(syn.val), frames=int(syn.frames),
      size=tuple(int(v) for v in syn.size), seed=int(syn.seed), progress=False))


def training_videos(config: ml_collections.ConfigDict,
                    workdir: str = "") -> list[vos_videos.TrainingVideo]:
  """DAVIS train x data.davis_repeat + YouTube-VOS train videos, each with its max_jump.

  Raises ConfigError naming the config field: no root set, a root missing or not in its layout,
  a bad repeat / max_jump / min_videos_frames.
  """
  data = config.data
  davis_root, youtube_root = str(data.davis_root), str(data.youtube_root)
  if not davis_root and not youtube_root:
    raise _config_error("config.data.davis_root and config.data.youtube_root are both empty; "
                        "set at least one (davis_root may be 'synthetic')")
  min_frames = int(data.min_videos_frames)
  if min_frames < 2:
    raise _config_error(f"config.data.min_videos_frames={min_frames}: a pair needs 2 frames")
  videos: list[vos_videos.TrainingVideo] = []
  if davis_root:
    repeat, jump = int(data.davis_repeat), int(data.davis_max_jump)
    if repeat < 1:
      raise _config_error(f"config.data.davis_repeat={repeat} must be >= 1 when "
                          "config.data.davis_root is set")
    if jump < 1:
      raise _config_error(f"config.data.davis_max_jump={jump} must be >= 1")
    root = (ensure_synthetic(workdir, data) if davis_root == SYNTHETIC
            else os.path.expanduser(davis_root))
    try:
      davis = vos_videos.davis_videos(root, str(data.davis_subset), jump, min_frames)
    except vos_videos.VideoFolderError as e:
      raise _config_error(f"config.data.davis_root={davis_root!r} (subset "
                          f"config.data.davis_subset={str(data.davis_subset)!r}): {e}") from e
    videos += davis * repeat
  if youtube_root:
    if youtube_root == SYNTHETIC:
      raise _config_error("config.data.youtube_root='synthetic': only davis_root has a "
                          "synthetic set")
    jump = int(data.youtube_max_jump)
    if jump < 1:
      raise _config_error(f"config.data.youtube_max_jump={jump} must be >= 1")
    subset_file = os.path.expanduser(str(data.get("youtube_subset", "")))
    try:
      videos += vos_videos.youtube_videos(os.path.expanduser(youtube_root), jump, subset_file,
                                          min_frames)
    except vos_videos.VideoFolderError as e:
      raise _config_error(f"config.data.youtube_root={youtube_root!r}"
                          + (f" (config.data.youtube_subset={subset_file!r})" if subset_file
                             else "") + f": {e}") from e
  return videos


def num_videos(config: ml_collections.ConfigDict, workdir: str = "") -> int:
  """Items of one pass over the concatenated list (the epoch length, in pairs)."""
  return len(training_videos(config, workdir))


def make_dataset(config: ml_collections.ConfigDict, *, seed: int, process_index: int = 0,
                 process_count: int = 1, workdir: str = "") -> grain.IterDataset:
  """This host's batches as a grain IterDataset (format: module docstring)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  batch_size = int(config.batch_size)
  if batch_size < 1 or batch_size % process_count:
    raise _config_error(f"config.batch_size={batch_size} does not split over {process_count} "
                        "processes")
  data = config.data
  trials = int(data.max_redraws)
  if trials < 1:
    raise _config_error(f"config.data.max_redraws={trials} must be >= 1")
  if not 0.0 <= float(data.reverse_prob) <= 1.0:
    raise _config_error(f"config.data.reverse_prob={float(data.reverse_prob)} not in [0, 1]")
  item_map = vos_pairs.VosItemMap(
      training_videos(config, workdir), int(config.model.img_size), seed=int(seed),
      trials=trials, reverse_prob=float(data.reverse_prob),
      max_retries=int(data.max_retries))
  ds = (grain.MapDataset.range(_ENDLESS)[process_index::process_count]
        .map(item_map)
        .batch(batch_size // process_count, drop_remainder=True))
  threads = max(1, int(data.read_threads))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))
  if int(data.num_workers) > 0:
    grain_support.ensure_absl_flags_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(data.num_workers), per_worker_buffer_size=int(data.prefetch)))
  return ds


def make_vos_iterator(config: ml_collections.ConfigDict, *, seed: int, process_index: int = 0,
                      process_count: int = 1, workdir: str = "") -> grain.DatasetIterator:
  """`iter(make_dataset(...))`: an endless grain DatasetIterator with get_state / set_state.

  Close it with `close_iterator` (stops worker processes, frees shared memory).
  """
  return iter(make_dataset(config, seed=seed, process_index=process_index,
                           process_count=process_count, workdir=workdir))
