"""Image files and pixel normalisation shared by every task.

One reader for the JPEG / PNG frames of tracking and segmentation datasets. The released code
reads with `cv2.imread` and converts BGR -> RGB (OSTrack / pytracking `opencv_loader`, DINO's
`read_frame`); `read_rgb` gives the same pixels (tests/data/test_images.py compares them):

  * JPEGs are decoded by libjpeg-turbo through `simplejpeg`, straight into RGB, with the settings
    cv2.imread uses (accurate integer DCT, smooth chroma upsampling), and the EXIF orientation
    applied as cv2.imread applies it. It is the fastest of the decoders measured on the same
    files (PIL, cv2.imdecode, simplejpeg: docs/performance.md), and needs no OpenCV.
  * Everything else (PNG, and the rare JPEGs libjpeg-turbo's RGB output refuses: CMYK, 12-bit)
    goes through Pillow. PNG is lossless, so any reader gives the same 8-bit pixels.

`DecodePool` decodes frames on a thread pool sized to the cores (libjpeg-turbo releases the GIL),
ahead of whoever consumes them. Also the ImageNet statistics the models normalise with.
"""
from __future__ import annotations

import concurrent.futures
import io
import os
import struct
import time

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # per RGB channel, on [0, 1] pixel values
IMAGENET_STD = (0.229, 0.224, 0.225)

_JPEG_SOI = b"\xff\xd8"


class ImageReadError(RuntimeError):
  """A missing or unreadable image file; the message names the file."""


def decode_threads() -> int:
  """Threads for decoding: the cores this process may run on."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:   # not on Linux
    return max(1, os.cpu_count() or 1)


def exif_orientation(data: bytes) -> int:
  """The EXIF orientation (1..8) stored in a JPEG's APP1 segment; 1 when there is none.

  Reads only the segments before the image data; a malformed EXIF block counts as none (as
  OpenCV and Pillow then ignore it too).
  """
  pos, end = 2, len(data)
  while pos + 4 <= end:
    if data[pos] != 0xFF:
      return 1
    marker = data[pos + 1]
    if marker == 0xFF:           # fill byte
      pos += 1
      continue
    if marker in (0xD9, 0xDA):   # EOI, SOS: no more header segments
      return 1
    length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
    if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
      return _tiff_orientation(data[pos + 10:pos + 2 + length])
    pos += 2 + length
  return 1


def _tiff_orientation(tiff: bytes) -> int:
  try:
    order = {b"II": "<", b"MM": ">"}[tiff[:2]]
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for i in range(count):
      entry = tiff[ifd + 2 + 12 * i:ifd + 14 + 12 * i]
      tag, kind = struct.unpack(order + "HH", entry[:4])
      if tag == 0x0112 and kind == 3:   # Orientation, SHORT
        (value,) = struct.unpack(order + "H", entry[8:10])
        return value if 1 <= value <= 8 else 1
  except (KeyError, struct.error):
    pass
  return 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
  """Turns a decoded (H, W, C) image upright as EXIF orientation 1..8 says (what cv2.imread does)."""
  if orientation == 2:
    image = image[:, ::-1]
  elif orientation == 3:
    image = image[::-1, ::-1]
  elif orientation == 4:
    image = image[::-1]
  elif orientation == 5:
    image = image.transpose(1, 0, 2)
  elif orientation == 6:
    image = image[::-1].transpose(1, 0, 2)      # 90 degrees clockwise
  elif orientation == 7:
    image = image[::-1, ::-1].transpose(1, 0, 2)
  elif orientation == 8:
    image = image[:, ::-1].transpose(1, 0, 2)   # 90 degrees anticlockwise
  else:
    return image
  return np.ascontiguousarray(image)


def _decode_jpeg(data: bytes) -> np.ndarray | None:
  """libjpeg-turbo's RGB decode, upright; None when it refuses the file (Pillow then tries)."""
  import simplejpeg   # local: only JPEGs need it
  try:
    image = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False)
  except ValueError:
    return None
  return apply_orientation(image, exif_orientation(data))


def _decode_pil(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))


def decode_rgb(data: bytes, name: str = "<bytes>") -> np.ndarray:
  """Encoded image bytes -> (H, W, 3) uint8 RGB, the pixels cv2.imdecode + BGR->RGB gives.

  Raises:
    ImageReadError: not an image, or a truncated / damaged one (message names `name`).
  """
  if data[:2] == _JPEG_SOI:
    image = _decode_jpeg(data)
    if image is not None:
      return image
  try:
    return _decode_pil(data)
  except (OSError, ValueError, SyntaxError) as e:  # PIL raises SyntaxError on some broken PNGs
    raise ImageReadError(f"{name}: cannot read image ({type(e).__name__}: {e})") from e


def read_rgb(path: str) -> np.ndarray:
  """An image file -> (H, W, 3) uint8 RGB (cv2.imread's pixels, converted to RGB).

  Raises:
    ImageReadError: the file is missing, truncated or not an image (message names the file).
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise ImageReadError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
  return decode_rgb(data, path)


def timed_read_rgb(path: str) -> tuple[np.ndarray, float]:
  """(read_rgb(path), the CPU seconds the calling thread spent on it)."""
  start = time.thread_time()
  image = read_rgb(path)
  return image, time.thread_time() - start


class DecodePool:
  """Decodes image files on `threads` threads (default: one per core), ahead of the consumer.

  `submit(path)` returns a future of (image, CPU seconds); `read_ahead(paths)` yields the images in
  order, keeping `depth` decodes in flight.
  """

  def __init__(self, threads: int | None = None):
    self.threads = threads or decode_threads()
    self._pool = concurrent.futures.ThreadPoolExecutor(self.threads,
                                                       thread_name_prefix="decode")

  def submit(self, path: str) -> concurrent.futures.Future:
    return self._pool.submit(timed_read_rgb, path)

  def read_ahead(self, paths, depth: int | None = None):
    depth = depth or 2 * self.threads
    pending = []
    for path in paths:
      pending.append(self.submit(path))
      if len(pending) > depth:
        yield pending.pop(0).result()[0]
    for future in pending:
      yield future.result()[0]

  def close(self) -> None:
    self._pool.shutdown(wait=True, cancel_futures=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
