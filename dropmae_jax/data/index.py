"""Which videos a run trains on: a Kinetics-layout folder, or a list file."""
from __future__ import annotations

import os

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")


def list_videos(root: str, list_file: str = "") -> list[str]:
  """Absolute paths of the training videos, in a fixed order (the data order depends on it).

  Args:
    root: `config.data.root`, laid out as ROOT/<class_name>/<clip>.<ext> (ext in
      VIDEO_EXTENSIONS). Class names may contain spaces, as Kinetics' do.
    list_file: `config.data.list_file`: if set, the videos are the paths in this file, one per
      line, relative to `root` unless absolute (then `root` may be empty). An optional trailing
      label column after a comma or whitespace is ignored; blank lines and '#' lines are skipped.
  Returns:
    Paths sorted by (class folder, file name) for a folder; in file order for a list file.
  Raises:
    FileNotFoundError / ValueError naming the config field when nothing usable is found.
  """
  if list_file:
    return _from_list(root, list_file)
  if not root:
    raise ValueError("config.data.root is empty: set it to a Kinetics-layout folder "
                     "(ROOT/class_name/*.mp4), e.g. --config.data.root=/data/kinetics700/train")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"config.data.root={root!r} is not a directory")
  paths = []
  for class_name in sorted(os.listdir(root)):
    class_dir = os.path.join(root, class_name)
    if os.path.isdir(class_dir):
      paths.extend(os.path.join(class_dir, f) for f in sorted(os.listdir(class_dir))
                   if f.lower().endswith(VIDEO_EXTENSIONS))
  if not paths:
    loose = [f for f in os.listdir(root) if f.lower().endswith(VIDEO_EXTENSIONS)]
    hint = (f"; it has {len(loose)} videos directly inside: move them into class folders or "
            f"name them in config.data.list_file") if loose else ""
    raise ValueError(f"config.data.root={root!r} holds no videos in class sub-folders (expected "
                     f"ROOT/class_name/*{{{','.join(VIDEO_EXTENSIONS)}}}){hint}")
  return [os.path.abspath(p) for p in paths]


def _path_of_line(line: str) -> str:
  """'a b/c.mp4', 'a b/c.mp4 12', 'a b/c.mp4,12' -> 'a b/c.mp4'; '' for blank/comment lines."""
  line = line.strip()
  if not line or line.startswith("#"):
    return ""
  if "," in line:
    return line.split(",", 1)[0].strip()
  # Only split off a label when the line does not already end in a video name, so a path with
  # spaces ('abseiling/x y.mp4') stays whole.
  if not line.lower().endswith(VIDEO_EXTENSIONS) and len(line.split()) > 1:
    return line.rsplit(None, 1)[0]
  return line


def _from_list(root: str, list_file: str) -> list[str]:
  if not os.path.isfile(list_file):
    raise FileNotFoundError(f"config.data.list_file={list_file!r} does not exist")
  if root and not os.path.isdir(root):
    raise FileNotFoundError(f"config.data.root={root!r} (the base of the paths in "
                            f"config.data.list_file={list_file!r}) is not a directory")
  with open(list_file, encoding="utf-8") as f:
    entries = [p for p in (_path_of_line(line) for line in f) if p]
  if not entries:
    raise ValueError(f"config.data.list_file={list_file!r} lists no videos")
  if not root and not all(os.path.isabs(p) for p in entries):
    raise ValueError(f"config.data.list_file={list_file!r} has relative paths but "
                     f"config.data.root is empty: set it to the folder they are relative to")
  paths = [os.path.abspath(os.path.join(root, p)) for p in entries]
  # Missing files are skipped later like broken ones, but a wrong root makes *every* path
  # missing: catch that now from a few samples instead of after max_retries skips.
  probe = paths[:: max(1, len(paths) // 16)][:16]
  if not any(os.path.exists(p) for p in probe):
    raise FileNotFoundError(f"none of {len(probe)} sampled entries of config.data.list_file="
                            f"{list_file!r} exists under config.data.root={root!r}, "
                            f"e.g. {probe[0]!r}")
  return paths
