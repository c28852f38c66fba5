"""The repository speaks for itself: no tracked file points at notes or machines outside it.

A fact the project relies on lives in its own docs/ (or is cited as released code by repository
and path, e.g. OSTrack `lib/train/actors/ostrack.py`), never as a link to a file that only some
checkouts have beside them, a section number of such a file, or a path on one machine. The
patterns are assembled from pieces below, so this file does not match itself.
"""
from __future__ import annotations

import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SIBLING = "sha" + "red"
PATTERNS = (
    ".." + "/" + _SIBLING,                    # a sibling folder of the checkout
    "/" + _SIBLING + "/" + "reference",
    "/" + _SIBLING + "/" + "measurements",
    "DESIGN" + ".md",
    "downstream" + ".md",
    "jax" + "_anchors",
    "/" + "work" + "/",                       # a machine path
)
SECTION = re.compile(chr(0xA7) + r"\s*\d")    # a section number of some other document
SKIPPED_DIRS = {".git", "__pycache__", ".pytest_cache"}
README_MAX_LINES = 250


def tracked_files(root: str) -> list[str]:
  """The repository's files, relative to root: `git ls-files`, else a walk that skips .git."""
  try:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, timeout=60)
  except (OSError, subprocess.SubprocessError):
    out = None
  if out is not None and out.returncode == 0 and out.stdout:
    return sorted(p for p in out.stdout.decode("utf-8", "surrogateescape").split("\0") if p)
  found = []
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info"))
    found += [os.path.relpath(os.path.join(folder, f), root) for f in files]
  return sorted(found)


def read_text(path: str) -> str | None:
  """The file's text, or None for a binary file (a NUL byte, or not UTF-8) or a non-file."""
  if not os.path.isfile(path) or os.path.islink(path):
    return None
  with open(path, "rb") as f:
    data = f.read()
  if b"\0" in data[:8192]:
    return None
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    return None


def outside_references(path: str, name: str | None = None) -> list[str]:
  """'name:line: text' for each line of the file at `path` that refers outside the repository."""
  text = read_text(path)
  if text is None:
    return []
  name = name or path
  return [f"{name}:{number}: {line.strip()}"
          for number, line in enumerate(text.splitlines(), 1)
          if any(p in line for p in PATTERNS) or SECTION.search(line)]


def repository_problems(root: str) -> list[str]:
  problems = []
  for rel in tracked_files(root):
    problems += outside_references(os.path.join(root, rel), rel)
  return problems


@pytest.mark.timeout(60)
def test_no_file_refers_outside_the_repository():
  problems = repository_problems(REPO)
  assert not problems, ("these lines refer to files or machines outside the repository; cite the "
                        "released code by repository and path or carry the fact into docs/:\n"
                        + "\n".join(problems))


@pytest.mark.timeout(60)
def test_the_checker_flags_a_planted_line(tmp_path):
  planted = tmp_path / "notes.md"
  lines = ["a clean line about docs/kernels.md and OSTrack `lib/test/tracker/ostrack.py`",
           *(f"see {p} for details" for p in PATTERNS),
           "as " + chr(0xA7) + "1.4.3 says"]
  planted.write_text("\n".join(lines) + "\n", encoding="utf-8")
  found = outside_references(str(planted), "notes.md")
  assert [f.split(":")[1] for f in found] == [str(n) for n in range(2, len(lines) + 1)]
  assert found[0].startswith("notes.md:2: see ")
  # The walk without git finds it too, and skips binary files.
  (tmp_path / "image.png").write_bytes(b"\x89PNG\0" + PATTERNS[3].encode())
  assert tracked_files(str(tmp_path)) == ["image.png", "notes.md"]
  assert len(repository_problems(str(tmp_path))) == len(lines) - 1


@pytest.mark.timeout(60)
def test_readme_is_a_short_front_door():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    count = len(f.read().splitlines())
  assert count <= README_MAX_LINES, (f"README.md has {count} lines (at most {README_MAX_LINES}): "
                                     "move detail into docs/")
