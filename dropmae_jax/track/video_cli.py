"""`python -m dropmae_jax.track video`: track one object through a video file, as OSTrack's
`tracking/video_demo.py` does (`Tracker.run_video` in `lib/test/evaluation/tracker.py`).

  python -m dropmae_jax.track video --weights=W --video=in.mp4 --box=x,y,w,h --out=out.mp4

The first frame's box is given; every later frame is tracked with the released tracker
(`tracker.Tracker`, the crop and the network on the device). Writes `--out` (the video with the box
drawn in green on every frame, H.264) and `--boxes` (default: --out with .txt; one box per frame,
`x<TAB>y<TAB>w<TAB>h` in integer pixels, as the demo saves them), shows a progress bar and ends
with a line giving frames/s. The video is decoded on one thread and encoded on another while the
device tracks.

--weights: a folder written by `python -m dropmae_jax.convert import-tracker` (a released DropTrack
checkpoint), a fine-tuning WORKDIR (`weights_source.py`), or `random:CONFIG` (randomly
initialised; for trying the pipeline: it warns that the boxes mean nothing). Bad input (an
unreadable video, a box outside the frame or of zero size, missing weights, an existing --out
without --overwrite) is one line on stderr, exit 2, and nothing is written.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

from dropmae_jax.data import video_files

RANDOM_PREFIX = "random:"
BOX_COLOUR = (0, 255, 0)   # green, as the released demo draws it

VIDEO_EXAMPLE = """example:
  python -m dropmae_jax.track video --weights=/ckpt/droptrack --video=in.mp4 \\
      --box=310,140,80,120 --out=out.mp4
  python -m dropmae_jax.track video --weights=random:droptrack_demo --video=in.mp4 \\
      --box=40,30,24,32 --out=/tmp/try.mp4 --max-frames=50
