"""Kinetics (or any Kinetics-layout folder) as a TensorFlow Datasets dataset: one record per frame.

  tfds build dropmae_jax/data/tfds_kinetics.py --manual_dir=/data/kinetics700 --data_dir=/data/tfds
  python -m dropmae_jax.data.tfds_kinetics --manual_dir=/data/kinetics700 --data_dir=/data/tfds \
      [--short_side 256] [--quality 90] [--videos_per_shard 128] [--workers N]
      [--validation_fraction 0.0]

Both write DATA_DIR/kinetics_frames/1.0.0/ (dataset_info.json, features.json, metadata.json and
`kinetics_frames-{train,validation}.array_record-XXXXX-of-YYYYY`); train on it with
--config.data.format=tfds --config.data.tfds_data_dir=DATA_DIR. Neither needs TensorFlow.

Records (`tfds.data_source('kinetics_frames', split=..., data_dir=...)[k]`), one per frame:
  jpeg         bytes  the frame, short side resized to 256 (never upscaled), JPEG quality 90:
                      exactly the frame store's bytes (frame_store.encode_video)
  video_index  int32  the video's position in its split's sorted source list (stable: a video
                      that fails to decode leaves a gap, so the numbering never depends on it)
  frame_index  int32  t, 0-based, in decoding order
  video_path   str    the video's path relative to its split folder ('class/clip.mp4')
  label        str    its class folder name
  num_frames   int32  frames stored for this video
  fps          float32
The order on disk is the generation order (videos sorted by class folder and name, each video's
frames consecutive): record = first_frame[video] + t, which is how readers find a frame pair
with two reads. Per-video lookups need only the frame counts, which metadata.json holds per split
(`splits.<split>.frame_counts`, stored videos in record order), with the skipped videos and the
build settings; everything else about a video is in each of its frame records. A per-video
table as records would need a second feature set, which a TFDS dataset cannot have (all splits
share one), and a separate dataset would have to be kept in step by hand.

Splits: MANUAL_DIR/train/ -> 'train' and MANUAL_DIR/val/ or MANUAL_DIR/validation/ ->
'validation' (the Kinetics layout; a test/ folder is not read). A MANUAL_DIR without a train/
folder is itself the class folder root: every video goes to 'train', unless
`validation_fraction` > 0 puts that fraction in 'validation', chosen by a hash of the video's
relative path (deterministic, and stable when videos are added).

Why not the generic `GeneratorBasedBuilder` path: its writer passes every example through an
in-memory shuffle buffer that spills to disk through `tf.io.gfile` past 1 GB -- TensorFlow
again, and every byte written twice -- and without Beam it runs on one core. This is a
`tfds.core.ShardBasedBuilder` (TFDS's builder for data whose shard layout and order the builder
decides), whose own writing loop is serial; `_download_and_prepare` runs the same per-shard
generators on all cores (forkserver processes) instead, each writing its shard straight to
ArrayRecord. Shards are written to DATA_DIR/downloads/kinetics_frames-VERSION-partial/ first, so
re-running an interrupted build keeps the finished shards (restartable and resumable); they are
hard-linked into the dataset when all are done, and the folder is removed after.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import shutil
import sys

import numpy as np
import tensorflow_datasets as tfds

from dropmae_jax.config import arguments
from dropmae_jax.data import build_frame_store
from dropmae_jax.data import index

_CITATION = """@article{kay2017kinetics,
  title={The Kinetics Human Action Video Dataset},
  author={Kay, Will and Carreira, Joao and Simonyan, Karen and Zhang, Brian and Hillier, Chloe and
          Vijayanarasimhan, Sudheendra and Viola, Fabio and Green, Tim and Back, Trevor and
          Natsev, Paul and Suleyman, Mustafa and Zisserman, Andrew},
  journal={arXiv preprint arXiv:1705.06950},
  year={2017}
}"""

SHORT_SIDE = 256
QUALITY = 90
VIDEOS_PER_SHARD = 128   # ~0.6 GB shards at Kinetics' ~5 MB of JPEGs per 10 s clip
_VALIDATION_FOLDERS = ("val", "validation")


def features() -> tfds.features.FeaturesDict:
  """The record spec (module docstring). Bytes as a string Tensor: no TensorFlow to encode."""
  return tfds.features.FeaturesDict({
      "jpeg": tfds.features.Tensor(shape=(), dtype=np.object_),
      "video_index": tfds.features.Scalar(dtype=np.int32),
      "frame_index": tfds.features.Scalar(dtype=np.int32),
      "video_path": tfds.features.Text(),
      "label": tfds.features.Text(),
      "num_frames": tfds.features.Scalar(dtype=np.int32),
      "fps": tfds.features.Scalar(dtype=np.float32),
  })


def split_sources(manual_dir: str, validation_fraction: float) -> dict[str, tuple[str, list[str]]]:
  """{split: (folder the paths are relative to, sorted absolute video paths)} (module docstring)."""
  def videos(root: str) -> list[str]:
    try:
      return index.list_videos(root)
    except (FileNotFoundError, ValueError) as e:
      raise ValueError(str(e).replace("config.data.root", "--manual_dir")) from e

  train = os.path.join(manual_dir, "train")
  if os.path.isdir(train):
    sources = {"train": (train, videos(train))}
    for name in _VALIDATION_FOLDERS:
      folder = os.path.join(manual_dir, name)
      if os.path.isdir(folder):
        sources["validation"] = (folder, videos(folder))
        break
    return sources
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
  paths = videos(manual_dir)
  held_out = [_hash_fraction(os.path.relpath(p, manual_dir)) < validation_fraction
              for p in paths]
  sources = {"train": (manual_dir, [p for p, v in zip(paths, held_out) if not v])}
  if any(held_out):
    sources["validation"] = (manual_dir, [p for p, v in zip(paths, held_out) if v])
  return sources


def _hash_fraction(relative_path: str) -> float:
  """A uniform number in [0, 1) fixed by the path (md5: the same on every machine and run)."""
  digest = hashlib.md5(relative_path.replace(os.sep, "/").encode()).hexdigest()
  return int(digest[:12], 16) / 16**12


def frame_examples(video_index: int, meta: dict, frames: list[bytes]):
  """One video's records as feature dicts (the spec: `features()`), in frame order."""
  video_path = meta["path"].replace(os.sep, "/")
  common = {"video_index": video_index, "video_path": video_path,
            "label": video_path.split("/")[0], "num_frames": len(frames), "fps": meta["fps"]}
  for t, jpeg in enumerate(frames):
    yield {**common, "jpeg": jpeg, "frame_index": t}


