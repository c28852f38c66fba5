"""YouTube-VOS 2019 valid / test folders for semi-supervised segmentation.

Layout (the challenge's valid.zip / test.zip):
  ROOT/JPEGImages/<video>/00000.jpg 00005.jpg ...   the frames to segment (every 5th frame)
  ROOT/Annotations/<video>/00000.png ...             palette PNGs, given only on the frames where
                                                     objects first appear (pixel value = object id)
  ROOT/meta.json   {"videos": {video: {"objects": {"1": {"category": ..., "frames": [...]}}}}}

Objects may first appear after frame 0 and ids need not be consecutive. A valid_all_frames
sibling (every frame) exists too; the server scores only the frames of JPEGImages/, so this reader
uses ROOT's JPEGImages/ as given (point --root at valid/, not valid_all_frames/). Void (255)
reads as background, as in DAVIS. Anything malformed is a `davis.VosDataError` naming the video,
the frame and the file.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

import numpy as np

from dropmae_jax.data import images
from dropmae_jax.vos import davis

META_FILE = "meta.json"


def is_youtube_root(root: str) -> bool:
  """A YouTube-VOS valid / test folder (meta.json beside JPEGImages/ and no DAVIS ImageSets/)."""
  return (os.path.isfile(os.path.join(root, META_FILE))
          and not os.path.isdir(os.path.join(root, "ImageSets")))


class YouTubeVOS:
  """A YouTube-VOS valid / test folder; frames and masks are read on demand.

  Args:
    root: folder holding JPEGImages/, Annotations/ and meta.json.
    sequences: video names to use instead of meta.json's (all of them, sorted).
  """

  def __init__(self, root: str, sequences: Sequence[str] | None = None):
    self.root = root
    self.image_dir = os.path.join(root, "JPEGImages")
    self.mask_dir = os.path.join(root, "Annotations")
    meta_path = os.path.join(root, META_FILE)
    for path in (self.image_dir, self.mask_dir):
      if not os.path.isdir(path):
        raise davis.VosDataError(f"{path}: not found (expected the YouTube-VOS layout "
                                 "JPEGImages/<video>, Annotations/<video>, meta.json)")
    try:
      with open(meta_path) as f:
        self.meta = json.load(f)["videos"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise davis.VosDataError(f"{meta_path}: not a YouTube-VOS meta.json "
                               f"({{'videos': {{video: {{'objects': ...}}}}}}; "
                               f"{type(e).__name__}: {e})") from e
    self.names = sorted(self.meta) if sequences is None else list(sequences)
    unknown = [n for n in self.names if n not in self.meta]
    if unknown:
      raise davis.VosDataError(f"{meta_path}: no video {unknown[0]!r}")
    if not self.names:
      raise davis.VosDataError(f"{meta_path}: no videos")

  def __len__(self) -> int:
    return len(self.names)

  def __iter__(self) -> Iterator[davis.VosSequence]:
    for name in self.names:
      yield self.sequence(name)

  def sequence(self, name: str) -> davis.VosSequence:
    folder = os.path.join(self.image_dir, name)
    frames = sorted(f for f in os.listdir(folder) if f.lower().endswith(".jpg")) \
        if os.path.isdir(folder) else []
    if not frames:
      raise davis.VosDataError(f"video {name}: no JPEG frames in {folder}")
    annotations = []
    for frame in frames:
      png = os.path.join(self.mask_dir, name, os.path.splitext(frame)[0] + ".png")
      annotations.append(png if os.path.isfile(png) else None)
    return davis.VosSequence(name, tuple(os.path.join(folder, f) for f in frames),
                             tuple(annotations))

  def read_frame(self, seq: davis.VosSequence, t: int,
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 (H, W, 3) RGB of frame t; `size` (H, W), when given, must be its size."""
    try:
      image = images.read_rgb(seq.frames[t])
    except images.ImageReadError as e:
      raise davis.VosDataError(f"video {seq.name} frame {seq.frame_ids[t]}: {e}") from e
    if size is not None and image.shape[:2] != tuple(size):
      raise davis.VosDataError(f"video {seq.name} frame {seq.frame_ids[t]}: {seq.frames[t]} is "
                               f"{image.shape[1]}x{image.shape[0]}, the first frame "
                               f"{size[1]}x{size[0]}")
    return image

  def annotations(self, seq: davis.VosSequence, size: tuple[int, int]) -> dict[int, np.ndarray]:
    """{frame index: uint8 (H, W) ids} of the given annotations (void 255 -> 0), checked
    against the frame size and meta.json (each object present on the first frame it lists)."""
    out: dict[int, np.ndarray] = {}
    for t, path in enumerate(seq.annotations):
      if path is None:
        continue
      ids = davis.read_ids_png(path)
      if ids.shape != tuple(size):
        raise davis.VosDataError(f"video {seq.name} frame {seq.frame_ids[t]}: {path} is "
                                 f"{ids.shape[1]}x{ids.shape[0]}, the frame {size[1]}x{size[0]}")
      ids = np.where(ids == davis.VOID_ID, 0, ids).astype(np.uint8)
      if ids.any():
        out[t] = ids
    if not out:
      raise davis.VosDataError(f"video {seq.name}: no annotation in "
                               f"{os.path.join(self.mask_dir, seq.name)} holds an object")
    objects = self.meta[seq.name].get("objects", {})
    position = {f: t for t, f in enumerate(seq.frame_ids)}
    for key, info in objects.items():
      first = (info.get("frames") or [None])[0]
      t = position.get(first)
      if t is None:
        continue   # a frame outside JPEGImages/ (e.g. valid_all_frames' meta): not checked
      if t not in out or not (out[t] == int(key)).any():
        raise davis.VosDataError(f"video {seq.name} frame {first}: meta.json says object {key} "
                                 f"first appears here but "
                                 f"{seq.annotations[t] or 'no annotation'} does not hold it")
    return out
