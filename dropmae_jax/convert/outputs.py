"""Writing outputs so that nothing is ever half-written: each is built under a temporary sibling
name and renamed into place when complete.

`missing_folders(path)` names the folders a run is about to create, so that a run that finishes
nothing can leave nothing behind. `staged_file(path)` for a file (.pth, .safetensors): the rename replaces any earlier file at once.
`staged_dir(path, ours)` for a folder of ours (an imported checkpoint or tracker): built whole as
a sibling, then renamed onto `path` (an earlier folder of ours is swapped out and deleted). When
`path` also holds files that are not ours, those stay and each of our entries is renamed into it
(config.json last, so a reader keyed on it never sees a partial set).

Whether an existing output may be replaced at all is the caller's decision (`io.check_output`:
the command lines need --overwrite).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator

CONFIG_FILE = "config.json"   # (io.CONFIG_FILE) renamed last


def missing_folders(path: str) -> list[str]:
  """`path` and those of its ancestors that do not exist yet, deepest first: what a run that
  creates `path` must remove again if it finishes nothing."""
  missing = []
  path = os.path.abspath(path)
  while not os.path.exists(path):
    missing.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing


def _sibling(path: str, tag: str) -> str:
  parent, base = os.path.split(os.path.abspath(path))
  return os.path.join(parent, f".{base}.{uuid.uuid4().hex[:8]}.{tag}")


@contextlib.contextmanager
def staged_file(path: str) -> Iterator[str]:
  """Yields a temporary sibling name of `path` to write; renamed onto `path` when the block ends
  without an error, deleted otherwise."""
  os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
  tmp = _sibling(path, "partial")
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.lexists(tmp):
      os.remove(tmp)


@contextlib.contextmanager
def staged_dir(path: str, ours: Iterable[str]) -> Iterator[str]:
  """Yields an empty temporary sibling folder of `path` to fill; when the block ends without an
  error its contents become `path` (see the module docstring), otherwise it is deleted.

  Args:
    path: the output folder (may exist).
    ours: names of the entries our writers put in such a folder (and earlier versions' leftovers):
      an existing `path` holding nothing else is replaced whole; other entries in it are kept.
  """
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  staging = _sibling(path, "partial")
  os.makedirs(staging)
  try:
    yield staging
    _publish(staging, path, set(ours))
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: str, path: str, ours: set[str]) -> None:
  if not os.path.lexists(path):
    os.rename(staging, path)
    return
  if not os.path.isdir(path):
    raise NotADirectoryError(f"{path} is not a folder")
  present = set(os.listdir(path))
  link = os.path.islink(path)          # a link to a folder: fill the folder, keep the link
  if not present and not link:
    os.replace(staging, path)          # POSIX renames onto an empty folder
    return
  if present <= ours and not link:     # an earlier output of ours: swap whole
    old = _sibling(path, "old")
    os.rename(path, old)
    os.rename(staging, path)
    shutil.rmtree(old, ignore_errors=True)
    return
  new = sorted(os.listdir(staging), key=lambda n: (n == CONFIG_FILE, n))
  for name in new:                     # other files stay; our entries one by one
    _replace_entry(os.path.join(staging, name), os.path.join(path, name))
  for name in sorted((present & ours) - set(new)):   # ours from an earlier output, now stale
    target = os.path.join(path, name)
    if os.path.isdir(target) and not os.path.islink(target):
      shutil.rmtree(target, ignore_errors=True)
    else:
      os.remove(target)


def _replace_entry(src: str, dst: str) -> None:
  if os.path.isdir(dst) and not os.path.islink(dst):
    old = _sibling(dst, "old")
    os.rename(dst, old)
    os.rename(src, dst)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(src, dst)