def write_shard(job: tuple) -> dict:
  """One shard: its videos' frames as serialized TFDS examples in one ArrayRecord file.

  Runs in a worker process (module-level, picklable by name). Writes PARTIAL/<split>-XXXXX
  .array_record and, last, its .json manifest (a shard is finished when that exists).
  """
  split, shard, paths, root, first_index, partial, short_side, quality = job
  spec = features()
  name = f"{split}-{shard:05d}"
  path = os.path.join(partial, name + ".array_record")
  written, skipped, records = build_frame_store.write_videos(
      path, paths, root, short_side, quality,
      to_records=lambda k, meta, frames: (
          spec.serialize_example(e) for e in frame_examples(first_index + k, meta, frames)))
  manifest = {"split": split, "shard": shard, "records": records, "videos": written,
              "skipped": skipped, "bytes": os.path.getsize(path)}
  build_frame_store._write_atomic_json(os.path.join(partial, name + ".json"), manifest)  # pylint: disable=protected-access
  return manifest


def _shard_examples(job: tuple):
  """The (key, example) pairs of one shard, for TFDS's own (serial) ShardBasedBuilder loop."""
  from dropmae_jax.data import frame_store  # pylint: disable=g-import-not-at-top
  from dropmae_jax.data import video  # pylint: disable=g-import-not-at-top
  split, _, paths, root, first_index, _, short_side, quality = job
  for k, path in enumerate(paths):
    try:
      meta, frames = frame_store.encode_video(path, root, short_side, quality)
    except video.VideoDecodeError:
      continue
    for example in frame_examples(first_index + k, meta, frames):
      yield f"{split}/{first_index + k:08d}/{example['frame_index']:06d}", example


