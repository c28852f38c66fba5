"""Build a frame store (see frame_store.py) from a Kinetics-layout folder.

  python -m dropmae_jax.data.build_frame_store --src /data/kinetics700/train --out /data/k700_frames
      [--short_side 256] [--quality 90] [--videos_per_shard 256] [--workers N] [--list_file F]

Parallel over shards with a progress bar; resumable (finished shards are kept, so re-running the
same command after an interruption only does what is left); unreadable videos are skipped and
listed in OUT/report.json. Train on it with --config.data.format=frames --config.data.root=OUT.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys

import numpy as np
import tqdm

from dropmae_jax.config import arguments
from dropmae_jax.data import frame_store
from dropmae_jax.data import index
from dropmae_jax.data import video


def _write_atomic(path: str, write, mode: str = "w") -> None:
  """write(file) into PATH.tmp, then rename: a reader never sees half a file."""
  tmp = path + ".tmp"
  with open(tmp, mode) as f:
    write(f)
  os.replace(tmp, path)


def _write_atomic_json(path: str, payload) -> None:
  _write_atomic(path, lambda f: json.dump(payload, f, indent=1))


def write_videos(path: str, videos: list[str], src: str, short_side: int, quality: int,
                 to_records=None) -> tuple[list[dict], list[dict], int]:
  """Encodes `videos` (frame_store.encode_video) into one ArrayRecord file at PATH, atomically.

  Shared by the frame store and the TFDS builder (tfds_kinetics), so both hold the same frames.
  to_records(k, meta, frames) -> the records for the k-th of `videos` (default: the JPEGs).
  Returns (metadata of each stored video, {'path', 'error'} of each skipped one, records).
  """
  from array_record.python.array_record_module import ArrayRecordWriter
  tmp = path + ".tmp"
  # JPEGs do not compress: skip the default (brotli) codec, which made reads ~20x slower.
  writer = ArrayRecordWriter(tmp, "group_size:1,uncompressed")
  written, skipped, records = [], [], 0
  for k, video_path in enumerate(videos):
    try:
      meta, frames = frame_store.encode_video(video_path, src, short_side, quality)
    except video.VideoDecodeError as e:
      skipped.append({"path": os.path.relpath(video_path, src), "error": str(e)})
      continue
    for record in (frames if to_records is None else to_records(k, meta, frames)):
      writer.write(record)
      records += 1
    written.append(meta)
  writer.close()
  os.replace(tmp, path)
  return written, skipped, records


def write_shard(job: tuple) -> dict:
  """Encode one shard's videos into OUT/shard-XXXXX.array_record (+ its .json manifest)."""
  shard, paths, src, out, short_side, quality = job
  name = frame_store.shard_name(shard)
  final = os.path.join(out, name + ".array_record")
  written, skipped, frames = write_videos(final, paths, src, short_side, quality)
  manifest = {"shard": shard, "file": os.path.basename(final), "records": frames,
              "videos": written, "skipped": skipped, "bytes": os.path.getsize(final)}
  _write_atomic_json(os.path.join(out, name + ".json"), manifest)  # written last: shard is done
  return manifest


def run_jobs(fn, jobs: list, *, total: int, workers: int | None, desc: str,
             progress: bool = True) -> None:
  """fn(job) for every job on `workers` processes (default: all cores), with a progress bar.

  `total` counts the finished jobs too (the bar starts at total - len(jobs)). fn must be a
  module-level function of an importable module (it is pickled by name into the workers).
  """
  workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
  bar = tqdm.tqdm(total=total, initial=total - len(jobs), unit="shard", disable=not progress,
                  desc=desc)
  if workers == 1:
    for job in jobs:
      fn(job)
      bar.update()
  else:
    # Never fork: callers (tests, notebooks, training) may already run JAX / grain threads, and a
    # forked child can inherit a lock held mid-use and wait on it forever. forkserver forks from
    # a fresh single-threaded server; fn is module-level, so no __main__ guard is needed.
    context = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(context).Pool(workers) as pool:
      for _ in pool.imap_unordered(fn, jobs):
        bar.update()
  bar.close()


