"""Tracker result files: the layouts pytracking / OSTrack and the evaluation servers use.

  pytracking   <out>/<seq>.txt: one box a line, integers, tab-separated (`np.savetxt(fmt='%d',
               delimiter='\\t')` of the boxes cast with `.astype(int)`, i.e. truncated toward zero), and
               <out>/<seq>_time.txt: seconds per frame, '%f' one a line. What OSTrack's test.py writes.
  got10k       <out>/<seq>/<seq>_001.txt: the same integers comma-separated (transform_got10k.py) and
               <out>/<seq>/<seq>_time.txt; repetitions _002, _003.. as the GOT-10k toolkit numbers them.
  trackingnet  <out>/<seq>.txt, integers comma-separated (transform_trackingnet.py), zipped flat.

Every write is atomic (a temporary file in the same folder, then os.replace), so an interrupted run
never leaves a half-written result that a later evaluation would score. Readers accept comma, tab or
whitespace delimiters and integer or float boxes, so results of the released tracker, the GOT-10k
toolkit ('%.3f') and ours all read the same way.
"""
from __future__ import annotations

import io
import os
import re
import zipfile

import numpy as np

from dropmae_jax.track import datasets
from dropmae_jax.track.datasets.files import split_fields


class ResultsError(ValueError):
  """A result file that is missing, malformed or does not match its sequence."""


# ------------------------------------------------------------------------------------------------
# Writing


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Write `data` to `path` so that readers see the old file or the whole new one, nothing between."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _int_boxes(boxes: np.ndarray, what: str) -> np.ndarray:
  """(N, 4) float boxes -> int64 the way pytracking saves them (`.astype(int)`: truncation)."""
  boxes = np.asarray(boxes, np.float64)
  if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] < 1:
    raise ResultsError(f"{what}: boxes must be (N, 4) with N >= 1, got {boxes.shape}")
  if not np.all(np.isfinite(boxes)):
    bad = int(np.argwhere(~np.isfinite(boxes))[0, 0])
    raise ResultsError(f"{what}: box {bad} is not finite: {boxes[bad].tolist()}")
  return boxes.astype(np.int64)


def format_boxes(boxes: np.ndarray, delimiter: str, what: str = "boxes") -> bytes:
  """(N, 4) -> the text np.savetxt(fmt='%d', delimiter=delimiter) writes for the int-cast boxes."""
  ints = _int_boxes(boxes, what)
  return "".join(delimiter.join(str(v) for v in row) + "\n" for row in ints.tolist()).encode()


def format_times(times: np.ndarray, what: str = "times") -> bytes:
  """(N,) seconds -> '%f' one a line (pytracking's save_time)."""
  times = np.asarray(times, np.float64).reshape(-1)
  if times.size == 0:
    raise ResultsError(f"{what}: no times")
  return "".join(f"{t:f}\n" for t in times.tolist()).encode()


def write_pytracking(out_dir: str, name: str, boxes: np.ndarray,
                     times: np.ndarray | None = None) -> str:
  """<out_dir>/<name>.txt (tab-separated integers) [+ <name>_time.txt]; returns the box file."""
  path = os.path.join(out_dir, f"{name}.txt")
  data = format_boxes(boxes, "\t", path)
  if times is not None:
    atomic_write_bytes(os.path.join(out_dir, f"{name}_time.txt"), format_times(times, path))
  atomic_write_bytes(path, data)  # the box file last: its presence means the sequence is done
  return path


def write_got10k(out_dir: str, name: str, boxes: np.ndarray, times: np.ndarray | None = None,
                 repetition: int = 1) -> str:
  """<out_dir>/<name>/<name>_00r.txt (comma-separated integers) [+ <name>_time.txt]."""
  if not 1 <= repetition <= 999:
    raise ResultsError(f"repetition must be in 1..999, got {repetition}")
  seq_dir = os.path.join(out_dir, name)
  path = os.path.join(seq_dir, f"{name}_{repetition:03d}.txt")
  data = format_boxes(boxes, ",", path)
  if times is not None:
    atomic_write_bytes(os.path.join(seq_dir, f"{name}_time.txt"), format_times(times, path))
  atomic_write_bytes(path, data)
  return path