# Run as `python -m`, this file is __main__ and also imported under its package name (the worker
# processes need that name): registering the class twice would be an error.
class KineticsFrames(tfds.core.ShardBasedBuilder, skip_registration=__name__ == "__main__"):
  """Kinetics-400/-700 or any ROOT/<class>/<clip>.mp4 folder, one record per JPEG frame."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: one record per frame (JPEG, short side 256, quality 90), "
               "splits train/validation, ArrayRecord.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put the videos in `manual_dir` in the Kinetics layout, as the Kinetics downloaders leave them:
    manual_dir/train/<class name>/<clip>.mp4   (-> split 'train')
    manual_dir/val/<class name>/<clip>.mp4     (or validation/; -> split 'validation')
  or any folder manual_dir/<class name>/<clip>.{mp4,avi,mkv,webm,mov} (all -> 'train').
  Unreadable videos are skipped and listed in the dataset's metadata.json.
  """

  def __init__(self, *, file_format=None, short_side: int = SHORT_SIDE, quality: int = QUALITY,
               videos_per_shard: int = VIDEOS_PER_SHARD, workers: int | None = None,
               validation_fraction: float = 0.0, **kwargs):
    """file_format: only ArrayRecord (random access, no TensorFlow); the rest: module docstring."""
    if file_format not in (None, "array_record", tfds.core.FileFormat.ARRAY_RECORD):
      raise ValueError(f"kinetics_frames is written as array_record only, not {file_format!r}: "
                       "readers need random access (tfds.data_source)")
    super().__init__(file_format="array_record", **kwargs)
    self._short_side, self._quality = int(short_side), int(quality)
    self._videos_per_shard = int(videos_per_shard)
    self._workers = workers
    self._validation_fraction = float(validation_fraction)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="Kinetics videos (or any Kinetics-layout folder) as JPEG frames, one record "
                    "per frame, each video's frames consecutive, for random-access frame-pair "
                    "sampling (dropmae_jax).",
        features=features(),
        homepage="https://github.com/google-deepmind/kinetics-i3d",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,   # the order is the index (module docstring)
    )

  def _jobs(self, manual_dir: str, partial: str) -> dict[str, list[tuple]]:
    jobs = {}
    for split, (root, paths) in split_sources(manual_dir, self._validation_fraction).items():
      n = self._videos_per_shard
      jobs[split] = [(split, shard, paths[start:start + n], root, start, partial,
                      self._short_side, self._quality)
                     for shard, start in enumerate(range(0, len(paths), n))]
    return jobs

  def _settings(self, manual_dir: str, jobs: dict[str, list[tuple]]) -> dict:
    """What the finished shards of an earlier, interrupted build must have been made with."""
    return {"version": str(self.version), "short_side": self._short_side,
            "quality": self._quality, "videos_per_shard": self._videos_per_shard,
            "validation_fraction": self._validation_fraction,
            "source": os.path.abspath(manual_dir),
            "videos": {s: hashlib.md5("\n".join(p for j in js for p in j[2]).encode())
                       .hexdigest() for s, js in jobs.items()}}

  def _shard_iterators_per_split(self, dl_manager):
    """TFDS's serial path (unused by `_download_and_prepare` below, which runs these in parallel)."""
    jobs = self._jobs(os.fspath(dl_manager.manual_dir), partial="")
    return {split: [functools.partial(_shard_examples, job) for job in split_jobs]
            for split, split_jobs in jobs.items()}

  def _partial_dir(self, dl_manager) -> str:
    return os.path.join(os.fspath(dl_manager.download_dir), f"{self.name}-{self.version}-partial")

  def _download_and_prepare(self, dl_manager, download_config=None) -> None:
    manual_dir = os.fspath(dl_manager.manual_dir)   # raises with the instructions if missing
    partial = self._partial_dir(dl_manager)
    jobs = self._jobs(manual_dir, partial)
    _reuse_or_reset(partial, self._settings(manual_dir, jobs))
    todo = [j for js in jobs.values() for j in js
            if not os.path.isfile(os.path.join(partial, f"{j[0]}-{j[1]:05d}.json"))]
    total = sum(len(js) for js in jobs.values())
    # By its importable name: under `tfds build` this file is loaded as `data.tfds_kinetics`
    # from a sys.path entry that the worker processes do not have.
    worker = importlib.import_module("dropmae_jax.data.tfds_kinetics").write_shard
    build_frame_store.run_jobs(worker, todo, total=total, workers=self._workers,
                               desc=f"{self.name} (shards)")
    split_infos, report = [], {}
    for split, split_jobs in jobs.items():
      manifests = []
      for split_, shard, *_ in split_jobs:
        with open(os.path.join(partial, f"{split_}-{shard:05d}.json")) as f:
          manifests.append(json.load(f))
      stored = [m for m in manifests if m["records"] > 0]
      if not stored:
        raise ValueError(f"no video of split {split!r} under {manual_dir} could be decoded "
                         f"({sum(len(m['skipped']) for m in manifests)} unreadable)")
      template = self._get_filename_template(split_name=split)
      for k, m in enumerate(stored):
        _link(os.path.join(partial, f"{split}-{m['shard']:05d}.array_record"),
              os.fspath(template.sharded_filepath(shard_index=k, num_shards=len(stored))))
      split_infos.append(tfds.core.SplitInfo(
          name=split, shard_lengths=[m["records"] for m in stored],
          num_bytes=sum(m["bytes"] for m in stored), filename_template=template))
      skipped = [s for m in manifests for s in m["skipped"]]
      report[split] = {
          "num_videos": sum(len(m["videos"]) for m in stored),
          "frame_counts": [v["num_frames"] for m in stored for v in m["videos"]],
          "skipped_videos": len(skipped), "skipped": skipped,
          "source": os.path.abspath(split_jobs[0][3]),   # the split's folder
      }
    self.info.metadata.update({"short_side": self._short_side, "quality": self._quality,
                               "splits": report})
    self.info.set_splits(tfds.core.SplitDict(split_infos))
    self._finished_partial = partial

  def _post_download_and_prepare_hook(self) -> None:
    # The dataset folder is in place: the shards' hard links there keep their data.
    partial = getattr(self, "_finished_partial", None)
    if partial:
      shutil.rmtree(partial, ignore_errors=True)


