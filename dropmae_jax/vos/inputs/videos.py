"""The training videos of DropSeg: DAVIS-2017 train and YouTube-VOS 2019 train_480p folders.

jimmy-dq/DropSeg `train_dropseg.py` (stage 3) trains on
`ConcatDataset([davis] * 5 + [youtube])` of `dataset/vos_dataset.py` `VOSDataset`s, where

  DAVIS:        ROOT/JPEGImages/480p/<seq>/*.jpg, ROOT/Annotations/480p/<seq>/<stem>.png,
                the 60 videos of `util/davis_subset.txt` (= ImageSets/2017/train.txt), max_jump 25
  YouTube-VOS:  ROOT/JPEGImages/<video>/*.jpg, ROOT/Annotations/<video>/<stem>.png (train_480p:
                every JPEG has its PNG), the 3,464 videos of `util/yv_subset.txt`, max_jump 25 // 5

A video's frames are its sorted JPEG names; the mask of a frame is the PNG of the same stem.
Videos with fewer than two frames are left out (released: `if len(frames) < 2: continue`).
Nothing but the folder listings is read here; frames and masks are read per item
(`pairs.VosItemMap`), which skips and counts unreadable ones.
"""
from __future__ import annotations

import dataclasses
import os

from absl import logging

from dropmae_jax.vos import davis


class VideoFolderError(ValueError):
  """A training root without the expected layout; the message names the folder."""


@dataclasses.dataclass(frozen=True)
class TrainingVideo:
  """One training video: where its frames and masks are, their stems, and its max_jump."""
  source: str                 # 'davis' | 'youtube'
  name: str
  image_dir: str
  mask_dir: str
  stems: tuple[str, ...]      # sorted frame names without '.jpg'
  max_jump: int

  @property
  def num_frames(self) -> int:
    return len(self.stems)

  def frame_path(self, t: int) -> str:
    return os.path.join(self.image_dir, self.stems[t] + ".jpg")

  def mask_path(self, t: int) -> str:
    return os.path.join(self.mask_dir, self.stems[t] + ".png")

  def describe(self) -> str:
    return f"{self.source}/{self.name}"


def _jpeg_stems(folder: str) -> tuple[str, ...]:
  names = os.listdir(folder) if os.path.isdir(folder) else []
  return tuple(sorted(os.path.splitext(f)[0] for f in names if f.lower().endswith(".jpg")))


def read_names_file(path: str) -> list[str]:
  """One video name a line (blank lines ignored), e.g. jimmy-dq/DropSeg `util/yv_subset.txt`."""
  if not os.path.isfile(path):
    raise VideoFolderError(f"{path}: video list not found")
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


def _collect(source: str, names: list[str], image_root: str, mask_root: str, max_jump: int,
             min_frames: int) -> list[TrainingVideo]:
  videos, short = [], 0
  for name in names:
    stems = _jpeg_stems(os.path.join(image_root, name))
    if len(stems) < min_frames:
      short += 1
      continue
    videos.append(TrainingVideo(source, name, os.path.join(image_root, name),
                                os.path.join(mask_root, name), stems, int(max_jump)))
  if short:
    logging.warning("%s: %d of %d videos left out (fewer than %d JPEG frames)", image_root,
                    short, len(names), min_frames)
  return videos


def _check_dirs(root: str, image_root: str, mask_root: str, layout: str) -> None:
  if not os.path.isdir(root):
    raise VideoFolderError(f"{root}: folder not found")
  for folder in (image_root, mask_root):
    if not os.path.isdir(folder):
      raise VideoFolderError(f"{folder}: not found (expected the {layout} layout)")


def davis_videos(root: str, subset: str = "train", max_jump: int = 25,
                 min_frames: int = 2) -> list[TrainingVideo]:
  """The videos of ROOT/ImageSets/2017/<subset>.txt in the DAVIS-2017 480p layout."""
  image_root = os.path.join(root, "JPEGImages", "480p")
  mask_root = os.path.join(root, "Annotations", "480p")
  _check_dirs(root, image_root, mask_root, "DAVIS (JPEGImages/480p, Annotations/480p)")
  list_file = os.path.join(root, "ImageSets", "2017", f"{subset}.txt")
  try:
    names = davis.read_sequence_list(list_file)
  except davis.VosDataError as e:
    raise VideoFolderError(str(e)) from e
  videos = _collect("davis", names, image_root, mask_root, max_jump, min_frames)
  if not videos:
    raise VideoFolderError(f"{list_file}: no video with at least {min_frames} frames")
  return videos


def youtube_videos(root: str, max_jump: int = 5, subset_file: str = "",
                   min_frames: int = 2) -> list[TrainingVideo]:
  """Every video folder of ROOT/JPEGImages (sorted), or only those named in `subset_file`."""
  image_root = os.path.join(root, "JPEGImages")
  mask_root = os.path.join(root, "Annotations")
  _check_dirs(root, image_root, mask_root, "YouTube-VOS train (JPEGImages/, Annotations/)")
  names = sorted(n for n in os.listdir(image_root)
                 if os.path.isdir(os.path.join(image_root, n)))
  if subset_file:
    keep = set(read_names_file(subset_file))
    names = [n for n in names if n in keep]
  videos = _collect("youtube", names, image_root, mask_root, max_jump, min_frames)
  if not videos:
    raise VideoFolderError(f"{image_root}: no video with at least {min_frames} frames"
                           + (f" among those of {subset_file}" if subset_file else ""))
  return videos
