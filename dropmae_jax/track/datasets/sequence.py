"""The tracking sequence every benchmark reader returns, and the error every malformed input raises.

Boxes are float64 (x, y, w, h), x/y the top-left pixel.
"""
from __future__ import annotations

import dataclasses

import numpy as np


class DatasetError(ValueError):
  """A benchmark folder or annotation file that does not have the expected layout or content."""


@dataclasses.dataclass
class Sequence:
  """One tracking sequence.

  `ground_truth` is (N, 4) for fully annotated splits, N == len(frames), or (1, 4) where the benchmark
  withholds all but the first frame (GOT-10k / TrackingNet test). NaN rows mark frames the benchmark
  annotates as unknown (UAV123). `target_visible` (N,) bool and `cover` (N,) int (GOT-10k, 0..8) are
  None where the benchmark has no such labels. `image_size` is (W, H) where the benchmark states it
  (GOT-10k meta_info.ini), else None (read the first frame's header: `frame_size`).
  """
  name: str
  frames: list[str]
  ground_truth: np.ndarray
  dataset: str
  target_visible: np.ndarray | None = None
  cover: np.ndarray | None = None
  image_size: tuple[int, int] | None = None

  def __post_init__(self):
    gt = np.asarray(self.ground_truth, np.float64)
    if gt.ndim != 2 or gt.shape[1] != 4 or gt.shape[0] < 1:
      raise DatasetError(f"{self.dataset}/{self.name}: ground truth must be (N, 4), got {gt.shape}")
    if gt.shape[0] not in (1, len(self.frames)):
      raise DatasetError(f"{self.dataset}/{self.name}: {gt.shape[0]} ground-truth rows for "
                         f"{len(self.frames)} frames")
    self.ground_truth = gt
    for field, dtype in (("target_visible", bool), ("cover", np.int64)):
      value = getattr(self, field)
      if value is not None:
        value = np.asarray(value, dtype)
        if value.shape != (gt.shape[0],):
          raise DatasetError(f"{self.dataset}/{self.name}: {field} has shape {value.shape}, "
                             f"ground truth has {gt.shape[0]} rows")
        setattr(self, field, value)

  def __len__(self) -> int:
    return len(self.frames)

  @property
  def init_box(self) -> np.ndarray:
    """(4,) the first frame's box: what a tracker is initialised with."""
    return self.ground_truth[0]

  @property
  def fully_annotated(self) -> bool:
    """Whether every frame has ground truth (False for the withheld test splits)."""
    return self.ground_truth.shape[0] == len(self.frames)


def frame_size(path: str) -> tuple[int, int]:
  """(W, H) of an image from its header only (PIL decodes no pixels for `.size`)."""
  from PIL import Image
  try:
    with Image.open(path) as im:
      return int(im.size[0]), int(im.size[1])
  except (OSError, ValueError) as e:
    raise DatasetError(f"{path}: cannot read the image header ({e})") from e