def _reuse_or_reset(partial: str, settings: dict) -> None:
  """Keeps PARTIAL's finished shards only if they were made with the same settings and videos."""
  path = os.path.join(partial, "settings.json")
  if os.path.isfile(path):
    with open(path) as f:
      if json.load(f) == settings:
        return
    shutil.rmtree(partial)
  os.makedirs(partial, exist_ok=True)
  build_frame_store._write_atomic_json(path, settings)  # pylint: disable=protected-access


def _link(src: str, dst: str) -> None:
  """Hard link (free, and the partial copy survives a failure before the dataset is complete)."""
  try:
    os.link(src, dst)
  except OSError:   # another filesystem (--download_dir elsewhere), or no hard links there
    shutil.copyfile(src, dst)


def main(argv=None) -> int:
  parser = arguments.ArgumentParser(prog="python -m dropmae_jax.data.tfds_kinetics",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--manual_dir", required=True, help="Kinetics-layout videos")
  parser.add_argument("--data_dir", required=True, help="TFDS data_dir to write into")
  parser.add_argument("--short_side", type=int, default=SHORT_SIDE)
  parser.add_argument("--quality", type=int, default=QUALITY, help="JPEG quality")
  parser.add_argument("--videos_per_shard", type=int, default=VIDEOS_PER_SHARD)
  parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
  parser.add_argument("--validation_fraction", type=float, default=0.0,
                      help="held out to 'validation' when MANUAL_DIR has no train/ folder")
  args = parser.parse_args(argv)
  builder = KineticsFrames(data_dir=args.data_dir, short_side=args.short_side,
                           quality=args.quality, videos_per_shard=args.videos_per_shard,
                           workers=args.workers, validation_fraction=args.validation_fraction)
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=args.manual_dir))
  except (FileNotFoundError, NotADirectoryError, ValueError, AssertionError) as e:
    # A missing/empty --manual_dir (TFDS raises AssertionError with the instructions), no videos.
    print(f"error: {e}", file=sys.stderr)
    return 2
  info = builder.info
  print(f"{info.full_name} in {builder.data_dir}: " + ", ".join(
      f"{s}: {info.metadata['splits'][s]['num_videos']} videos, {info.splits[s].num_examples} "
      f"frames, {info.metadata['splits'][s]['skipped_videos']} skipped" for s in info.splits))
  return 0


if __name__ == "__main__":
  # The copy registered under the package name (see the class statement above).
  sys.exit(importlib.import_module("dropmae_jax.data.tfds_kinetics").main())
