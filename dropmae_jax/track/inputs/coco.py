"""COCO-2017 instances as one-frame tracking "sequences" (OSTrack's `MSCOCOSeq`, DropTrack layout).

Layout (DropTrack reads COCO without lmdb and drops OSTrack's `images/` level; DropTrack
`lib/train/dataset/coco_seq.py`):

  ROOT/annotations/instances_<split>.json     e.g. instances_train2017.json
  ROOT/<split>/<file_name>                    e.g. ROOT/train2017/000000000009.jpg

Every annotation with iscrowd == 0 is one sequence, in the json's annotation order (pycocotools
builds `coco.anns` in that order and OSTrack lists its keys). The box is the annotation's `bbox`
(x, y, w, h) in pixels; the sampler uses the same image as template and search frame. OSTrack's
`valid = w > 50 and h > 50` is never consulted for an image dataset (the sampler skips the
visibility check), so small boxes are kept here too and the processing rejects the degenerate ones.

Bad input is skipped and counted (`CocoInstances.stats`), never fatal on its own: crowd
annotations, images whose only annotations are crowds, and annotation entries that are not
a dict with a 4-number bbox and a known image_id. A json that does not parse, or that holds no
usable instance at all, raises `DatasetError` naming the file (and line:column for a parse error).
Unreadable image files are found when an item reads them (the sampler resamples and counts).
The annotations are kept as compact arrays, so the table is cheap to pickle into grain workers.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from dropmae_jax.track.datasets import DatasetError


@dataclasses.dataclass
class CocoInstances:
  """The usable (non-crowd) instance annotations of one COCO split.

  boxes: float64 (N, 4) x, y, w, h in pixels; image_index: int32 (N,) into `files`;
  files: image paths (absolute: image_dir joined with the json's file_name);
  stats: counts of what was skipped while reading (crowd, crowd_only_images, malformed).
  """
  annotation_file: str
  image_dir: str
  boxes: np.ndarray
  image_index: np.ndarray
  files: list[str]
  stats: dict[str, int]

  def __len__(self) -> int:
    return int(self.boxes.shape[0])

  def image_path(self, i: int) -> str:
    """The image file of instance i."""
    return self.files[int(self.image_index[i])]


def annotation_path(root: str, split: str) -> str:
  """ROOT/annotations/instances_<split>.json (split e.g. 'train2017')."""
  return os.path.join(root, "annotations", f"instances_{split}.json")


def _as_box(value) -> tuple[float, float, float, float] | None:
  if not isinstance(value, (list, tuple)) or len(value) != 4:
    return None
  try:
    box = tuple(float(v) for v in value)
  except (TypeError, ValueError):
    return None
  return box if all(math.isfinite(v) for v in box) else None


def load_coco_instances(root: str, split: str = "train2017") -> CocoInstances:
  """Reads ROOT/annotations/instances_<split>.json -> CocoInstances (see the module docstring).

  Raises:
    DatasetError: a missing or unparsable json (naming file:line:column), a json without the
      'images' / 'annotations' lists, or one with no usable non-crowd instance.
  """
  path = annotation_path(root, split)
  if not os.path.isfile(path):
    raise DatasetError(f"{path}: no such file (expected COCO instance annotations; layout "
                       f"ROOT/annotations/instances_{split}.json + ROOT/{split}/<file_name>)")
  try:
    with open(path, "r", encoding="utf-8") as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise DatasetError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
  except (OSError, UnicodeDecodeError) as e:
    raise DatasetError(f"{path}: cannot read ({e})") from None
  if not isinstance(data, dict):
    raise DatasetError(f"{path}: top level is a {type(data).__name__}, expected an object with "
                       f"'images' and 'annotations'")
  for key in ("images", "annotations"):
    if not isinstance(data.get(key), list):
      raise DatasetError(f"{path}: missing the '{key}' list (is this an instances_*.json file?)")
  image_dir = os.path.join(root, split)
  image_slot: dict[int, int] = {}
  files: list[str] = []
  malformed = 0
  for entry in data["images"]:
    if (not isinstance(entry, dict) or not isinstance(entry.get("id"), int)
        or not isinstance(entry.get("file_name"), str)):
      malformed += 1
      continue
    image_slot[entry["id"]] = len(files)
    files.append(os.path.join(image_dir, entry["file_name"]))
  boxes: list[tuple[float, float, float, float]] = []
  image_index: list[int] = []
  crowd = 0
  crowd_images: set[int] = set()
  usable_images: set[int] = set()
  for entry in data["annotations"]:
    if not isinstance(entry, dict):
      malformed += 1
      continue
    slot = image_slot.get(entry.get("image_id")) if isinstance(entry.get("image_id"), int) else None
    box = _as_box(entry.get("bbox"))
    if slot is None or box is None:
      malformed += 1
      continue
    if entry.get("iscrowd", 0):
      crowd += 1
      crowd_images.add(slot)
      continue
    boxes.append(box)
    image_index.append(slot)
    usable_images.add(slot)
  stats = {"instances": len(boxes), "crowd": crowd,
           "crowd_only_images": len(crowd_images - usable_images), "malformed": malformed}
  if not boxes:
    raise DatasetError(
        f"{path}: no usable instance annotation (need iscrowd 0, a 4-number bbox and a known "
        f"image_id): {crowd} crowd annotations on {stats['crowd_only_images']} crowd-only "
        f"images, {malformed} malformed entries")
  return CocoInstances(annotation_file=path, image_dir=image_dir,
                       boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
                       image_index=np.asarray(image_index, np.int32), files=files, stats=stats)
