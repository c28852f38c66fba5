"""The lazy reader every benchmark split is: names listed up front, one sequence read on demand."""
from __future__ import annotations

import os
from typing import Iterator, Sequence as SequenceType

import numpy as np

from dropmae_jax.track.datasets.files import read_table
from dropmae_jax.track.datasets.sequence import DatasetError, Sequence


class Benchmark:
  """A benchmark split: `names` is cheap (directory listing / tables), `sequence(name)` reads one."""
  dataset = ""

  def __init__(self, root: str, split: str, names: list[str]):
    self.root, self.split, self.names = root, split, names

  def sequence(self, name: str) -> Sequence:
    raise NotImplementedError

  def __len__(self) -> int:
    return len(self.names)

  def __iter__(self) -> Iterator[Sequence]:
    return (self.sequence(n) for n in self.names)

  def restrict(self, names: SequenceType[str], source: str) -> None:
    """Keep only `names` (a --split-file), in that order; each must be in this split."""
    unknown = [n for n in names if n not in set(self.names)]
    if unknown:
      raise DatasetError(f"{source}: {len(unknown)} sequence(s) not in {self.dataset} split "
                         f"{self.split!r} under {self.root}: {unknown[:5]}")
    self.names = list(names)



class TableBenchmark(Benchmark):
  """Benchmarks defined by a fixed table of (sub)sequences (UAV123, OTB-2015)."""
  SPLITS = ("test", "all")

  def __init__(self, root: str, split: str, entries: dict[str, tuple], marker: str):
    if split not in self.SPLITS:
      raise DatasetError(f"{self.dataset} split must be one of {self.SPLITS}, got {split!r}")
    self.entries = entries
    super().__init__(root, split, list(entries))
    self._marker = marker

  def _frames_and_gt(self, name: str, folder: str, first: int, last: int, digits: int,
                     anno: str, omit: int, allow_nan: bool) -> tuple[list[str], np.ndarray]:
    if not os.path.isdir(folder):
      raise DatasetError(f"{folder}: missing frames folder for sequence {name!r} "
                         f"(expected {self._marker})")
    frames = [os.path.join(folder, f"{i:0{digits}d}.jpg") for i in range(first + omit, last + 1)]
    gt = read_table(anno, 4, allow_nan=allow_nan, what="box values (x,y,w,h)")
    if gt.shape[0] != last - first + 1:
      raise DatasetError(f"{anno}: {gt.shape[0]} boxes, expected {last - first + 1} for frames "
                         f"{first}..{last}")
    return frames, gt[omit:]

