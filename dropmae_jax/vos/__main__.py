"""Zero-shot video object segmentation by label propagation, and the DAVIS J&F.

  python -m dropmae_jax.vos propagate --weights=W --root=DAVIS --out=DIR
      [--config=vos_label_propagation] [--config.vos.topk=10 ...] [--subset val] [--year 2017]
      [--sequences a,b] [--json OUT.json] [--overwrite]
    W: a pre-training WORKDIR (latest checkpoint), an imported DIR (`convert import`), a released
    .pth / .safetensors, or random:CONFIG (fresh init of a config's model, e.g. random:demo).
    Writes DIR/<seq>/<frame>.png (palette PNGs), then scores them (unless --no-evaluate).
    Sequences with finished results in DIR are kept unless --overwrite.

  python -m dropmae_jax.vos segment --weights=W --root=DAVIS --out=DIR [--split val]
      [--year 2017|2016] [--sequences a,b] [--overwrite] [--config NAME] [--config.x=..]
      [--json OUT.json] [--no-evaluate] [--chunk N]
    DropSeg one-shot segmentation (jimmy-dq/DropSeg submit_eval_davis17.py / _davis16.py):
    DIR/<seq>/<frame>.png, then the DAVIS scores. --dataset youtube (or a --root holding
    meta.json): a YouTube-VOS valid / test folder -> DIR/Annotations/<video>/<frame>.png and
    DIR/submission.zip. W: a DropSeg fine-tuning WORKDIR, an imported segmenter folder
    (`convert import-segmenter`) or a released DropSeg .pth.

  python -m dropmae_jax.vos video --weights=W --video=in.mp4 --mask=first.png --out=out.mp4
    The video with the objects' masks drawn over it: W a segmenter (as above) segments it;
    DropMAE pre-training weights propagate the first mask's labels instead.

  python -m dropmae_jax.vos evaluate --root=DAVIS --results=DIR [--json OUT.json]
      [--subset val] [--year 2017] [--sequences a,b]
    Scores any folder of palette PNGs as davis2017-evaluation (semi-supervised) and prints its
    tables.

  python -m dropmae_jax.vos SUBCOMMAND --help describes each subcommand's arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from dropmae_jax.vos import davis
from dropmae_jax.vos import metrics

DEFAULT_CONFIG = "vos_label_propagation"


def _dataset(args, config=None) -> davis.DavisDataset:
  subset = args.subset or (config.data.subset if config else "val")
  year = args.year or (config.data.year if config else "2017")
  resolution = config.data.resolution if config else "480p"
  names = [s for s in args.sequences.split(",") if s] if args.sequences else None
  return davis.DavisDataset(args.root, subset=subset, year=year, resolution=resolution,
                            sequences=names)


def _write_json(path: str, payload: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2)
  os.replace(tmp, path)


def run_evaluate(dataset: davis.DavisDataset, results: str, json_path: str | None,
                 progress: bool = True) -> dict:
  scores = metrics.evaluate(dataset, results, progress=progress)
  print(metrics.format_table(scores, dataset.subset))
  if json_path:
    _write_json(json_path, scores)
    print(f"wrote {json_path}")
  return scores


def run_propagate(args, overrides: list[str]) -> dict | None:
  from dropmae_jax.config import loading as config_loading
  from dropmae_jax.vos import features
  from dropmae_jax.vos import propagate
  config = config_loading.load_config(args.config, overrides)
  dataset = _dataset(args, config)
  # What is already in --out is settled first: a refusal costs nothing and writes nothing.
  todo, kept = propagate.select_sequences(dataset, args.out, overwrite=args.overwrite)
  params, model_config, described = features.load_weights(args.weights, seed=config.seed)
  print(f"weights: {described}")
  if kept:
    print(f"{len(kept)} of {len(kept) + len(todo)} sequences already have results in {args.out}; "
          f"propagating the other {len(todo)} (--overwrite to redo)")
  if todo:
    encoder = features.FrameEncoder(params, model_config, frame_embed=config.vos.frame_embed,
                                    dtype=config.vos.dtype, batch_size=config.vos.batch_size)
    protocol = propagate.Protocol.from_config(config.vos)
    start = time.time()
    names = propagate.run(encoder, dataset, args.out, protocol, progress=not args.quiet,
                          sequences=todo)
    print(f"propagated {len(names)} sequence(s) in {time.time() - start:.1f} s -> {args.out}")
  if args.no_evaluate:
    return None
  return run_evaluate(dataset, args.out, args.json, progress=not args.quiet)


def run_segment(args, overrides: list[str]) -> dict | None:
  from dropmae_jax.vos import propagate
  from dropmae_jax.vos import youtube
  from dropmae_jax.vos.dropseg import inference
  from dropmae_jax.vos.dropseg import segment
  from dropmae_jax.vos.dropseg import source
  names = [s for s in args.sequences.split(",") if s] if args.sequences else None
  is_youtube = args.dataset == "youtube" or (args.dataset == "auto"
                                             and youtube.is_youtube_root(args.root))
  if is_youtube:
    if not os.path.isdir(args.root):
      raise davis.VosDataError(f"{args.root}: YouTube-VOS folder not found")
    dataset = youtube.YouTubeVOS(args.root, sequences=names)
    results = os.path.join(args.out, segment.ANNOTATIONS)
  else:
    dataset = _dataset(args)
    results = args.out
  # What is already in --out is settled first: a refusal costs nothing and writes nothing.
  todo, kept = propagate.select_sequences(dataset, results, overwrite=args.overwrite)
  notes: list[str] = []
  model, variables, _ = source.load_segmenter_weights(args.weights, args.config, overrides,
                                                      notes)
  print(f"weights: {notes[0]}")
  if kept:
    print(f"{len(kept)} of {len(kept) + len(todo)} sequences already have results in {results}; "
          f"segmenting the other {len(todo)} (--overwrite to redo)")
  if todo:
    segmenter = inference.OneShotSegmenter(model, variables,
                                           chunk=args.chunk or inference.default_chunk())
    start = time.time()
    names = segment.run(segmenter, dataset, results, todo, progress=not args.quiet)
    frames = sum(s.num_frames for s in todo)
    seconds = time.time() - start
    print(f"segmented {len(names)} sequence(s), {frames} frames in {seconds:.1f} s "
          f"({frames / max(seconds, 1e-9):.1f} frames/s) -> {results}")
  if is_youtube:
    print(f"wrote {segment.write_submission(args.out, dataset)} (YouTube-VOS is scored by the "
          "challenge server)")
    return None
  if args.no_evaluate:
    return None
  return run_evaluate(dataset, args.out, args.json, progress=not args.quiet)


SEGMENT_EXAMPLE = """example:
  python -m dropmae_jax.vos segment --weights=runs/dropseg --root=data/DAVIS --out=results/seg17
  python -m dropmae_jax.vos segment --weights=dropseg_210000.pth --root=data/DAVIS --year=2016 \\
      --out=results/seg16 --json=results/seg16.json
  python -m dropmae_jax.vos segment --weights=runs/dropseg --root=data/youtube/valid \\
      --out=results/yv19
