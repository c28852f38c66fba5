"""A Kinetics frame store: every video's frames as JPEGs, one ArrayRecord record per frame.

Why: decoding a random frame pair from an mp4 means decoding every frame before it (tens of ms of
CPU); a JPEG store decodes exactly the two frames it needs. Why ArrayRecord written directly
rather than a TFDS builder: TFDS's `Image` feature encodes through TensorFlow, a multi-GB
dependency for what is a list of JPEG byte strings; ArrayRecord is what TFDS writes underneath and
grain reads it natively (`grain.sources.ArrayRecordDataSource`), with no TensorFlow anywhere.

Layout of OUT/:
  shard-00000.array_record ...   records: one JPEG frame each, videos stored consecutively
  shard-00000.json ...           per-shard manifest: each video's path, fps, size and frame count,
                                 and the videos skipped (with why)
  frame_counts.npy               int32 (num_videos,): frames per video, in store order
  index.json                     shards (file, manifest, records, num_videos), totals and settings; no
                                 per-video entries, so readers stay small at Kinetics scale
                                 (written last: the store is complete when it exists)
  report.json                    every skipped video and the reason
A pair costs two small reads and two JPEG decodes, whatever the video's length. A reader holds
the frame counts (4 bytes a video) and opens a shard's manifest only to name a video.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image

from dropmae_jax.data import av_compat
from dropmae_jax.data import video

INDEX_FILE = "index.json"
COUNTS_FILE = "frame_counts.npy"
REPORT_FILE = "report.json"
FORMAT_VERSION = 2   # 1 (before): index.json listed every video


def shard_name(i: int) -> str:
  return f"shard-{i:05d}"


def encode_video(path: str, root: str, short_side: int, quality: int) -> tuple[dict, list[bytes]]:
  """One video -> (metadata, JPEG frames resized to `short_side`). Raises VideoDecodeError."""
  import av
  frames, fps, size = [], 0.0, (0, 0)
  try:
    with av_compat.open_input(path) as container:
      if not container.streams.video:
        raise video.VideoDecodeError(f"{path}: no video stream")
      stream = container.streams.video[0]
      fps = float(av_compat.frame_rate(stream) or 0.0)
      for frame in container.decode(stream):
        img = frame.to_image()
        w, h = img.size
        k = short_side / min(w, h)
        if k < 1.0:  # never upscale: the crops downstream resample anyway
          img = img.resize((max(1, round(w * k)), max(1, round(h * k))), Image.BICUBIC)
        size = img.size
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        frames.append(buf.getvalue())
  except (av.FFmpegError, OSError, ValueError) as e:
    if not frames:
      raise video.VideoDecodeError(f"{path}: {type(e).__name__}: {e}") from e
    # A truncated tail: keep the frames that decoded (as on-the-fly decoding would).
  if not frames:
    raise video.VideoDecodeError(f"{path}: no frames")
  meta = {"path": os.path.relpath(path, root), "fps": fps, "width": size[0], "height": size[1],
          "num_frames": len(frames)}
  return meta, frames


def decode_jpeg(data: bytes) -> Image.Image:
  """JPEG bytes -> a decoded RGB PIL image (the crops work on it directly)."""
  with Image.open(io.BytesIO(data)) as img:
    return img.convert("RGB")


class FrameStore:
  """Read side: `len(store)` videos; `read_sampled_frames(i, choose)` like `video.read_sampled_frames`.

  Picklable (grain workers): a pickle carries the frame counts, never the manifests, and the
  ArrayRecord readers open lazily in each process.
  """

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
    index_path = os.path.join(self.directory, INDEX_FILE)
    if not os.path.isfile(index_path):
      raise FileNotFoundError(
          f"config.data.root={directory!r} is not a finished frame store (no {INDEX_FILE}); "
          "build one with python -m dropmae_jax.data.build_frame_store --src VIDEOS --out DIR")
    with open(index_path) as f:
      self.index = json.load(f)
    if self.index.get("format_version") != FORMAT_VERSION:
      raise ValueError(
          f"{index_path}: frame store format {self.index.get('format_version', 1)}, this code "
          f"reads {FORMAT_VERSION}; re-run build_frame_store with the same --src/--out (finished "
          "shards are kept, only the index is rewritten)")
    counts_path = os.path.join(self.directory, COUNTS_FILE)
    self._counts = np.load(counts_path).astype(np.int64)
    shards = [s for s in self.index["shards"] if s["num_videos"] > 0]
    if not shards or len(self._counts) == 0:
      raise ValueError(f"frame store {directory!r} holds no videos (see its {REPORT_FILE})")
    if len(self._counts) != sum(s["num_videos"] for s in shards) or int(
        self._counts.sum()) != sum(s["records"] for s in shards):
      raise ValueError(f"{counts_path}: {len(self._counts)} videos / {int(self._counts.sum())} "
                       f"frames disagree with {index_path}; rebuild the index by re-running "
                       "build_frame_store")
    self._shards = [os.path.join(self.directory, s["file"]) for s in shards]
    self._manifest_files = [os.path.join(self.directory, s["manifest"]) for s in shards]
    self._shard_start = np.cumsum([0] + [s["num_videos"] for s in shards])  # first video per shard
    self._first_frame = np.concatenate([[0], np.cumsum(self._counts)[:-1]])  # global record index
    self._source = None
    self._manifests: dict[int, list[dict]] = {}

  def __len__(self) -> int:
    return len(self._counts)

  def __getstate__(self):
    return {**self.__dict__, "_source": None, "_manifests": {}}

  def num_frames(self, i: int) -> int:
    return int(self._counts[i])

  def video_info(self, i: int) -> dict:
    """Video i's manifest entry: path (relative to the source), fps, width, height, num_frames."""
    if not 0 <= i < len(self):
      raise IndexError(f"video {i} out of range [0, {len(self)})")
    shard = int(np.searchsorted(self._shard_start, i, side="right")) - 1
    if shard not in self._manifests:
      with open(self._manifest_files[shard]) as f:
        self._manifests[shard] = json.load(f)["videos"]
    return self._manifests[shard][i - int(self._shard_start[shard])]

  def _records(self):
    if self._source is None:
      import grain
      self._source = grain.sources.ArrayRecordDataSource(self._shards)
    return self._source

  def frame(self, i: int, t: int) -> Image.Image:
    """Frame t of video i as an RGB PIL image (np.asarray gives uint8 (H, W, 3))."""
    return decode_jpeg(self._records()[int(self._first_frame[i]) + int(t)])

  def read_sampled_frames(self, i: int, choose) -> tuple[list[Image.Image], tuple[int, ...]]:
    """choose(num_frames) -> frame indices; returns (the k frames as RGB PIL images, indices).

    PIL images rather than arrays: the augmentation crops them directly (two copies fewer).
    """
    indices = tuple(int(t) for t in choose(self.num_frames(i)))
    return [self.frame(i, t) for t in indices], indices

  def describe(self, i: int) -> str:
    return f"{self.directory}:{self.video_info(i)['path']}"
