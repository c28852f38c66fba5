"""`python -m dropmae_jax.vos video`: the objects of a first-frame mask followed through a video
file and drawn over it.

  python -m dropmae_jax.vos video --weights=W --video=in.mp4 --mask=first.png --out=out.mp4

--weights a DropSeg segmenter (a fine-tuning WORKDIR, an imported segmenter folder or a released
DropSeg .pth: `dropseg/source.py`) segments every frame one-shot from frame 0 and the mask
(`dropseg/inference.py`); DropMAE pre-training weights (a WORKDIR, an imported folder, a .pth or
random:CONFIG, as `vos propagate` takes them) propagate the mask's labels with the frozen encoder
(`propagate.py`, protocol from --config, default vos_label_propagation). --mask is a palette PNG
of the first frame's size (object ids 1..K, 0 background, 255 void = background). The frames are
decoded into memory (--max-frames bounds them), then the masks are drawn in the DAVIS palette's
colours at half opacity and encoded with H.264 on their own thread. Bad input is one line (exit 2
from the command) and nothing is written.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from dropmae_jax.convert import io as convert_io
from dropmae_jax.data import video_files
from dropmae_jax.vos import davis

OPACITY = 0.5          # mask colour over the frame
PROPAGATE_CONFIG = "vos_label_propagation"
RANDOM_PREFIX = "random:"

VIDEO_EXAMPLE = """example:
  python -m dropmae_jax.vos video --weights=runs/dropseg --video=in.mp4 --mask=first.png \\
      --out=out.mp4
  python -m dropmae_jax.vos video --weights=random:demo --video=in.mp4 --mask=first.png \\
      --out=/tmp/try.mp4 --max-frames=50
"""


def add_video_parser(subparsers):
  p = subparsers.add_parser(
      "video", help="follow a first-frame mask through a video file and draw it",
      description="Segment the objects of --mask (the first frame's) in every frame of --video "
      "and write the video with the masks drawn over it: a DropSeg segmenter segments one-shot "
      "from the first frame, DropMAE pre-training weights propagate the labels (vos propagate's "
      "protocol). --config.FIELD=VALUE (repeatable) overrides one config field.",
      epilog=VIDEO_EXAMPLE, extra_prefixes=("--config.",))
  p.add_argument("--weights", required=True,
                 help="a DropSeg segmenter (fine-tuning WORKDIR, imported segmenter folder, "
                 "released .pth) or DropMAE weights (pre-training WORKDIR, imported folder, .pth, "
                 "random:CONFIG); e.g. runs/dropseg or random:demo")
  p.add_argument("--video", required=True,
                 help="the video file (anything FFmpeg reads), at least 2 frames; e.g. in.mp4")
  p.add_argument("--mask", required=True,
                 help="palette PNG of the first frame's objects, the frame's size, ids 1..K "
                 "(0 background, 255 void); e.g. first.png")
  p.add_argument("--out", required=True,
                 help="the video to write (.mp4, .mkv, .mov or .avi); e.g. out.mp4")
  p.add_argument("--config", default=None,
                 help="segmenter: config fields over the weights' own (its model must be the "
                 "weights'); DropMAE weights: the propagation protocol (default: the weights' "
                 f"config / {PROPAGATE_CONFIG})")
  p.add_argument("--max-frames", type=int, default=0,
                 help="use only the first N frames (default: 0, every frame; e.g. 100)")
  p.add_argument("--chunk", type=int, default=0,
                 help="segmenter: query frames per device call (default: 0 = 1 on the CPU, 4 on an "
                 "accelerator; e.g. 16)")
  p.add_argument("--overwrite", action="store_true",
                 help="replace --out when it exists (default: refuse)")
  p.add_argument("--quiet", action="store_true", help="no progress bar (default: shown)")
  return p


def overlay(frame: np.ndarray, ids: np.ndarray, opacity: float = OPACITY) -> np.ndarray:
  """uint8 (H, W, 3): `frame` with each object's pixels blended with its palette colour."""
  out = frame.copy()
  inside = ids > 0
  colour = davis.DAVIS_PALETTE[ids[inside]].astype(np.float32)
  out[inside] = np.round((1 - opacity) * frame[inside] + opacity * colour).astype(np.uint8)
  return out


