"""The benchmark readers by name: open one split lazily, or load all its sequences."""
from __future__ import annotations

import os
from typing import Callable

from dropmae_jax.track.datasets.base import Benchmark
from dropmae_jax.track.datasets.files import read_name_list
from dropmae_jax.track.datasets.got10k import Got10k
from dropmae_jax.track.datasets.lasot import LaSOT
from dropmae_jax.track.datasets.otb import OTB
from dropmae_jax.track.datasets.sequence import DatasetError, Sequence
from dropmae_jax.track.datasets.trackingnet import TrackingNet
from dropmae_jax.track.datasets.uav import UAV123

BENCHMARKS = ("got10k", "lasot", "trackingnet", "uav", "otb")

_READERS: dict[str, Callable[[str, str], Benchmark]] = {
    "got10k": Got10k, "lasot": LaSOT, "trackingnet": TrackingNet, "uav": UAV123, "otb": OTB}


def open_benchmark(benchmark: str, root: str, split: str,
                   split_file: str | None = None) -> Benchmark:
  """The lazy reader of a benchmark split (names listed now, sequences read by `.sequence(name)`).

  `split_file` (one sequence name a line) restricts the split to those sequences, in that order.
  """
  if benchmark not in _READERS:
    raise DatasetError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")
  if not os.path.isdir(root):
    raise DatasetError(f"{root}: no such {benchmark} root folder")
  reader = _READERS[benchmark](root, split)
  if split_file:
    reader.restrict(read_name_list(split_file), split_file)
  return reader


def load_dataset(benchmark: str, root: str, split: str,
                 split_file: str | None = None) -> list[Sequence]:
  """Every sequence of a benchmark split, ground truth read and validated."""
  return list(open_benchmark(benchmark, root, split, split_file))

