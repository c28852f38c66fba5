"""TrackingNet (the layout OSTrack's `lib/test/evaluation/trackingnetdataset.py` reads).

  ROOT/<chunk>/{anno/<seq>.txt, frames/<seq>/<i>.jpg (from 0)}; chunk TEST (first-frame
  box only) or TRAIN_0..TRAIN_11; split 'test', 'train' (all TRAIN_* found) or a chunk name.
"""
from __future__ import annotations

import os
import re

from dropmae_jax.track.datasets.base import Benchmark
from dropmae_jax.track.datasets.files import read_table, sorted_frames
from dropmae_jax.track.datasets.sequence import DatasetError, Sequence


class TrackingNet(Benchmark):
  dataset = "trackingnet"

  def __init__(self, root: str, split: str):
    if split == "test":
      chunks = ["TEST"]
    elif split == "train":
      chunks = [f"TRAIN_{i}" for i in range(12) if os.path.isdir(os.path.join(root, f"TRAIN_{i}"))]
      if not chunks:
        raise DatasetError(f"{root} does not look like TrackingNet: no TRAIN_0..TRAIN_11 folders")
    elif re.fullmatch(r"TEST|TRAIN_\d+", split):
      chunks = [split]
    else:
      raise DatasetError(f"trackingnet split must be 'test', 'train' or a chunk (TEST, TRAIN_<i>), "
                         f"got {split!r}")
    self.chunk_of: dict[str, str] = {}
    for chunk in chunks:
      anno_dir = os.path.join(root, chunk, "anno")
      if not os.path.isdir(anno_dir):
        raise DatasetError(f"{root} does not look like TrackingNet: expected {anno_dir} "
                           f"(layout ROOT/<chunk>/{{anno/<seq>.txt, frames/<seq>/<i>.jpg}})")
      for f in sorted(os.listdir(anno_dir)):
        if f.endswith(".txt"):
          if f[:-4] in self.chunk_of:
            raise DatasetError(f"{os.path.join(anno_dir, f)}: sequence {f[:-4]!r} is also in "
                               f"{self.chunk_of[f[:-4]]}")
          self.chunk_of[f[:-4]] = chunk
    if not self.chunk_of:
      raise DatasetError(f"{root}: no annotation files in {chunks}/anno/")
    super().__init__(root, split, list(self.chunk_of))

  def sequence(self, name: str) -> Sequence:
    chunk = self.chunk_of[name]
    anno = os.path.join(self.root, chunk, "anno", f"{name}.txt")
    gt = read_table(anno, 4, what="box values (x,y,w,h)")
    frames = sorted_frames(os.path.join(self.root, chunk, "frames", name), 0)
    if chunk == "TEST":
      if gt.shape[0] != 1:
        raise DatasetError(f"{anno}: the test split has the first frame's box only, found "
                           f"{gt.shape[0]} lines")
    elif gt.shape[0] != len(frames):
      raise DatasetError(f"{anno}: {gt.shape[0]} boxes for {len(frames)} frames")
    return Sequence(name, frames, gt, self.dataset)
