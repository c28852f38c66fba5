"""The DropTrack fine-tuning input: grain over pair items, and the device-side pixel transform.

    range(item index)[process_index::process_count] -> map(PairItemMap) -> batch(b)
      -> to_iter_dataset(read threads) -> mp_prefetch(worker processes)

Items are numbered globally and each one's RNG is seeded from (seed, split, index) alone
(`tracking_pairs.PairItemMap`), and batches are formed BEFORE the hand-off to workers (worker k
makes batches k, k + n, ... whole), so the same seed gives the same batches whatever
`num_workers` / `read_threads` are, and hosts see disjoint items. `get_state()` / `set_state()`
(and orbax via `grain.checkpoint.CheckpointSave`) reproduce the next batch exactly; a saved state
names the worker count it was taken with, so resume with the same `config.data.num_workers`.

The train stream is endless: the trainer counts samples_per_epoch // batch_size steps an epoch
(the released sampler draws every item at random, so "epochs" are only a schedule unit). The val
stream is finite: val_samples items (split over hosts), whole batches only.

Batch (numpy, b = config.batch_size / process_count; see PairItemMap for every key):
  template uint8 (b, Hz, Hz, 3), search uint8 (b, Hx, Hx, 3), template_box / search_box float32
  (b, 4) normalised xywh in the crop, template_brightness / search_brightness float32 (b,),
  skip_count / sequence_skips / dataset_index / sequence_index / template_frame / search_frame
  int32 (b,).
`model_inputs(batch)` (jnp, inside the jitted step) turns the uint8 crops into the model's float32
inputs exactly as ToTensorAndJitter + Normalize do.

Dataset root 'synthetic' (got10k only) means the synthetic GOT-10k-layout set under
WORKDIR/synthetic_tracking, made once with `track/synthetic.py` (and reused afterwards).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import grain
import jax.numpy as jnp
import ml_collections

from dropmae_jax.data import grain_support
from dropmae_jax.data import synthetic_scenes as scenes
from dropmae_jax.track.inputs import pairs as tracking_pairs
from dropmae_jax.track.inputs import processing as tracking_processing
from dropmae_jax.data.images import IMAGENET_MEAN, IMAGENET_STD

SYNTHETIC = "synthetic"
SYNTHETIC_DIR = "synthetic_tracking"
_ENDLESS = 2 ** 62        # item indices of the train stream (never reached)

close_iterator = grain_support.close_iterator


def _config_error(message: str) -> Exception:
  from dropmae_jax.config.loading import ConfigError
  return ConfigError(message)


def ensure_synthetic(workdir: str, data_cfg: ml_collections.ConfigDict) -> str:
  """WORKDIR/synthetic_tracking with train/ and val/ (made now if absent) -> its path.

  Several processes may call this at once (`synthetic_scenes.build_once`).
  """
  if not workdir:
    raise _config_error("a dataset root of 'synthetic' needs --workdir (the set is made there)")
  target = os.path.join(os.path.abspath(workdir), SYNTHETIC_DIR)

  def complete() -> bool:
    return all(os.path.isfile(os.path.join(target, s, "list.txt")) for s in ("train", "val"))

  from dropmae_jax.track import synthetic as make_tracking_sequences
  syn = data_cfg.synthetic
  return scenes.build_once(target, complete, lambda folder: make_tracking_sequences.make_dataset(
      folder, train=int(syn.train), val=int(syn.val),
      frames=int(syn.frames) if int(syn.frames) > 0 else None,
      size=tuple(int(v) for v in syn.size), seed=int(syn.seed), progress=False))


def _source_root(data_cfg: ml_collections.ConfigDict, name: str, workdir: str) -> str:
  roots = data_cfg.roots
  root = str(roots[name]) if name in roots else ""
  if not root:
    raise _config_error(f"config.data.roots.{name} is empty; set it to the {name} folder"
                        + (" (or 'synthetic')" if name == "got10k" else ""))
  if root == SYNTHETIC:
    if name != "got10k":
      raise _config_error(f"config.data.roots.{name}='synthetic': only got10k has a synthetic set")
    return ensure_synthetic(workdir, data_cfg)
  return os.path.expanduser(root)


def make_sampler(config: ml_collections.ConfigDict, split: str,
                 workdir: str = "") -> tracking_pairs.PairSampler:
  """The PairSampler over config.data.datasets (split 'train') or config.data.val_dataset."""
  data = config.data
  if split == "train":
    names = [str(n) for n in data.datasets]
    ratios = [float(r) for r in data.ratios]
    if len(ratios) != len(names):
      raise _config_error(f"config.data.ratios has {len(ratios)} entries for "
                          f"{len(names)} datasets {names}")
    specs = [(n, str(data.splits[n]) if n in data.splits else "",
              str(data.split_files[n]) if n in data.split_files else "") for n in names]
  elif split == "val":
    names, ratios = [str(data.val_dataset)], [1.0]
    specs = [(names[0], str(data.val_split), str(data.get("val_split_file", "")))]
  else:
    raise ValueError(f"split must be 'train' or 'val', got {split!r}")
  for name, ds_split, _ in specs:
    if name not in tracking_pairs.DATASETS:
      raise _config_error(f"unknown dataset {name!r} in config.data; known: "
                          f"{', '.join(tracking_pairs.DATASETS)}")
    if not ds_split:
      raise _config_error(f"config.data.splits.{name} is empty")
  sources = [tracking_pairs.open_source(name, _source_root(data, name, workdir), ds_split,
                                        split_file)
             for name, ds_split, split_file in specs]
  return tracking_pairs.PairSampler(sources, ratios, max_gap=int(data.max_sample_interval))


def make_dataset(config: ml_collections.ConfigDict, *, split: str = "train", seed: int,
                 process_index: int = 0, process_count: int = 1, workdir: str = ""
                 ) -> grain.IterDataset:
  """This host's batches as a grain IterDataset (format: module docstring)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  batch_size = int(config.batch_size)
  if batch_size % process_count:
    raise _config_error(f"config.batch_size={batch_size} does not split over {process_count} "
                        f"processes")
  per_host = batch_size // process_count
  data = config.data
  settings = tracking_processing.ProcessingSettings.from_config(config, split)
  item_map = tracking_pairs.PairItemMap(make_sampler(config, split, workdir), settings,
                                        seed=int(seed), split=split,
                                        max_retries=int(data.max_retries))
  if split == "train":
    count = _ENDLESS
  else:
    count = int(data.val_samples)
    if count // process_count < per_host:
      raise _config_error(f"config.data.val_samples={count} is less than one batch of "
                          f"{per_host} per process")
  ds = (grain.MapDataset.range(count)[process_index::process_count]
        .map(item_map)
        .batch(per_host, drop_remainder=True))
  threads = max(1, int(data.get("read_threads", 1)))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))
  if int(data.num_workers) > 0:
    grain_support.ensure_absl_flags_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(data.num_workers), per_worker_buffer_size=int(data.prefetch)))
  return ds


