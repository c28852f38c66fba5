"""A benchmark's annotation text files and numbered frame folders, read and validated.

Every malformed input raises `DatasetError` naming the file (and line) at fault.
"""
from __future__ import annotations

import math
import os
import re

import numpy as np

from dropmae_jax.track.datasets.sequence import DatasetError

_NUMBER = re.compile(r"[\s,]+")


def split_fields(line: str) -> list[str]:
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
    fields = split_fields(line)
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
    for field in split_fields(line):
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



def sorted_frames(folder: str, first_index: int) -> list[str]:
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