def write_trackingnet(out_dir: str, name: str, boxes: np.ndarray) -> str:
  """<out_dir>/<name>.txt, comma-separated integers (what the TrackingNet server reads)."""
  path = os.path.join(out_dir, f"{name}.txt")
  atomic_write_bytes(path, format_boxes(boxes, ",", path))
  return path


def pack_zip(folder: str, zip_path: str) -> str:
  """Zip a folder's files with paths relative to it (the servers want <seq>... at the archive root)."""
  if not os.path.isdir(folder):
    raise ResultsError(f"{folder}: no such folder to pack")
  buffer = io.BytesIO()
  count = 0
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
    for dirpath, dirnames, filenames in os.walk(folder):
      dirnames.sort()
      for f in sorted(filenames):
        if f.startswith("."):  # our temporary files
          continue
        full = os.path.join(dirpath, f)
        zf.write(full, os.path.relpath(full, folder))
        count += 1
  if count == 0:
    raise ResultsError(f"{folder}: nothing to pack")
  atomic_write_bytes(zip_path, buffer.getvalue())
  return zip_path


# ------------------------------------------------------------------------------------------------
# Reading


def read_boxes(path: str, expected_len: int | None = None) -> np.ndarray:
  """A result file -> (N, 4) float64; comma, tab or whitespace delimited, ints or floats.

  Errors name the file (and line): missing, empty, wrong number of values, non-numbers, NaN / inf,
  negative width or height (pytracking rejects those too), or N != expected_len.
  """
  try:
    boxes = datasets.read_table(path, 4, what="box values (x,y,w,h)")
  except datasets.DatasetError as e:
    raise ResultsError(str(e)) from None
  negative = np.argwhere(boxes[:, 2:] < 0)
  if negative.size:
    line = int(negative[0, 0]) + 1
    raise ResultsError(f"{path}:{line}: negative width or height {boxes[line - 1].tolist()}")
  if expected_len is not None and boxes.shape[0] != expected_len:
    raise ResultsError(f"{path}: {boxes.shape[0]} boxes, expected {expected_len} (one per frame)")
  return boxes


def read_times(path: str) -> np.ndarray:
  """A *_time.txt -> every value in it, flattened (the toolkit appends one column per repetition)."""
  if not os.path.isfile(path):
    raise ResultsError(f"{path}: no such file")
  values = []
  with open(path, "r", encoding="utf-8", errors="replace") as f:
    for line_no, line in enumerate(f, 1):
      for field in split_fields(line):
        try:
          values.append(float(field))
        except ValueError:
          raise ResultsError(f"{path}:{line_no}: {field!r} is not a number") from None
  return np.asarray(values, np.float64)


def find_box_files(results_dir: str, name: str) -> list[str]:
  """The result files of one sequence: <dir>/<name>/<name>_NNN.txt (GOT-10k layout, all repetitions,
  in order) if that folder has any, else [<dir>/<name>.txt] if it exists (pytracking / TrackingNet),
  else []."""
  seq_dir = os.path.join(results_dir, name)
  if os.path.isdir(seq_dir):
    pattern = re.compile(re.escape(name) + r"_(\d+)\.txt")
    reps = sorted((int(m.group(1)), f) for f in os.listdir(seq_dir)
                  if (m := pattern.fullmatch(f)))
    if reps:
      return [os.path.join(seq_dir, f) for _, f in reps]
  flat = os.path.join(results_dir, f"{name}.txt")
  return [flat] if os.path.isfile(flat) else []


def find_time_file(results_dir: str, name: str) -> str | None:
  for path in (os.path.join(results_dir, name, f"{name}_time.txt"),
               os.path.join(results_dir, f"{name}_time.txt")):
    if os.path.isfile(path):
      return path
  return None


def load_sequence_results(results_dir: str, name: str,
                          expected_len: int) -> tuple[list[np.ndarray], np.ndarray | None]:
  """([(N, 4) boxes per repetition], per-frame seconds or None) of one sequence.

  Raises ResultsError naming the sequence when it has no result file.
  """
  files = find_box_files(results_dir, name)
  if not files:
    raise ResultsError(f"no results for sequence {name!r} in {results_dir} (expected "
                       f"{name}.txt or {name}/{name}_001.txt)")
  boxes = [read_boxes(f, expected_len) for f in files]
  time_file = find_time_file(results_dir, name)
  return boxes, (read_times(time_file) if time_file else None)
