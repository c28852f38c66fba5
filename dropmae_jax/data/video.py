"""Reading a few frames of a video file with PyAV.

Frames are found by decoding sequentially from the start up to the largest wanted index: exact
indices whatever the keyframe spacing, where seeking lands on keyframes and container timestamps
are unreliable in the wild. Kinetics clips are ~10 s with one keyframe every few seconds, so a
seek would rarely save decoding anyway.

Nothing here caches state between calls, so the functions pickle into grain workers trivially.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import av
import numpy as np

from dropmae_jax.data import av_compat

# Errors a damaged file can raise from FFmpeg or PyAV's wrappers (InvalidDataError is both an
# FFmpegError and a ValueError; a vanished file is an OSError).
_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError, IndexError)


class VideoDecodeError(RuntimeError):
  """The file cannot be opened, has no video stream, or yields no frames."""


class VideoTooShortError(VideoDecodeError):
  """The stream ended (or broke) before a wanted frame; `available` frames did decode.

  Container frame counts can overstate, and a truncated download decodes its first frames and
  then fails: both land here, so the caller can sample again within `available`.
  """

  def __init__(self, message: str, available: int):
    super().__init__(message)
    self.available = available


def _open(path: str) -> av.container.InputContainer:
  try:
    container = av_compat.open_input(path)
  except _DECODE_ERRORS as e:
    raise VideoDecodeError(f"{path}: cannot open ({e})") from e
  if not container.streams.video:
    container.close()
    raise VideoDecodeError(f"{path}: no video stream")
  return container


def _container_count(container: av.container.InputContainer) -> int:
  # mp4 stores the exact count (stts); mkv/webm/some avi store 0.
  return max(int(container.streams.video[0].frames), 0)


def _demux_count(path: str) -> int:
  """Counts packets of the video stream (no decoding: ~100x cheaper than decoding)."""
  container = _open(path)
  try:
    stream = container.streams.video[0]
    return sum(1 for packet in container.demux(stream) if packet.size > 0)
  except _DECODE_ERRORS as e:
    raise VideoDecodeError(f"{path}: cannot demux ({e})") from e
  finally:
    container.close()


def count_frames(path: str) -> int:
  """Frames in the first video stream: the container's count, else by demuxing.

  The result may still overstate what decodes (truncated files); `read_frames` reports that
  with VideoTooShortError.
  """
  container = _open(path)
  try:
    count = _container_count(container)
  finally:
    container.close()
  return count if count > 0 else _demux_count(path)


def _decode(container: av.container.InputContainer, path: str,
            indices: Sequence[int]) -> np.ndarray:
  """uint8 (len(indices), H, W, 3) from an open container, decoding up to max(indices)."""
  wanted = {int(i) for i in indices}
  last = max(wanted)
  found: dict[int, np.ndarray] = {}
  decoded = 0
  stream = container.streams.video[0]
  # One thread per decoder: parallelism comes from decoding many videos at once (grain threads
  # and workers); FFmpeg's own thread pool costs more to start than it saves on short clips.
  stream.thread_count = 1
  try:
    for t, frame in enumerate(container.decode(stream)):
      decoded = t + 1
      if t in wanted:
        found[t] = frame.to_ndarray(format="rgb24")   # only wanted frames pay for RGB conversion
      if t >= last:
        break
  except _DECODE_ERRORS as e:
    raise VideoTooShortError(f"{path}: decoding failed after {decoded} frames ({e})",
                             available=decoded) from e
  missing = sorted(wanted - found.keys())
  if missing:
    raise VideoTooShortError(f"{path}: the stream ends after {decoded} frames; frame "
                             f"{missing[0]} was asked for", available=decoded)
  return np.stack([found[int(i)] for i in indices])


def read_frames(path: str, indices: Sequence[int]) -> np.ndarray:
  """uint8 (len(indices), H, W, 3) RGB frames at `indices` (any order, repeats allowed).

  Raises:
    VideoDecodeError: unreadable file; VideoTooShortError if it ends before max(indices).
  """
  if len(indices) == 0 or min(int(i) for i in indices) < 0:
    raise ValueError(f"frame indices must be non-empty and >= 0, got {list(indices)}")
  container = _open(path)
  try:
    return _decode(container, path, indices)
  finally:
    container.close()


def read_sampled_frames(
    path: str, choose: Callable[[int], Sequence[int]]) -> tuple[np.ndarray, tuple[int, ...]]:
  """Opens `path`, asks `choose(num_frames)` for frame indices and decodes them.

  If the container overstated its length (or the file is truncated), `choose` is asked again
  with the number of frames that really decode, so a damaged but partly readable video still
  yields an item. The common case (a sound mp4) opens the file once.

  Returns:
    frames: uint8 (len(indices), H, W, 3); indices: the indices used.
  Raises:
    VideoDecodeError: unreadable file, or no frame decodes at all.
  """
  container = _open(path)
  try:
    num_frames = _container_count(container)
    if num_frames > 0:
      indices = tuple(int(i) for i in choose(num_frames))
      try:
        return _decode(container, path, indices), indices
      except VideoTooShortError as short:
        num_frames = short.available   # retried below within what does decode
        if num_frames < 1:
          raise VideoDecodeError(f"{path}: no frame decodes ({short})") from short
  finally:
    container.close()
  if num_frames == 0:   # the container did not say
    num_frames = _demux_count(path)
  for _ in range(2):   # packet counts can overstate too (undecodable packets)
    if num_frames < 1:
      raise VideoDecodeError(f"{path}: the video stream has no decodable frame")
    indices = tuple(int(i) for i in choose(num_frames))
    try:
      return read_frames(path, indices), indices
    except VideoTooShortError as short:
      num_frames = short.available
  raise VideoDecodeError(f"{path}: the number of decodable frames keeps shrinking")