def make_tracking_iterator(config: ml_collections.ConfigDict, *, split: str = "train", seed: int,
                           process_index: int = 0, process_count: int = 1, workdir: str = ""
                           ) -> grain.DatasetIterator:
  """`iter(make_dataset(...))`: a grain DatasetIterator with get_state / set_state.

  Close it with `close_iterator` (stops worker processes, frees shared memory).
  """
  return iter(make_dataset(config, split=split, seed=seed, process_index=process_index,
                           process_count=process_count, workdir=workdir))


def model_inputs(batch: Mapping) -> tuple[jnp.ndarray, jnp.ndarray]:
  """uint8 crops + brightness -> (template f32 (b, Hz, Wz, 3), search f32 (b, Hx, Wx, 3)).

  ToTensorAndJitter: x * (brightness / 255) clamped to [0, 1] (the released order of operations),
  then Normalize: (x - ImageNet mean) / ImageNet std. NHWC, as the model's patch embedding wants.
  """
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)

  def one(images, brightness):
    images = jnp.asarray(images)
    brightness = jnp.asarray(brightness, jnp.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"model_inputs wants (b, H, W, 3) crops, got {images.shape}")
    if brightness.shape != images.shape[:1]:
      raise ValueError(f"brightness {brightness.shape} does not match crops {images.shape}")
    scale = brightness / jnp.float32(255.0)
    x = jnp.clip(images.astype(jnp.float32) * scale[:, None, None, None], 0.0, 1.0)
    return (x - mean) / std

  return (one(batch["template"], batch["template_brightness"]),
          one(batch["search"], batch["search_brightness"]))