def read_mask(path: str, height: int, width: int) -> tuple[np.ndarray, int]:
  """(uint8 (H, W) ids 0..K, K) of the first-frame mask PNG, checked (one line naming it)."""
  if not os.path.isfile(path):
    raise davis.VosDataError(f"--mask {path}: no such file")
  ids = davis.read_ids_png(path)
  if ids.shape != (height, width):
    raise davis.VosDataError(f"--mask {path}: {ids.shape[1]}x{ids.shape[0]}, but frame 0 of the "
                             f"video is {width}x{height}")
  ids = np.where(ids == davis.VOID_ID, 0, ids).astype(np.uint8)
  present = sorted(int(v) for v in np.unique(ids) if v)
  if not present:
    raise davis.VosDataError(f"--mask {path} (frame 0): holds no object (every pixel 0 or 255)")
  if present != list(range(1, present[-1] + 1)):
    raise davis.VosDataError(f"--mask {path} (frame 0): object ids {present} are not 1..K "
                             f"consecutive")
  return ids, present[-1]


def _read_frames(reader: video_files.FrameReader, path: str) -> np.ndarray:
  frames = [reader.first]
  for frame in reader.rest():
    if frame.shape != frames[0].shape:
      raise video_files.VideoFileError(
          f"--video {path}: frame {len(frames)} is {frame.shape[1]}x{frame.shape[0]}, the first "
          f"{frames[0].shape[1]}x{frames[0].shape[0]}")
    frames.append(frame)
  if len(frames) < 2:
    raise video_files.VideoFileError(f"--video {path}: {len(frames)} frame; following a mask "
                                     "needs at least 2")
  return np.stack(frames)


def _segmenter_labels(model, variables, frames, ids, chunk):
  from dropmae_jax.vos.dropseg import inference
  segmenter = inference.OneShotSegmenter(model, variables,
                                         chunk=chunk or inference.default_chunk())
  for _, labels in inference.segment_video(segmenter, frames, {0: ids}):
    yield labels


def _propagation_labels(weights, config_spec, overrides, frames, ids, k):
  from dropmae_jax.config import loading as config_loading
  from dropmae_jax.vos import features
  from dropmae_jax.vos import propagate
  config = config_loading.load_config(config_spec or PROPAGATE_CONFIG, overrides)
  params, model_config, described = features.load_weights(weights, seed=config.seed)
  encoder = features.FrameEncoder(params, model_config, frame_embed=config.vos.frame_embed,
                                  dtype=config.vos.dtype, batch_size=config.vos.batch_size)
  protocol = propagate.Protocol.from_config(config.vos)
  return described, (labels for _, labels in
                     propagate.propagate_sequence(encoder, frames, ids, k, protocol))


def _is_segmenter(spec: str) -> bool:
  """Whether `spec` names DropSeg weights (else DropMAE pre-training weights are tried)."""
  from dropmae_jax.vos.dropseg import layout as seg_layout
  from dropmae_jax.vos.dropseg import source
  if spec.startswith(RANDOM_PREFIX):
    return False
  if os.path.isfile(spec):
    state = source.read_state_dict(spec)
    return all(k in state for k in seg_layout.SIGNATURE)
  return os.path.isdir(os.path.join(spec, "segmenter")) or os.path.isdir(
      os.path.join(spec, source.EXPORT_DIR)) or _checkpoint_task(spec) == source.SEGMENTER_TASK


