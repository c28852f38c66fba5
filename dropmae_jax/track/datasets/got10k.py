"""GOT-10k (the layout the GOT-10k toolkit and OSTrack's `lib/test/evaluation/got10kdataset.py` read).

  ROOT/{train,val,test}/list.txt, ROOT/<split>/<seq>/{00000001.jpg.., groundtruth.txt,
  absence.label, cover.label, cut_by_image.label, meta_info.ini}; the test split's
  groundtruth.txt holds only the first frame's box and no labels.
"""
from __future__ import annotations

import os
import re

import numpy as np

from dropmae_jax.track.datasets.base import Benchmark
from dropmae_jax.track.datasets.files import read_name_list, read_table, sorted_frames
from dropmae_jax.track.datasets.sequence import DatasetError, Sequence


def _read_meta_resolution(path: str) -> tuple[int, int] | None:
  """GOT-10k meta_info.ini ('[METAINFO]' then 'key: value' lines) -> the 'resolution: (W, H)' entry."""
  if not os.path.isfile(path):
    return None
  with open(path, "r", encoding="utf-8", errors="replace") as f:
    for line_no, line in enumerate(f, 1):
      key, sep, value = line.partition(":")
      if sep and key.strip() == "resolution":
        numbers = re.findall(r"\d+", value)
        if len(numbers) != 2:
          raise DatasetError(f"{path}:{line_no}: resolution {value.strip()!r} is not '(W, H)'")
        return int(numbers[0]), int(numbers[1])
  return None



class Got10k(Benchmark):
  dataset = "got10k"
  SPLITS = ("train", "val", "test")

  def __init__(self, root: str, split: str):
    if split not in self.SPLITS:
      raise DatasetError(f"got10k split must be one of {self.SPLITS}, got {split!r}")
    list_file = os.path.join(root, split, "list.txt")
    if not os.path.isfile(list_file):
      raise DatasetError(f"{root} does not look like GOT-10k: expected {list_file} "
                         f"(layout ROOT/{{train,val,test}}/list.txt + ROOT/<split>/<seq>/)")
    super().__init__(root, split, read_name_list(list_file))

  def sequence(self, name: str) -> Sequence:
    seq_dir = os.path.join(self.root, self.split, name)
    if not os.path.isdir(seq_dir):
      raise DatasetError(f"{seq_dir}: sequence {name!r} of list.txt has no folder")
    frames = sorted_frames(seq_dir, 1)
    gt_file = os.path.join(seq_dir, "groundtruth.txt")
    gt = read_table(gt_file, 4, what="box values (x,y,w,h)")
    if self.split == "test":
      if gt.shape[0] != 1:
        raise DatasetError(f"{gt_file}: the test split has the first frame's box only, found "
                           f"{gt.shape[0]} lines")
      return Sequence(name, frames, gt, self.dataset, image_size=_read_meta_resolution(
          os.path.join(seq_dir, "meta_info.ini")))
    if gt.shape[0] != len(frames):
      raise DatasetError(f"{gt_file}: {gt.shape[0]} boxes for {len(frames)} frames in {seq_dir}")
    labels = {}
    for label in ("absence", "cover"):
      path = os.path.join(seq_dir, f"{label}.label")
      if os.path.isfile(path):
        values = read_table(path, 1, what=f"{label} label")
        if values.shape[0] != gt.shape[0]:
          raise DatasetError(f"{path}: {values.shape[0]} lines, groundtruth.txt has {gt.shape[0]}")
        if np.any(values != np.round(values)) or values.min() < 0 or values.max() > (
            8 if label == "cover" else 1):
          raise DatasetError(f"{path}: values must be integers in [0, "
                             f"{8 if label == 'cover' else 1}]")
        labels[label] = values.astype(np.int64)
    if "absence" in labels:
      visible = labels["absence"] == 0
    elif "cover" in labels:
      visible = labels["cover"] > 0
    else:
      visible = None
    return Sequence(name, frames, gt, self.dataset, target_visible=visible,
                    cover=labels.get("cover"),
                    image_size=_read_meta_resolution(os.path.join(seq_dir, "meta_info.ini")))
