"""Video files in and out with PyAV, on threads: a decoder a few frames ahead of its consumer and
an H.264 encoder that draws each frame's overlay on its own thread. Shared by the commands that
run a model over a video (`track video`, `vos video`).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

# Output containers by file extension.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}


class VideoFileError(ValueError):
  """A video that cannot be read or written; one line naming the file."""


def first_line(e: BaseException) -> str:
  return " ".join(str(e).split())[:200] or type(e).__name__


class FrameReader:
  """Decodes a video's frames (RGB uint8) on a thread, a few frames ahead of their consumer.

  `first` is the first frame (decoded at once, so an unreadable file fails here); `rest()` yields
  the others; `count` is the container's frame count (0 when unknown), `rate` its frame rate.
  Errors are VideoFileError lines naming the file ('--video PATH: ...').
  """

  def __init__(self, path: str, max_frames: int):
    import av
    from dropmae_jax.data import av_compat
    self._av = av
    try:
      self.container = av_compat.open_input(path)
    except (av.FFmpegError, OSError, ValueError) as e:
      raise VideoFileError(f"--video {path}: cannot open ({first_line(e)})") from e
    if not self.container.streams.video:
      self.container.close()
      raise VideoFileError(f"--video {path}: no video stream")
    self.path = path
    self.stream = self.container.streams.video[0]
    self.stream.thread_type = "AUTO"
    self.rate = av_compat.frame_rate(self.stream)
    count = max(int(self.stream.frames or 0), 0)
    self.count = min(count, max_frames) if max_frames > 0 else count
    self.max_frames = max_frames
    self._queue: queue.Queue = queue.Queue(maxsize=8)
    self._stop = threading.Event()
    self._thread = None
    self._frames = self._decode()
    try:
      self.first = self._next()
    except VideoFileError:
      self.close()
      raise
    if self.first is None:
      self.close()
      raise VideoFileError(f"--video {path}: no frame decodes")

  def _decode(self):
    produced = 0
    try:
      for frame in self.container.decode(self.stream):
        yield frame.to_ndarray(format="rgb24")
        produced += 1
        if self.max_frames and produced >= self.max_frames:
          return
    except (self._av.FFmpegError, OSError, ValueError, EOFError) as e:
      raise VideoFileError(f"--video {self.path}: decoding failed after {produced} frames "
                            f"({first_line(e)})") from e

  def _next(self):
    return next(self._frames, None)

  def _fill(self):
    try:
      for frame in self._frames:
        if self._stop.is_set():
          return
        self._queue.put(frame)
      self._queue.put(None)
    except BaseException as e:  # handed to the consumer
      self._queue.put(e)

  def rest(self):
    """The frames after the first, in order."""
    self._thread = threading.Thread(target=self._fill, daemon=True, name="video-decode")
    self._thread.start()
    while True:
      item = self._queue.get()
      if item is None:
        return
      if isinstance(item, BaseException):
        raise item
      yield item

  def close(self):
    """Stops the decoding thread (if any) before the container is closed under it."""
    self._stop.set()
    while self._thread is not None and self._thread.is_alive():
      try:
        self._queue.get(timeout=0.1)
      except queue.Empty:
        pass
    self.container.close()


def _first_line(e: BaseException) -> str:
  return " ".join(str(e).split())[:200] or type(e).__name__


class FrameWriter:
  """Encodes frames with H.264 into `path` on a thread; `draw(frame, payload)` -> the RGB image
  to encode (the overlay is drawn on the encoding thread too)."""

  def __init__(self, path: str, fmt: str, width: int, height: int, rate,
               draw: Callable[[np.ndarray, Any], np.ndarray]):
    import av
    self.path = path
    self.container = av.open(path, mode="w", format=fmt)
    self.stream = self.container.add_stream("libx264", rate=rate)
    # yuv420p wants even sizes: an odd last row / column is repeated.
    self.width, self.height = width + width % 2, height + height % 2
    self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
    self.stream.options = {"preset": "veryfast", "crf": "20"}
    self._av = av
    self._draw = draw
    self._queue: queue.Queue = queue.Queue(maxsize=8)
    self.error: BaseException | None = None
    self._thread = threading.Thread(target=self._run, daemon=True, name="video-encode")
    self._thread.start()

  def put(self, frame: np.ndarray, payload) -> None:
    if self.error is not None:
      raise self.error
    self._queue.put((frame, payload))

  def _run(self):
    try:
      while True:
        item = self._queue.get()
        if item is None:
          break
        frame, payload = item
        image = self._draw(frame, payload)
        if image.shape[:2] != (self.height, self.width):
          image = np.pad(image, ((0, self.height - image.shape[0]),
                                 (0, self.width - image.shape[1]), (0, 0)), mode="edge")
        video_frame = self._av.VideoFrame.from_ndarray(image, format="rgb24")
        for packet in self.stream.encode(video_frame):
          self.container.mux(packet)
      for packet in self.stream.encode():
        self.container.mux(packet)
    except BaseException as e:  # reported by put / finish
      self.error = e
      while self._queue.get() is not None:   # let the producer finish
        pass

  def finish(self) -> None:
    self._queue.put(None)
    self._thread.join()
    self.container.close()
    if self.error is not None:
      raise self.error

  def abandon(self) -> None:
    if self._thread.is_alive():
      self._queue.put(None)
      self._thread.join()
    try:
      self.container.close()
    except Exception:  # pylint: disable=broad-except
      pass