def _checkpoint_task(spec: str) -> str | None:
  """The task of a training WORKDIR's newest checkpoint (read from its meta), None if none."""
  import json
  from dropmae_jax.train.checkpoint import readonly
  folder = os.path.join(spec, "checkpoints")
  if not os.path.isdir(folder):
    return None
  found: list[str] = []

  class Found(Exception):
    pass

  def stop(step, meta):
    try:
      found.append(json.loads(meta["config"]).get("task", ""))
    except (KeyError, TypeError, ValueError, AttributeError):
      found.append("")
    raise Found

  try:
    readonly.read_newest_good(folder, check_meta=stop)
  except (Found, readonly.CheckpointError):
    pass
  return found[0] if found else None


def _check_out(args) -> str:
  ext = os.path.splitext(args.out)[1].lower()
  if ext not in video_files.CONTAINERS:
    raise video_files.VideoFileError(f"--out {args.out}: write a video file ending in "
                                     f"{', '.join(sorted(video_files.CONTAINERS))}")
  if os.path.isdir(args.out):
    raise video_files.VideoFileError(f"--out {args.out} is a folder")
  if os.path.exists(args.out) and not args.overwrite:
    raise video_files.VideoFileError(f"--out {args.out} exists (--overwrite to replace it)")
  if os.path.abspath(args.video) == os.path.abspath(args.out):
    raise video_files.VideoFileError(f"--out {args.out} is the input video")
  folder = os.path.dirname(os.path.abspath(args.out))
  if not os.path.isdir(folder):
    raise video_files.VideoFileError(f"--out {args.out}: no such folder {folder}")
  return ext


def video_command(args, overrides=()) -> int:
  import tqdm
  if args.max_frames < 0 or args.chunk < 0:
    raise video_files.VideoFileError(f"--max-frames and --chunk must be >= 0, got "
                                     f"{args.max_frames} and {args.chunk}")
  ext = _check_out(args)
  if not os.path.isfile(args.video):
    raise video_files.VideoFileError(f"--video {args.video}: no such file")
  reader = video_files.FrameReader(args.video, args.max_frames)
  try:
    height, width = reader.first.shape[:2]
    ids, k = read_mask(args.mask, height, width)
    frames = _read_frames(reader, args.video)
    rate = reader.rate or 25
  finally:
    reader.close()
  if _is_segmenter(args.weights):
    from dropmae_jax.vos.dropseg import source
    notes: list[str] = []
    model, variables, _ = source.load_segmenter_weights(args.weights, args.config, overrides,
                                                        notes)
    described = f"{notes[0]} (DropSeg one-shot segmentation)"
    labels = _segmenter_labels(model, variables, frames, ids, args.chunk)
  else:
    try:
      described, labels = _propagation_labels(args.weights, args.config, overrides, frames,
                                               ids, k)
    except (convert_io.ConvertError, ValueError) as e:
      if isinstance(e, davis.VosDataError):
        raise
      raise convert_io.ConvertError(f"--weights {args.weights}: neither a DropSeg segmenter nor "
                                    f"DropMAE weights ({e})") from e
    described += " (label propagation)"
  print(f"weights: {described}; video: {args.video} ({width}x{height}, {len(frames)} frames, "
        f"{k} object(s))")
  stem = os.path.splitext(args.out)[0]
  partial = f"{stem}.partial-{os.getpid()}{ext}"
  writer = video_files.FrameWriter(partial, video_files.CONTAINERS[ext], width, height, rate,
                                   overlay)
  start = time.perf_counter()
  try:
    with tqdm.tqdm(total=len(frames), unit="frame", desc="segment", disable=args.quiet) as bar:
      for t, frame_ids in enumerate(labels):
        writer.put(frames[t], frame_ids)
        bar.update(1)
    writer.finish()
    os.replace(partial, args.out)
  except BaseException:
    writer.abandon()
    if os.path.exists(partial):
      os.remove(partial)
    raise
  seconds = time.perf_counter() - start
  print(f"segmented {len(frames)} frames in {seconds:.1f} s ({len(frames) / seconds:.1f} "
        f"frames/s, drawing and encoding included); wrote {args.out}", file=sys.stdout)
  return 0