def build(src: str, out: str, *, short_side: int = 256, quality: int = 90,
          videos_per_shard: int = 256, workers: int | None = None, list_file: str = "",
          progress: bool = True) -> dict:
  """Builds (or finishes building) the store; returns the index written to OUT/index.json."""
  paths = index.list_videos(src, list_file)
  os.makedirs(out, exist_ok=True)
  jobs = []
  for shard, start in enumerate(range(0, len(paths), videos_per_shard)):
    if not os.path.isfile(os.path.join(out, frame_store.shard_name(shard) + ".json")):
      jobs.append((shard, paths[start:start + videos_per_shard], src, out, short_side, quality))
  num_shards = -(-len(paths) // videos_per_shard)
  run_jobs(write_shard, jobs, total=num_shards, workers=workers, desc="frame store",
           progress=progress)
  manifests = []
  for shard in range(num_shards):
    with open(os.path.join(out, frame_store.shard_name(shard) + ".json")) as f:
      manifests.append(json.load(f))
  skipped = [s for m in manifests for s in m["skipped"]]
  _write_atomic_json(os.path.join(out, frame_store.REPORT_FILE),
                     {"skipped_videos": len(skipped), "skipped": skipped})
  counts = np.array([v["num_frames"] for m in manifests for v in m["videos"]], np.int32)
  _write_atomic(os.path.join(out, frame_store.COUNTS_FILE), lambda f: np.save(f, counts), "wb")
  store_index = {
      "format_version": frame_store.FORMAT_VERSION,
      "num_videos": sum(len(m["videos"]) for m in manifests),
      "num_frames": sum(m["records"] for m in manifests),
      "bytes": sum(m["bytes"] for m in manifests),
      "skipped_videos": len(skipped),
      "short_side": short_side, "quality": quality, "source": os.path.abspath(src),
      "shards": [{"file": m["file"], "manifest": frame_store.shard_name(m["shard"]) + ".json",
                  "records": m["records"], "num_videos": len(m["videos"])} for m in manifests],
  }
  _write_atomic_json(os.path.join(out, frame_store.INDEX_FILE), store_index)
  return store_index


def main(argv=None) -> int:
  parser = arguments.ArgumentParser(prog="python -m dropmae_jax.data.build_frame_store",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--src", required=True, help="Kinetics-layout folder (class/*.mp4)")
  parser.add_argument("--out", required=True, help="frame store folder")
  parser.add_argument("--list_file", default="", help="optional list of videos under --src")
  parser.add_argument("--short_side", type=int, default=256, help="frames resized to this short side")
  parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
  parser.add_argument("--videos_per_shard", type=int, default=256)
  parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
  args = parser.parse_args(argv)
  try:
    result = build(args.src, args.out, short_side=args.short_side, quality=args.quality,
                   videos_per_shard=args.videos_per_shard, workers=args.workers,
                   list_file=args.list_file)
  except (FileNotFoundError, NotADirectoryError, ValueError) as e:
    # No videos under --src, a missing --list_file: the message names it; no traceback.
    print(f"error: {_flag_names(str(e))}", file=sys.stderr)
    return 2
  report = os.path.join(args.out, frame_store.REPORT_FILE)
  if result["num_videos"] == 0:
    print(f"error: no video could be stored: all {result['skipped_videos']} videos under "
          f"{args.src} were unreadable (reasons in {report})", file=sys.stderr)
    return 1
  print(f"{result['num_videos']} videos, {result['num_frames']} frames, "
        f"{result['bytes'] / 2**20:.1f} MiB in {len(result['shards'])} shards; "
        f"{result['skipped_videos']} skipped (see {report})")
  return 0


def _flag_names(message: str) -> str:
  # index.list_videos speaks of the training config's fields; here they are this tool's flags.
  return message.replace("config.data.root", "--src").replace("config.data.list_file",
                                                              "--list_file")


if __name__ == "__main__":
  sys.exit(main())
