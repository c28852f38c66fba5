"""Zero-shot video object segmentation by label propagation, and the DAVIS J&F.

  python -m dropmae_jax.vos propagate --weights=W --root=DAVIS --out=DIR
      [--config=vos_label_propagation] [--config.vos.topk=10 ...] [--subset val] [--year 2017]
      [--sequences a,b] [--json OUT.json] [--overwrite]
    W: a pre-training WORKDIR (latest checkpoint), an imported DIR (`convert import`), a released
    .pth / .safetensors, or random:CONFIG (fresh init of a config's model, e.g. random:demo).
    Writes DIR/<seq>/<frame>.png (palette PNGs), then scores them (unless --no-evaluate).
    Sequences with finished results in DIR are kept unless --overwrite.

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
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args, rest = parser.parse_known_args(argv)
  overrides = [a for a in rest if a.startswith("--config.")]
  unknown = [a for a in rest if not a.startswith("--config.")]
  if unknown or (overrides and args.command != "propagate"):
    parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
  from dropmae_jax.config import loading as config_loading
  from dropmae_jax.convert import io as convert_io
  from dropmae_jax.convert import layout
  from dropmae_jax.vos import propagate
  try:
    if args.command == "evaluate":
      run_evaluate(_dataset(args), args.results, args.json, progress=not args.quiet)
    else:
      run_propagate(args, overrides)
  except (davis.VosDataError, convert_io.ConvertError, layout.LayoutError,
          config_loading.ConfigError, propagate.OutputError, propagate.ProtocolError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