"""


# A mistake in the video command's input, reported in one line (the reader's errors are these).
VideoInputError = video_files.VideoFileError


def add_video_parser(subparsers) -> argparse.ArgumentParser:
  p = subparsers.add_parser(
      "video", help="track one object through a video file and write it with the box drawn",
      description="Track one object through a video file (OSTrack's tracking/video_demo.py): the "
      "first frame's box is given, every later frame is tracked. Writes the video with the box "
      "drawn and the boxes as text. --config.FIELD=VALUE (repeatable) overrides one field of the "
      "config, e.g. --config.tracker.search_factor=4.5.",
      epilog=VIDEO_EXAMPLE, extra_prefixes=("--config.",))
  p.add_argument("--weights", required=True,
                 help="tracker weights: a folder written by `python -m dropmae_jax.convert "
                 "import-tracker`, a DropTrack fine-tuning WORKDIR, or random:CONFIG (random "
                 "initialisation of that config's model: the boxes mean nothing)")
  p.add_argument("--video", required=True, help="the video file to track in (anything FFmpeg reads)")
  p.add_argument("--box", required=True,
                 help="the object's box in the first frame: x,y,w,h in pixels (top-left corner, "
                 "width, height)")
  p.add_argument("--out", required=True,
                 help="the video to write (.mp4, .mkv, .mov or .avi), the box drawn on every frame")
  p.add_argument("--boxes", default=None,
                 help="the per-frame boxes as text, x y w h tab-separated integers (default: --out "
                 "with .txt)")
  p.add_argument("--config", default=None,
                 help="tracker config: a .py file or an installed name; its model must match the "
                 "weights' (default: the weights' own config.json)")
  p.add_argument("--max-frames", type=int, default=0,
                 help="track only the first N frames (default: 0, every frame)")
  p.add_argument("--overwrite", action="store_true",
                 help="replace --out and --boxes when they exist (default: refuse)")
  p.set_defaults(func=video_command)
  return p


# --------------------------------------------------------------------------- input checks


def parse_box(text: str) -> tuple[float, float, float, float]:
  parts = text.replace(",", " ").split()
  try:
    box = tuple(float(v) for v in parts)
  except ValueError:
    box = ()
  if len(box) != 4 or not all(math.isfinite(v) for v in box):
    raise VideoInputError(f"--box wants four numbers x,y,w,h, got {text!r}")
  return box


def check_box(box, width: int, height: int) -> None:
  x, y, w, h = box
  if w <= 0 or h <= 0:
    raise VideoInputError(f"--box {_show(box)} has zero size: width and height must be > 0")
  if x + w <= 0 or y + h <= 0 or x >= width or y >= height:
    raise VideoInputError(f"--box {_show(box)} lies outside the {width}x{height} frame")


def _show(box) -> str:
  return ",".join(f"{v:g}" for v in box)


_CONTAINERS = video_files.CONTAINERS


def _check_outputs(args) -> tuple[str, str]:
  ext = os.path.splitext(args.out)[1].lower()
  if ext not in _CONTAINERS:
    raise VideoInputError(f"--out {args.out}: write a video file ending in "
                          f"{', '.join(sorted(_CONTAINERS))}")
  boxes = args.boxes or os.path.splitext(args.out)[0] + ".txt"
  if os.path.abspath(boxes) == os.path.abspath(args.out):
    raise VideoInputError(f"--boxes {boxes} is --out itself")
  for path, flag in ((args.out, "--out"), (boxes, "--boxes")):
    if os.path.isdir(path):
      raise VideoInputError(f"{flag} {path} is a folder")
    if os.path.exists(path) and not args.overwrite:
      raise VideoInputError(f"{flag} {path} exists (--overwrite to replace it)")
  if os.path.abspath(args.video) == os.path.abspath(args.out):
    raise VideoInputError(f"--out {args.out} is the input video")
  return args.out, boxes


def load_weights(weights: str, config_spec: str | None, overrides) -> tuple:
  """-> (model, variables, settings, description, random). `random:CONFIG` initialises CONFIG's
  model at random; anything else is resolved as `track run --weights` resolves it."""
  from dropmae_jax.config import loading as config_loading
  from dropmae_jax.track import ostrack
  from dropmae_jax.track import run_cli
  from dropmae_jax.track import tracker

  if weights.startswith(RANDOM_PREFIX):
    name = weights[len(RANDOM_PREFIX):]
    if not name:
      raise VideoInputError("--weights random:CONFIG needs a config, e.g. random:droptrack_got10k")
    if config_spec is not None:
      raise VideoInputError(f"--weights {weights} names its config; leave out --config")
    config = config_loading.load_config(name, overrides)
    if "tracker" not in config or "model" not in config:
      raise VideoInputError(f"--weights {weights}: {name} is not a tracker config (try "
                            "droptrack_got10k or droptrack_demo)")
    model = ostrack.OSTrackCE.from_config(config)
    variables = ostrack.init_variables(model, seed=0)
    return (model, variables, tracker.TrackerSettings.from_config(config),
            f"random initialisation of {name}", True)
  model, variables, settings, _, described = run_cli.load_tracker(config_spec, weights, 1,
                                                                  overrides)
  return model, variables, settings, described, False


# --------------------------------------------------------------------------- video in and out


def draw_box(frame: np.ndarray, box, colour=BOX_COLOUR, thickness: int | None = None) -> np.ndarray:
  """A copy of `frame` (H, W, 3) with the box's outline drawn (the part inside the frame)."""
  out = frame.copy()
  height, width = out.shape[:2]
  t = thickness or max(2, round(min(height, width) / 200))
  x1, y1 = int(round(box[0])), int(round(box[1]))
  x2, y2 = int(round(box[0] + box[2])), int(round(box[1] + box[3]))
  colour = np.asarray(colour, np.uint8)

  def fill(ya, yb, xa, xb):
    ya, yb = max(ya, 0), min(yb, height)
    xa, xb = max(xa, 0), min(xb, width)
    if ya < yb and xa < xb:
      out[ya:yb, xa:xb] = colour

  fill(y1 - t // 2, y1 - t // 2 + t, x1 - t // 2, x2 + t - t // 2)   # top
  fill(y2 - t // 2, y2 - t // 2 + t, x1 - t // 2, x2 + t - t // 2)   # bottom
  fill(y1 - t // 2, y2 + t - t // 2, x1 - t // 2, x1 - t // 2 + t)   # left
  fill(y1 - t // 2, y2 + t - t // 2, x2 - t // 2, x2 - t // 2 + t)   # right
  return out


# --------------------------------------------------------------------------- the command


def video_command(args) -> int:
  import tqdm
  from dropmae_jax.track import tracker as tracker_lib
  from dropmae_jax.track.evaluation import results

  box = parse_box(args.box)
  if args.max_frames < 0:
    raise VideoInputError(f"--max-frames must be >= 0, got {args.max_frames}")
  out_path, boxes_path = _check_outputs(args)
  if not os.path.isfile(args.video):
    raise VideoInputError(f"--video {args.video}: no such file")
  reader = video_files.FrameReader(args.video, args.max_frames)
  height, width = reader.first.shape[:2]
  written = []
  writer = None
  try:
    check_box(box, width, height)
    model, variables, settings, described, random = load_weights(args.weights, args.config,
                                                                  args.overrides)
    print(f"weights: {described}; video: {args.video} ({width}x{height}"
          + (f", {reader.count} frames" if reader.count else "") + ")")
    if random:
      print(f"warning: --weights {args.weights} is a random initialisation: the boxes mean "
            "nothing (use imported DropTrack weights or a fine-tuning WORKDIR)", file=sys.stderr)
    tracker = tracker_lib.Tracker(model, variables, settings)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):
      raise VideoInputError(f"--out {out_path}: no such folder {out_dir}")
    stem, ext = os.path.splitext(out_path)
    partial = f"{stem}.partial-{os.getpid()}{ext}"
    written.append(partial)
    writer = video_files.FrameWriter(partial, _CONTAINERS[ext.lower()], width, height,
                                     reader.rate or 25, draw_box)
    boxes = [np.asarray(box, np.float64)]
    start = time.perf_counter()
    tracker.initialize(reader.first, box)
    writer.put(reader.first, box)
    with tqdm.tqdm(total=reader.count or None, initial=1, unit="frame", desc="tracking",
                   smoothing=0.1) as bar:
      for frame in reader.rest():
        if frame.shape[:2] != (height, width):
          raise VideoInputError(f"--video {args.video}: frame {len(boxes)} is "
                                f"{frame.shape[1]}x{frame.shape[0]}, the first {width}x{height}")
        boxes.append(tracker.track(frame))
        writer.put(frame, boxes[-1])
        bar.update(1)
    writer.finish()
    seconds = time.perf_counter() - start
    results.atomic_write_bytes(boxes_path, results.format_boxes(np.stack(boxes), "\t", boxes_path))
    written.remove(partial)
    os.replace(partial, out_path)
  except BaseException:
    if writer is not None:
      writer.abandon()
    for path in written:
      if os.path.exists(path):
        os.remove(path)
    raise
  finally:
    reader.close()
  n = len(boxes)
  print(f"tracked {n} frames in {seconds:.1f} s ({n / seconds:.1f} frames/s end to end: decoding, "
        f"tracking, drawing and encoding); wrote {out_path} and {boxes_path}")
  return 0
