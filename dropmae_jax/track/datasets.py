"""Single-object tracking benchmarks as they lie on disk, read lazily and validated.

Layouts (the ones pytracking / OSTrack's `lib/test/evaluation/*dataset.py` and the GOT-10k toolkit read):

  got10k       ROOT/{train,val,test}/list.txt, ROOT/<split>/<seq>/{00000001.jpg.., groundtruth.txt,
               absence.label, cover.label, cut_by_image.label, meta_info.ini}; the test split's
               groundtruth.txt holds only the first frame's box and no labels.
  lasot        ROOT/<class>/<class>-<n>/{img/00000001.jpg.., groundtruth.txt, full_occlusion.txt,
               out_of_view.txt}; split 'test' = the 280-sequence protocol-II list pytracking ships,
               'train' = every other sequence found, 'all' = every sequence found.
  trackingnet  ROOT/<chunk>/{anno/<seq>.txt, frames/<seq>/<i>.jpg (from 0)}; chunk TEST (first-frame
               box only) or TRAIN_0..TRAIN_11; split 'test', 'train' (all TRAIN_* found) or a chunk name.
  uav          ROOT/data_seq/UAV123/<folder>/000001.jpg.., ROOT/anno/UAV123/<seq>.txt (NaN rows = target
               absent); 123 (sub)sequences with pytracking's start/end frames and names (uav_<seq>).
  otb          ROOT/<seq>/img/0001.jpg.., ROOT/<seq>/groundtruth_rect*.txt (comma or whitespace); the 100
               OTB-2015 sequences with pytracking's start/end frames, names and Tiger1's 5 omitted frames.

Boxes are float64 (x, y, w, h), x/y the top-left pixel. Every malformed input raises `DatasetError`
naming the file (and line) at fault.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Callable, Iterator, Sequence as SequenceType

import numpy as np

BENCHMARKS = ("got10k", "lasot", "trackingnet", "uav", "otb")


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


# ------------------------------------------------------------------------------------------------
# Text files

_NUMBER = re.compile(r"[\s,]+")


def _split_fields(line: str) -> list[str]:
  """Comma-, tab- or space-separated fields (OTB mixes them; pytracking tries ',' then whitespace)."""
  return [f for f in _NUMBER.split(line.strip()) if f]


def read_table(path: str, columns: int, *, allow_nan: bool = False,
               what: str = "values") -> np.ndarray:
  """A numeric text file -> (N, columns) float64, or (N,) when columns == 1.

  Raises DatasetError naming `path:line` for a missing or empty file, a wrong number of values on a
  line, a non-number, or NaN / inf (NaN only where `allow_nan`: UAV123's absent-target rows).
  Trailing blank lines are ignored; a blank line in the middle is an error (it would shift frames).
  """
  if not os.path.isfile(path):
    raise DatasetError(f"{path}: no such file (expected {what})")
  with open(path, "r", encoding="utf-8", errors="replace") as f:
    lines = f.read().splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  if not lines:
    raise DatasetError(f"{path}: empty file (expected {what})")
  rows = np.empty((len(lines), columns), np.float64)
  for i, line in enumerate(lines):
    fields = _split_fields(line)
    if len(fields) != columns:
      raise DatasetError(f"{path}:{i + 1}: expected {columns} {what} per line, found {len(fields)} "
                         f"in {line.strip()[:60]!r}")
    for j, field in enumerate(fields):
      try:
        value = float(field)
      except ValueError:
        raise DatasetError(f"{path}:{i + 1}: {field!r} is not a number") from None
      if math.isinf(value) or (math.isnan(value) and not allow_nan):
        raise DatasetError(f"{path}:{i + 1}: {field!r} is not a finite number")
      rows[i, j] = value
  return rows[:, 0] if columns == 1 else rows


def read_flags(path: str, length: int) -> np.ndarray:
  """LaSOT's full_occlusion.txt / out_of_view.txt: comma-separated 0/1 on one line -> (length,) bool."""
  if not os.path.isfile(path):
    raise DatasetError(f"{path}: no such file (expected one line of comma-separated 0/1 flags)")
  with open(path, "r", encoding="utf-8", errors="replace") as f:
    text = f.read().strip()
  if not text:
    raise DatasetError(f"{path}: empty file (expected {length} comma-separated 0/1 flags)")
  values = []
  for line_no, line in enumerate(text.splitlines(), 1):
    for field in _split_fields(line):
      if field not in ("0", "1"):
        raise DatasetError(f"{path}:{line_no}: {field!r} is not 0 or 1")
      values.append(field == "1")
  if len(values) != length:
    raise DatasetError(f"{path}: {len(values)} flags, expected {length} (one per ground-truth line)")
  return np.asarray(values, bool)


def read_name_list(path: str) -> list[str]:
  """list.txt / a --split-file: one sequence name a line, blank lines ignored, duplicates an error."""
  if not os.path.isfile(path):
    raise DatasetError(f"{path}: no such file (expected a list of sequence names, one a line)")
  with open(path, "r", encoding="utf-8") as f:
    names = [line.strip() for line in f]
  names = [n for n in names if n]
  if not names:
    raise DatasetError(f"{path}: empty sequence list")
  seen = set()
  for i, n in enumerate(names):
    if n in seen:
      raise DatasetError(f"{path}: sequence {n!r} listed twice")
    seen.add(n)
  return names


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


def _sorted_frames(folder: str, first_index: int) -> list[str]:
  """A folder's numbered .jpg frames sorted by number; they must run first_index.. without gaps."""
  if not os.path.isdir(folder):
    raise DatasetError(f"{folder}: missing frames folder")
  numbered = []
  for f in os.listdir(folder):
    stem, ext = os.path.splitext(f)
    if ext.lower() == ".jpg":
      if not stem.isdigit():
        raise DatasetError(f"{os.path.join(folder, f)}: frame name is not a number")
      numbered.append((int(stem), f))
  if not numbered:
    raise DatasetError(f"{folder}: no .jpg frames")
  numbered.sort()
  expected = list(range(first_index, first_index + len(numbered)))
  if [n for n, _ in numbered] != expected:
    gap = next(e for (n, _), e in zip(numbered, expected) if n != e)
    raise DatasetError(f"{folder}: frames are not numbered {first_index}..{expected[-1]} "
                       f"without gaps (frame {gap} missing)")
  return [os.path.join(folder, f) for _, f in numbered]


# ------------------------------------------------------------------------------------------------
# Benchmarks


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
    frames = _sorted_frames(seq_dir, 1)
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


class LaSOT(Benchmark):
  dataset = "lasot"
  SPLITS = ("test", "train", "all")

  def __init__(self, root: str, split: str):
    if split not in self.SPLITS:
      raise DatasetError(f"lasot split must be one of {self.SPLITS}, got {split!r}")
    if not os.path.isdir(root):
      raise DatasetError(f"{root}: no such LaSOT root (expected ROOT/<class>/<class>-<n>/)")
    found = []
    for cls in sorted(os.listdir(root)):
      cls_dir = os.path.join(root, cls)
      if not os.path.isdir(cls_dir):
        continue
      for seq in os.listdir(cls_dir):
        if re.fullmatch(re.escape(cls) + r"-\d+", seq) and os.path.isdir(os.path.join(cls_dir, seq)):
          found.append(seq)
    found.sort(key=lambda s: (s.rsplit("-", 1)[0], int(s.rsplit("-", 1)[1])))
    if split == "test":
      missing = [n for n in LASOT_TEST_SEQUENCES if n not in set(found)]
      if missing:
        raise DatasetError(f"{root} does not hold the LaSOT test set: {len(missing)} of the 280 "
                           f"sequences missing, e.g. {missing[:3]} (expected ROOT/<class>/<class>-<n>/)")
      names = list(LASOT_TEST_SEQUENCES)
    else:
      names = found if split == "all" else [n for n in found if n not in set(LASOT_TEST_SEQUENCES)]
      if not names:
        raise DatasetError(f"{root} does not look like LaSOT: no ROOT/<class>/<class>-<n>/ folders"
                           + (" outside the test list" if split == "train" else ""))
    super().__init__(root, split, names)

  def sequence(self, name: str) -> Sequence:
    cls = name.rsplit("-", 1)[0]
    seq_dir = os.path.join(self.root, cls, name)
    gt = read_table(os.path.join(seq_dir, "groundtruth.txt"), 4, what="box values (x,y,w,h)")
    occluded = read_flags(os.path.join(seq_dir, "full_occlusion.txt"), gt.shape[0])
    out_of_view = read_flags(os.path.join(seq_dir, "out_of_view.txt"), gt.shape[0])
    img_dir = os.path.join(seq_dir, "img")
    if not os.path.isdir(img_dir):
      raise DatasetError(f"{img_dir}: missing frames folder")
    # As pytracking: one frame per ground-truth line (the folder may hold extra frames: monkey-17).
    frames = [os.path.join(img_dir, f"{i:08d}.jpg") for i in range(1, gt.shape[0] + 1)]
    return Sequence(name, frames, gt, self.dataset, target_visible=~(occluded | out_of_view))


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
    frames = _sorted_frames(os.path.join(self.root, chunk, "frames", name), 0)
    if chunk == "TEST":
      if gt.shape[0] != 1:
        raise DatasetError(f"{anno}: the test split has the first frame's box only, found "
                           f"{gt.shape[0]} lines")
    elif gt.shape[0] != len(frames):
      raise DatasetError(f"{anno}: {gt.shape[0]} boxes for {len(frames)} frames")
    return Sequence(name, frames, gt, self.dataset)


class _TableBenchmark(Benchmark):
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


class UAV123(_TableBenchmark):
  dataset = "uav"

  def __init__(self, root: str, split: str):
    for sub in ("data_seq/UAV123", "anno/UAV123"):
      if not os.path.isdir(os.path.join(root, sub)):
        raise DatasetError(f"{root} does not look like UAV123: expected {os.path.join(root, sub)} "
                           f"(layout ROOT/data_seq/UAV123/<seq>/, ROOT/anno/UAV123/<seq>.txt)")
    super().__init__(root, split, {f"uav_{e[0]}": e for e in UAV123_SEQUENCES},
                     "ROOT/data_seq/UAV123/<seq>/000001.jpg..")

  def sequence(self, name: str) -> Sequence:
    anno, folder, first, last = self.entries[name]
    frames, gt = self._frames_and_gt(
        name, os.path.join(self.root, "data_seq", "UAV123", folder), first, last, 6,
        os.path.join(self.root, "anno", "UAV123", f"{anno}.txt"), 0, allow_nan=True)
    return Sequence(name, frames, gt, self.dataset)


class OTB(_TableBenchmark):
  dataset = "otb"

  def __init__(self, root: str, split: str):
    if not os.path.isdir(root):
      raise DatasetError(f"{root}: no such OTB root (expected ROOT/<seq>/img/, "
                         f"ROOT/<seq>/groundtruth_rect.txt)")
    entries = {e[0]: e for e in OTB100_SEQUENCES}
    present = [n for n, e in entries.items() if os.path.isdir(os.path.join(root, e[1], "img"))]
    if not present:
      raise DatasetError(f"{root} does not look like OTB: none of the 100 sequence folders "
                         f"ROOT/<seq>/img/ exist (e.g. {os.path.join(root, 'Basketball', 'img')})")
    if split == "test" and len(present) != len(entries):
      missing = [n for n in entries if n not in set(present)]
      raise DatasetError(f"{root}: {len(missing)} OTB-100 sequences missing, e.g. {missing[:3]}; "
                         f"use --split=all to score the ones present")
    super().__init__(root, split, {n: entries[n] for n in present}, "ROOT/<seq>/img/0001.jpg..")

  def sequence(self, name: str) -> Sequence:
    _, folder, first, last, digits, anno, omit = self.entries[name]
    frames, gt = self._frames_and_gt(
        name, os.path.join(self.root, folder, "img"), first, last, digits,
        os.path.join(self.root, folder, anno), omit, allow_nan=False)
    return Sequence(name, frames, gt, self.dataset)


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


# ------------------------------------------------------------------------------------------------
# Benchmark tables, transcribed from pytracking (botaoye/OSTrack @ 33b5e12,
# lib/test/evaluation/{lasot,uav,otb}dataset.py).

# LaSOT protocol II: the 280 test sequences, 4 per class.
LASOT_TEST_SEQUENCES = (
  "airplane-1", "airplane-9", "airplane-13", "airplane-15", "basketball-1", "basketball-6",
  "basketball-7", "basketball-11", "bear-2", "bear-4", "bear-6", "bear-17", "bicycle-2", "bicycle-7",
  "bicycle-9", "bicycle-18", "bird-2", "bird-3", "bird-15", "bird-17", "boat-3", "boat-4", "boat-12",
  "boat-17", "book-3", "book-10", "book-11", "book-19", "bottle-1", "bottle-12", "bottle-14",
  "bottle-18", "bus-2", "bus-5", "bus-17", "bus-19", "car-2", "car-6", "car-9", "car-17", "cat-1",
  "cat-3", "cat-18", "cat-20", "cattle-2", "cattle-7", "cattle-12", "cattle-13", "spider-14",
  "spider-16", "spider-18", "spider-20", "coin-3", "coin-6", "coin-7", "coin-18", "crab-3", "crab-6",
  "crab-12", "crab-18", "surfboard-12", "surfboard-4", "surfboard-5", "surfboard-8", "cup-1", "cup-4",
  "cup-7", "cup-17", "deer-4", "deer-8", "deer-10", "deer-14", "dog-1", "dog-7", "dog-15", "dog-19",
  "guitar-3", "guitar-8", "guitar-10", "guitar-16", "person-1", "person-5", "person-10", "person-12",
  "pig-2", "pig-10", "pig-13", "pig-18", "rubicCube-1", "rubicCube-6", "rubicCube-14", "rubicCube-19",
  "swing-10", "swing-14", "swing-17", "swing-20", "drone-13", "drone-15", "drone-2", "drone-7",
  "pool-12", "pool-15", "pool-3", "pool-7", "rabbit-10", "rabbit-13", "rabbit-17", "rabbit-19",
  "racing-10", "racing-15", "racing-16", "racing-20", "robot-1", "robot-19", "robot-5", "robot-8",
  "sepia-13", "sepia-16", "sepia-6", "sepia-8", "sheep-3", "sheep-5", "sheep-7", "sheep-9",
  "skateboard-16", "skateboard-19", "skateboard-3", "skateboard-8", "tank-14", "tank-16", "tank-6",
  "tank-9", "tiger-12", "tiger-18", "tiger-4", "tiger-6", "train-1", "train-11", "train-20",
  "train-7", "truck-16", "truck-3", "truck-6", "truck-7", "turtle-16", "turtle-5", "turtle-8",
  "turtle-9", "umbrella-17", "umbrella-19", "umbrella-2", "umbrella-9", "yoyo-15", "yoyo-17",
  "yoyo-19", "yoyo-7", "zebra-10", "zebra-14", "zebra-16", "zebra-17", "elephant-1", "elephant-12",
  "elephant-16", "elephant-18", "goldfish-3", "goldfish-7", "goldfish-8", "goldfish-10", "hat-1",
  "hat-2", "hat-5", "hat-18", "kite-4", "kite-6", "kite-10", "kite-15", "motorcycle-1",
  "motorcycle-3", "motorcycle-9", "motorcycle-18", "mouse-1", "mouse-8", "mouse-9", "mouse-17",
  "flag-3", "flag-9", "flag-5", "flag-2", "frog-3", "frog-4", "frog-20", "frog-9", "gametarget-1",
  "gametarget-2", "gametarget-7", "gametarget-13", "hand-2", "hand-3", "hand-9", "hand-16",
  "helmet-5", "helmet-11", "helmet-19", "helmet-13", "licenseplate-6", "licenseplate-12",
  "licenseplate-13", "licenseplate-15", "electricfan-1", "electricfan-10", "electricfan-18",
  "electricfan-20", "chameleon-3", "chameleon-6", "chameleon-11", "chameleon-20", "crocodile-3",
  "crocodile-4", "crocodile-10", "crocodile-14", "gecko-1", "gecko-5", "gecko-16", "gecko-19",
  "fox-2", "fox-3", "fox-5", "fox-20", "giraffe-2", "giraffe-10", "giraffe-13", "giraffe-15",
  "gorilla-4", "gorilla-6", "gorilla-9", "gorilla-13", "hippo-1", "hippo-7", "hippo-9", "hippo-20",
  "horse-1", "horse-4", "horse-12", "horse-15", "kangaroo-2", "kangaroo-5", "kangaroo-11",
  "kangaroo-14", "leopard-1", "leopard-7", "leopard-16", "leopard-20", "lion-1", "lion-5", "lion-12",
  "lion-20", "lizard-1", "lizard-3", "lizard-6", "lizard-13", "microphone-2", "microphone-6",
  "microphone-14", "microphone-16", "monkey-3", "monkey-4", "monkey-9", "monkey-17", "shark-2",
  "shark-3", "shark-5", "shark-6", "squirrel-8", "squirrel-11", "squirrel-13", "squirrel-19",
  "volleyball-1", "volleyball-13", "volleyball-18", "volleyball-19",
)

# UAV123: (annotation name, frames folder, first frame, last frame); 6-digit .jpg; name uav_<anno>.
UAV123_SEQUENCES = (
  ("bike1", "bike1", 1, 3085), ("bike2", "bike2", 1, 553), ("bike3", "bike3", 1, 433),
  ("bird1_1", "bird1", 1, 253), ("bird1_2", "bird1", 775, 1477), ("bird1_3", "bird1", 1573, 2437),
  ("boat1", "boat1", 1, 901), ("boat2", "boat2", 1, 799), ("boat3", "boat3", 1, 901),
  ("boat4", "boat4", 1, 553), ("boat5", "boat5", 1, 505), ("boat6", "boat6", 1, 805),
  ("boat7", "boat7", 1, 535), ("boat8", "boat8", 1, 685), ("boat9", "boat9", 1, 1399),
  ("building1", "building1", 1, 469), ("building2", "building2", 1, 577),
  ("building3", "building3", 1, 829), ("building4", "building4", 1, 787),
  ("building5", "building5", 1, 481), ("car1_1", "car1", 1, 751), ("car1_2", "car1", 751, 1627),
  ("car1_3", "car1", 1627, 2629), ("car10", "car10", 1, 1405), ("car11", "car11", 1, 337),
  ("car12", "car12", 1, 499), ("car13", "car13", 1, 415), ("car14", "car14", 1, 1327),
  ("car15", "car15", 1, 469), ("car16_1", "car16", 1, 415), ("car16_2", "car16", 415, 1993),
  ("car17", "car17", 1, 1057), ("car18", "car18", 1, 1207), ("car1_s", "car1_s", 1, 1475),
  ("car2", "car2", 1, 1321), ("car2_s", "car2_s", 1, 320), ("car3", "car3", 1, 1717),
  ("car3_s", "car3_s", 1, 1300), ("car4", "car4", 1, 1345), ("car4_s", "car4_s", 1, 830),
  ("car5", "car5", 1, 745), ("car6_1", "car6", 1, 487), ("car6_2", "car6", 487, 1807),
  ("car6_3", "car6", 1807, 2953), ("car6_4", "car6", 2953, 3925), ("car6_5", "car6", 3925, 4861),
  ("car7", "car7", 1, 1033), ("car8_1", "car8", 1, 1357), ("car8_2", "car8", 1357, 2575),
  ("car9", "car9", 1, 1879), ("group1_1", "group1", 1, 1333), ("group1_2", "group1", 1333, 2515),
  ("group1_3", "group1", 2515, 3925), ("group1_4", "group1", 3925, 4873),
  ("group2_1", "group2", 1, 907), ("group2_2", "group2", 907, 1771),
  ("group2_3", "group2", 1771, 2683), ("group3_1", "group3", 1, 1567),
  ("group3_2", "group3", 1567, 2827), ("group3_3", "group3", 2827, 4369),
  ("group3_4", "group3", 4369, 5527), ("person1", "person1", 1, 799),
  ("person10", "person10", 1, 1021), ("person11", "person11", 1, 721),
  ("person12_1", "person12", 1, 601), ("person12_2", "person12", 601, 1621),
  ("person13", "person13", 1, 883), ("person14_1", "person14", 1, 847),
  ("person14_2", "person14", 847, 1813), ("person14_3", "person14", 1813, 2923),
  ("person15", "person15", 1, 1339), ("person16", "person16", 1, 1147),
  ("person17_1", "person17", 1, 1501), ("person17_2", "person17", 1501, 2347),
  ("person18", "person18", 1, 1393), ("person19_1", "person19", 1, 1243),
  ("person19_2", "person19", 1243, 2791), ("person19_3", "person19", 2791, 4357),
  ("person1_s", "person1_s", 1, 1600), ("person2_1", "person2", 1, 1189),
  ("person2_2", "person2", 1189, 2623), ("person20", "person20", 1, 1783),
  ("person21", "person21", 1, 487), ("person22", "person22", 1, 199),
  ("person23", "person23", 1, 397), ("person2_s", "person2_s", 1, 250),
  ("person3", "person3", 1, 643), ("person3_s", "person3_s", 1, 505),
  ("person4_1", "person4", 1, 1501), ("person4_2", "person4", 1501, 2743),
  ("person5_1", "person5", 1, 877), ("person5_2", "person5", 877, 2101),
  ("person6", "person6", 1, 901), ("person7_1", "person7", 1, 1249),
  ("person7_2", "person7", 1249, 2065), ("person8_1", "person8", 1, 1075),
  ("person8_2", "person8", 1075, 1525), ("person9", "person9", 1, 661), ("truck1", "truck1", 1, 463),
  ("truck2", "truck2", 1, 385), ("truck3", "truck3", 1, 535), ("truck4_1", "truck4", 1, 577),
  ("truck4_2", "truck4", 577, 1261), ("uav1_1", "uav1", 1, 1555), ("uav1_2", "uav1", 1555, 2377),
  ("uav1_3", "uav1", 2473, 3469), ("uav2", "uav2", 1, 133), ("uav3", "uav3", 1, 265),
  ("uav4", "uav4", 1, 157), ("uav5", "uav5", 1, 139), ("uav6", "uav6", 1, 109),
  ("uav7", "uav7", 1, 373), ("uav8", "uav8", 1, 301), ("wakeboard1", "wakeboard1", 1, 421),
  ("wakeboard10", "wakeboard10", 1, 469), ("wakeboard2", "wakeboard2", 1, 733),
  ("wakeboard3", "wakeboard3", 1, 823), ("wakeboard4", "wakeboard4", 1, 697),
  ("wakeboard5", "wakeboard5", 1, 1675), ("wakeboard6", "wakeboard6", 1, 1165),
  ("wakeboard7", "wakeboard7", 1, 199), ("wakeboard8", "wakeboard8", 1, 1543),
  ("wakeboard9", "wakeboard9", 1, 355),
)

# OTB-2015: (name, folder, first frame, last frame, digits, annotation file, frames omitted at start).
OTB100_SEQUENCES = (
  ("Basketball", "Basketball", 1, 725, 4, "groundtruth_rect.txt", 0),
  ("Biker", "Biker", 1, 142, 4, "groundtruth_rect.txt", 0),
  ("Bird1", "Bird1", 1, 408, 4, "groundtruth_rect.txt", 0),
  ("Bird2", "Bird2", 1, 99, 4, "groundtruth_rect.txt", 0),
  ("BlurBody", "BlurBody", 1, 334, 4, "groundtruth_rect.txt", 0),
  ("BlurCar1", "BlurCar1", 247, 988, 4, "groundtruth_rect.txt", 0),
  ("BlurCar2", "BlurCar2", 1, 585, 4, "groundtruth_rect.txt", 0),
  ("BlurCar3", "BlurCar3", 3, 359, 4, "groundtruth_rect.txt", 0),
  ("BlurCar4", "BlurCar4", 18, 397, 4, "groundtruth_rect.txt", 0),
  ("BlurFace", "BlurFace", 1, 493, 4, "groundtruth_rect.txt", 0),
  ("BlurOwl", "BlurOwl", 1, 631, 4, "groundtruth_rect.txt", 0),
  ("Board", "Board", 1, 698, 5, "groundtruth_rect.txt", 0),
  ("Bolt", "Bolt", 1, 350, 4, "groundtruth_rect.txt", 0),
  ("Bolt2", "Bolt2", 1, 293, 4, "groundtruth_rect.txt", 0),
  ("Box", "Box", 1, 1161, 4, "groundtruth_rect.txt", 0),
  ("Boy", "Boy", 1, 602, 4, "groundtruth_rect.txt", 0),
  ("Car1", "Car1", 1, 1020, 4, "groundtruth_rect.txt", 0),
  ("Car2", "Car2", 1, 913, 4, "groundtruth_rect.txt", 0),
  ("Car24", "Car24", 1, 3059, 4, "groundtruth_rect.txt", 0),
  ("Car4", "Car4", 1, 659, 4, "groundtruth_rect.txt", 0),
  ("CarDark", "CarDark", 1, 393, 4, "groundtruth_rect.txt", 0),
  ("CarScale", "CarScale", 1, 252, 4, "groundtruth_rect.txt", 0),
  ("ClifBar", "ClifBar", 1, 472, 4, "groundtruth_rect.txt", 0),
  ("Coke", "Coke", 1, 291, 4, "groundtruth_rect.txt", 0),
  ("Couple", "Couple", 1, 140, 4, "groundtruth_rect.txt", 0),
  ("Coupon", "Coupon", 1, 327, 4, "groundtruth_rect.txt", 0),
  ("Crossing", "Crossing", 1, 120, 4, "groundtruth_rect.txt", 0),
  ("Crowds", "Crowds", 1, 347, 4, "groundtruth_rect.txt", 0),
  ("Dancer", "Dancer", 1, 225, 4, "groundtruth_rect.txt", 0),
  ("Dancer2", "Dancer2", 1, 150, 4, "groundtruth_rect.txt", 0),
  ("David", "David", 300, 770, 4, "groundtruth_rect.txt", 0),
  ("David2", "David2", 1, 537, 4, "groundtruth_rect.txt", 0),
  ("David3", "David3", 1, 252, 4, "groundtruth_rect.txt", 0),
  ("Deer", "Deer", 1, 71, 4, "groundtruth_rect.txt", 0),
  ("Diving", "Diving", 1, 215, 4, "groundtruth_rect.txt", 0),
  ("Dog", "Dog", 1, 127, 4, "groundtruth_rect.txt", 0),
  ("Dog1", "Dog1", 1, 1350, 4, "groundtruth_rect.txt", 0),
  ("Doll", "Doll", 1, 3872, 4, "groundtruth_rect.txt", 0),
  ("DragonBaby", "DragonBaby", 1, 113, 4, "groundtruth_rect.txt", 0),
  ("Dudek", "Dudek", 1, 1145, 4, "groundtruth_rect.txt", 0),
  ("FaceOcc1", "FaceOcc1", 1, 892, 4, "groundtruth_rect.txt", 0),
  ("FaceOcc2", "FaceOcc2", 1, 812, 4, "groundtruth_rect.txt", 0),
  ("Fish", "Fish", 1, 476, 4, "groundtruth_rect.txt", 0),
  ("FleetFace", "FleetFace", 1, 707, 4, "groundtruth_rect.txt", 0),
  ("Football", "Football", 1, 362, 4, "groundtruth_rect.txt", 0),
  ("Football1", "Football1", 1, 74, 4, "groundtruth_rect.txt", 0),
  ("Freeman1", "Freeman1", 1, 326, 4, "groundtruth_rect.txt", 0),
  ("Freeman3", "Freeman3", 1, 460, 4, "groundtruth_rect.txt", 0),
  ("Freeman4", "Freeman4", 1, 283, 4, "groundtruth_rect.txt", 0),
  ("Girl", "Girl", 1, 500, 4, "groundtruth_rect.txt", 0),
  ("Girl2", "Girl2", 1, 1500, 4, "groundtruth_rect.txt", 0),
  ("Gym", "Gym", 1, 767, 4, "groundtruth_rect.txt", 0),
  ("Human2", "Human2", 1, 1128, 4, "groundtruth_rect.txt", 0),
  ("Human3", "Human3", 1, 1698, 4, "groundtruth_rect.txt", 0),
  ("Human4_2", "Human4", 1, 667, 4, "groundtruth_rect.2.txt", 0),
  ("Human5", "Human5", 1, 713, 4, "groundtruth_rect.txt", 0),
  ("Human6", "Human6", 1, 792, 4, "groundtruth_rect.txt", 0),
  ("Human7", "Human7", 1, 250, 4, "groundtruth_rect.txt", 0),
  ("Human8", "Human8", 1, 128, 4, "groundtruth_rect.txt", 0),
  ("Human9", "Human9", 1, 305, 4, "groundtruth_rect.txt", 0),
  ("Ironman", "Ironman", 1, 166, 4, "groundtruth_rect.txt", 0),
  ("Jogging_1", "Jogging", 1, 307, 4, "groundtruth_rect.1.txt", 0),
  ("Jogging_2", "Jogging", 1, 307, 4, "groundtruth_rect.2.txt", 0),
  ("Jump", "Jump", 1, 122, 4, "groundtruth_rect.txt", 0),
  ("Jumping", "Jumping", 1, 313, 4, "groundtruth_rect.txt", 0),
  ("KiteSurf", "KiteSurf", 1, 84, 4, "groundtruth_rect.txt", 0),
  ("Lemming", "Lemming", 1, 1336, 4, "groundtruth_rect.txt", 0),
  ("Liquor", "Liquor", 1, 1741, 4, "groundtruth_rect.txt", 0),
  ("Man", "Man", 1, 134, 4, "groundtruth_rect.txt", 0),
  ("Matrix", "Matrix", 1, 100, 4, "groundtruth_rect.txt", 0),
  ("Mhyang", "Mhyang", 1, 1490, 4, "groundtruth_rect.txt", 0),
  ("MotorRolling", "MotorRolling", 1, 164, 4, "groundtruth_rect.txt", 0),
  ("MountainBike", "MountainBike", 1, 228, 4, "groundtruth_rect.txt", 0),
  ("Panda", "Panda", 1, 1000, 4, "groundtruth_rect.txt", 0),
  ("RedTeam", "RedTeam", 1, 1918, 4, "groundtruth_rect.txt", 0),
  ("Rubik", "Rubik", 1, 1997, 4, "groundtruth_rect.txt", 0),
  ("Shaking", "Shaking", 1, 365, 4, "groundtruth_rect.txt", 0),
  ("Singer1", "Singer1", 1, 351, 4, "groundtruth_rect.txt", 0),
  ("Singer2", "Singer2", 1, 366, 4, "groundtruth_rect.txt", 0),
  ("Skater", "Skater", 1, 160, 4, "groundtruth_rect.txt", 0),
  ("Skater2", "Skater2", 1, 435, 4, "groundtruth_rect.txt", 0),
  ("Skating1", "Skating1", 1, 400, 4, "groundtruth_rect.txt", 0),
  ("Skating2_1", "Skating2", 1, 473, 4, "groundtruth_rect.1.txt", 0),
  ("Skating2_2", "Skating2", 1, 473, 4, "groundtruth_rect.2.txt", 0),
  ("Skiing", "Skiing", 1, 81, 4, "groundtruth_rect.txt", 0),
  ("Soccer", "Soccer", 1, 392, 4, "groundtruth_rect.txt", 0),
  ("Subway", "Subway", 1, 175, 4, "groundtruth_rect.txt", 0),
  ("Surfer", "Surfer", 1, 376, 4, "groundtruth_rect.txt", 0),
  ("Suv", "Suv", 1, 945, 4, "groundtruth_rect.txt", 0),
  ("Sylvester", "Sylvester", 1, 1345, 4, "groundtruth_rect.txt", 0),
  ("Tiger1", "Tiger1", 1, 354, 4, "groundtruth_rect.txt", 5),
  ("Tiger2", "Tiger2", 1, 365, 4, "groundtruth_rect.txt", 0),
  ("Toy", "Toy", 1, 271, 4, "groundtruth_rect.txt", 0),
  ("Trans", "Trans", 1, 124, 4, "groundtruth_rect.txt", 0),
  ("Trellis", "Trellis", 1, 569, 4, "groundtruth_rect.txt", 0),
  ("Twinnings", "Twinnings", 1, 472, 4, "groundtruth_rect.txt", 0),
  ("Vase", "Vase", 1, 271, 4, "groundtruth_rect.txt", 0),
  ("Walking", "Walking", 1, 412, 4, "groundtruth_rect.txt", 0),
  ("Walking2", "Walking2", 1, 500, 4, "groundtruth_rect.txt", 0),
  ("Woman", "Woman", 1, 597, 4, "groundtruth_rect.txt", 0),
)
