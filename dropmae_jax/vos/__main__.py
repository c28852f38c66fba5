"""Zero-shot video object segmentation by label propagation, and the DAVIS J&F.

  python -m dropmae_jax.vos propagate --weights=W --root=DAVIS --out=DIR
      [--config=vos_label_propagation] [--config.vos.topk=10 ...] [--subset val] [--year 2017]
      [--sequences a,b] [--json OUT.json]
    W: a pre-training WORKDIR (latest checkpoint), an imported DIR (`convert import`), a released
    .pth / .safetensors, or random:CONFIG (fresh init of a config's model, e.g. random:demo).
    Writes DIR/<seq>/<frame>.png (palette PNGs), then scores them (unless --no-evaluate).

  python -m dropmae_jax.vos evaluate --root=DAVIS --results=DIR [--json OUT.json]
      [--subset val] [--year 2017] [--sequences a,b]
    Scores any folder of palette PNGs as davis2017-evaluation (semi-supervised) and prints its
    tables.
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
  params, model_config, described = features.load_weights(args.weights, seed=config.seed)
  print(f"weights: {described}")
  encoder = features.FrameEncoder(params, model_config, frame_embed=config.vos.frame_embed,
                                  dtype=config.vos.dtype, batch_size=config.vos.batch_size)
  protocol = propagate.Protocol.from_config(config.vos)
  start = time.time()
  names = propagate.run(encoder, dataset, args.out, protocol, progress=not args.quiet)
  print(f"propagated {len(names)} sequence(s) in {time.time() - start:.1f} s -> {args.out}")
  if args.no_evaluate:
    return None
  return run_evaluate(dataset, args.out, args.json, progress=not args.quiet)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m dropmae_jax.vos", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  for name in ("evaluate", "propagate"):
    p = sub.add_parser(name)
    p.add_argument("--root", required=True, help="DAVIS-layout folder")
    p.add_argument("--subset", default=None, help="ImageSets subset (default: val)")
    p.add_argument("--year", default=None, choices=davis.YEARS, help="2017 | 2016 (default 2017)")
    p.add_argument("--sequences", default="", help="comma-separated names instead of the subset")
    p.add_argument("--json", default=None, help="write the scores here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if name == "evaluate":
      p.add_argument("--results", required=True, help="folder of <seq>/<frame>.png results")
    else:
      p.add_argument("--weights", required=True, help="WORKDIR | DIR | .pth | random:CONFIG")
      p.add_argument("--out", required=True, help="output folder for the palette PNGs")
      p.add_argument("--config", default=DEFAULT_CONFIG, help="protocol config (path or name)")
      p.add_argument("--no-evaluate", action="store_true", help="only write the masks")
  args, rest = parser.parse_known_args(argv)
  overrides = [a for a in rest if a.startswith("--config.")]
  unknown = [a for a in rest if not a.startswith("--config.")]
  if unknown or (overrides and args.command != "propagate"):
    parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
  from dropmae_jax.config import loading as config_loading
  from dropmae_jax.convert import io as convert_io
  from dropmae_jax.convert import layout
  try:
    if args.command == "evaluate":
      run_evaluate(_dataset(args), args.results, args.json, progress=not args.quiet)
    else:
      run_propagate(args, overrides)
  except (davis.VosDataError, convert_io.ConvertError, layout.LayoutError,
          config_loading.ConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