"""
PROPAGATE_EXAMPLE = """example:
  python -m dropmae_jax.vos propagate --weights=runs/k400 --root=data/DAVIS --out=results/k400 \\
      --json=results/k400.json --config.vos.topk=10
"""
EVALUATE_EXAMPLE = """example:
  python -m dropmae_jax.vos evaluate --root=data/DAVIS --results=results/k400 --json=scores.json
"""


def build_parser() -> argparse.ArgumentParser:
  from dropmae_jax.config import arguments
  parser = arguments.ArgumentParser(prog="python -m dropmae_jax.vos", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  evaluate = sub.add_parser(
      "evaluate", help="score a folder of palette PNGs (DAVIS J&F)", epilog=EVALUATE_EXAMPLE,
      description="Score any folder of <seq>/<frame>.png palette PNGs as davis2017-evaluation "
      "(semi-supervised) does and print its tables.")
  propagate = sub.add_parser(
      "propagate", help="label propagation with a DropMAE encoder, then score it",
      epilog=PROPAGATE_EXAMPLE, extra_prefixes=("--config.",),
      description="Propagate each sequence's first-frame annotation with the frozen encoder's "
      "features, write --out/<seq>/<frame>.png (palette PNGs), then score them. Finished "
      "sequences in --out are kept (a rerun propagates the others; --overwrite redoes them); a "
      "failed run leaves only the sequences it finished. --config.FIELD=VALUE (repeatable) "
      "overrides one field of the protocol config, e.g. --config.vos.topk=10.")
  for p in (evaluate, propagate):
    p.add_argument("--root", required=True,
                   help="DAVIS-layout folder (JPEGImages/, Annotations/, ImageSets/)")
    p.add_argument("--subset", default=None,
                   help="ImageSets/<year>/<subset>.txt to read (default: val"
                   + (", or the config's data.subset)" if p is propagate else ")"))
    p.add_argument("--year", default=None, choices=davis.YEARS,
                   help="2017: objects apart; 2016: all objects merged into one (default: 2017"
                   + (", or the config's data.year)" if p is propagate else ")"))
    p.add_argument("--sequences", default="",
                   help="comma-separated sequence names to use instead of the subset's list "
                   "(default: the subset's)")
    p.add_argument("--json", default=None,
                   help="write the scores to this JSON file (default: printed only)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
  evaluate.add_argument("--results", required=True,
                        help="folder of <seq>/<frame>.png palette PNGs to score")
  propagate.add_argument("--weights", required=True,
                         help="a pre-training WORKDIR (its newest good checkpoint), an imported "
                         "folder (`convert import`), a released .pth / .safetensors, or "
                         "random:CONFIG (fresh initialisation of a config's model)")
  propagate.add_argument("--out", required=True,
                         help="results folder for the palette PNGs (a run that finishes no "
                         "sequence leaves none behind)")
  propagate.add_argument("--config", default=DEFAULT_CONFIG,
                         help="protocol config: a .py file or an installed name")
  propagate.add_argument("--overwrite", action="store_true",
                         help="propagate sequences that already have results in --out again "
                         "and replace them (default: keep them)")
  propagate.add_argument("--no-evaluate", action="store_true",
                         help="only write the masks (default: score them afterwards)")
  add_segment_parser(sub)
  from dropmae_jax.vos import video
  video.add_video_parser(sub)
  return parser


def add_segment_parser(sub) -> None:
  p = sub.add_parser(
      "segment", help="DropSeg one-shot segmentation of DAVIS / YouTube-VOS, then score it",
      epilog=SEGMENT_EXAMPLE, extra_prefixes=("--config.",),
      description="Segment every sequence one-shot from its first annotated frame (jimmy-dq/"
      "DropSeg submit_eval_davis17.py; --year 2016: submit_eval_davis16.py, 0/255 masks), write "
      "--out/<seq>/<frame>.png (palette PNGs) and score them. YouTube-VOS: --out/Annotations/"
      "<video>/<frame>.png for the frames of JPEGImages/ and --out/submission.zip. Finished "
      "sequences in --out are kept (--overwrite redoes them); a failed run leaves no half-written "
      "sequence. --config.FIELD=VALUE (repeatable) overrides one field of the weights' config.")
  p.add_argument("--weights", required=True,
                 help="a DropSeg fine-tuning WORKDIR (its segmenter_weights/ or newest good "
                 "checkpoint), an imported segmenter folder (`convert import-segmenter`) or a "
                 "released DropSeg .pth (state dict or <id>_checkpoint.pth); e.g. runs/dropseg")
  p.add_argument("--root", required=True,
                 help="DAVIS-layout folder (JPEGImages/480p, Annotations/480p, ImageSets/) or a "
                 "YouTube-VOS valid/ folder (JPEGImages/, Annotations/, meta.json); e.g. "
                 "data/DAVIS")
  p.add_argument("--out", required=True,
                 help="results folder, e.g. results/dropseg (created; finished sequences in it "
                 "are kept unless --overwrite)")
  p.add_argument("--dataset", default="auto", choices=("auto", "davis", "youtube"),
                 help="the layout of --root (default: auto, youtube when it holds meta.json and "
                 "no ImageSets/)")
  p.add_argument("--split", "--subset", dest="subset", default=None,
                 help="DAVIS ImageSets/<year>/<split>.txt to read (default: val; e.g. train)")
  p.add_argument("--year", default=None, choices=davis.YEARS,
                 help="DAVIS 2017: objects apart; 2016: all objects merged into one, written "
                 "0/255 (default: 2017)")
  p.add_argument("--sequences", default="",
                 help="comma-separated sequence / video names instead of the split's list "
                 "(default: all; e.g. bike-packing,blackswan)")
  p.add_argument("--config", default=None,
                 help="config whose fields replace the weights' own; its model must be the "
                 "weights' (default: the weights' config; e.g. dropseg_davis_ytvos)")
  p.add_argument("--chunk", type=int, default=0,
                 help="query frames per device call, all objects of each in the same call "
                 "(default: 0 = 1 on the CPU, 4 on an accelerator; e.g. 16)")
  p.add_argument("--overwrite", action="store_true",
                 help="segment sequences that already have results in --out again and replace "
                 "them (default: keep them)")
  p.add_argument("--no-evaluate", action="store_true",
                 help="only write the masks (default: score DAVIS results afterwards)")
  p.add_argument("--json", default=None,
                 help="write the DAVIS scores to this JSON file (default: printed only; e.g. "
                 "scores.json)")
  p.add_argument("--quiet", action="store_true", help="no progress bars (default: shown)")


def main(argv=None) -> int:
  parser = build_parser()
  args, rest = parser.parse_known_args(argv)
  overrides = [a for a in rest if a.startswith("--config.")]
  unknown = [a for a in rest if not a.startswith("--config.")]
  if unknown or (overrides and args.command not in ("propagate", "segment", "video")):
    parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
  from dropmae_jax.config import loading as config_loading
  from dropmae_jax.convert import io as convert_io
  from dropmae_jax.convert import layout
  from dropmae_jax.data import video_files
  from dropmae_jax.vos import propagate
  from dropmae_jax.vos import video
  try:
    if args.command == "evaluate":
      run_evaluate(_dataset(args), args.results, args.json, progress=not args.quiet)
    elif args.command == "segment":
      if args.chunk < 0:
        raise config_loading.ConfigError(f"--chunk must be >= 0 (0: automatic), got {args.chunk}")
      run_segment(args, overrides)
    elif args.command == "video":
      video.video_command(args, overrides)
    else:
      run_propagate(args, overrides)
  except (davis.VosDataError, convert_io.ConvertError, layout.LayoutError,
          config_loading.ConfigError, propagate.OutputError, propagate.ProtocolError,
          video_files.VideoFileError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
