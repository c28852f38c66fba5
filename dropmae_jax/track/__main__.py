"""Tracking command line.

  python -m dropmae_jax.track evaluate --benchmark=got10k --root=DATA --split=val --results=DIR
      [--results=DIR2 ...] [--name=LABEL ...] [--json=OUT.json] [--plots=PLOTDIR]
      [--protocol=auto|got10k|ope] [--split-file=NAMES.txt] [--allow-missing]
      scores result files (ours or the released tracker's; pytracking <seq>.txt or GOT-10k
      <seq>/<seq>_001.txt, any delimiter), prints a table, writes JSON and success/precision plots.
  python -m dropmae_jax.track pack --benchmark=got10k|trackingnet --root=DATA --split=test
      --results=DIR --out=SUBMISSION.zip
      converts results to the evaluation server's layout and zips them.
  python -m dropmae_jax.track run --weights=DIR_OR_WORKDIR --benchmark=got10k --split=val
      --root=DATA --out=RESULTS [--config=droptrack_got10k] [--batch-sequences=N]
      [--config.tracker.x=...]
      tracks every sequence of the split (see run_cli.py) and writes the benchmark's result files.
  python -m dropmae_jax.track video --weights=DIR_OR_WORKDIR_OR_random:CONFIG --video=IN.mp4
      --box=x,y,w,h --out=OUT.mp4 [--boxes=OUT.txt] [--max-frames=N]
      tracks one object through a video (see video_cli.py): writes it with the box drawn, and the
      boxes as text.
  python -m dropmae_jax.track SUBCOMMAND --help describes each subcommand's arguments.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile

from dropmae_jax.config import arguments
from dropmae_jax.data import images
from dropmae_jax.track import datasets
from dropmae_jax.track.evaluation import metrics
from dropmae_jax.track.evaluation import plots
from dropmae_jax.track.evaluation import results as results_lib

_ERRORS = (datasets.DatasetError, results_lib.ResultsError, metrics.MetricsError)
DEFAULT_PROTOCOL = {"got10k": "got10k"}    # every other benchmark: pytracking's OPE
TABLE_COLUMNS = {"got10k": ("AO", "SR0.5", "SR0.75", "FPS"),
                 "ope": ("AUC", "OP50", "OP75", "Precision", "NormPrecision")}


def format_table(title: str, rows: dict[str, dict[str, float | None]], columns: tuple[str, ...]) -> str:
  """pytracking's generate_formatted_report layout: one row per tracker, scores with 2 decimals."""
  name_width = max([len(r) for r in rows] + [len(title)]) + 5
  widths = [max(10, len(c) + 3) for c in columns]
  lines = [f"{title: <{name_width}} |" + "".join(f" {c: <{w}} |" for c, w in zip(columns, widths))]
  for label, scores in rows.items():
    cells = []
    for c, w in zip(columns, widths):
      v = scores.get(c)
      cells.append(f" {'-' if v is None else f'{v:0.2f}': <{w}} |")
    lines.append(f"{label: <{name_width}} |" + "".join(cells))
  return "\n".join(lines)


def _json_safe(value):
  """NaN / inf -> None (strict JSON has no NaN: a sequence without visible frames has no AO)."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


def _labels(result_dirs: list[str], names: list[str] | None) -> list[str]:
  if names:
    if len(names) != len(result_dirs):
      raise datasets.DatasetError(f"{len(names)} --name for {len(result_dirs)} --results")
    labels = names
  else:
    labels = [os.path.basename(os.path.normpath(d)) or d for d in result_dirs]
    if len(set(labels)) != len(labels):
      labels = [os.path.normpath(d) for d in result_dirs]
  if len(set(labels)) != len(labels):
    raise datasets.DatasetError(f"tracker labels must differ: {labels}")
  return labels


def run_evaluate(args: argparse.Namespace) -> int:
  protocol = DEFAULT_PROTOCOL.get(args.benchmark, "ope") if args.protocol == "auto" else args.protocol
  labels = _labels(args.results, args.name)
  sequences = datasets.load_dataset(args.benchmark, args.root, args.split, args.split_file)
  reports = {}
  for label, result_dir in zip(labels, args.results):
    if not os.path.isdir(result_dir):
      raise results_lib.ResultsError(f"{result_dir}: no such results folder")
    report = metrics.evaluate(protocol, sequences, result_dir, allow_missing=args.allow_missing)
    report["results_dir"] = os.path.abspath(result_dir)
    reports[label] = report
    print(f"{label}: scored {report['evaluated']} / {len(sequences)} sequences"
          + (f"; no results for {len(report['missing'])}: {', '.join(report['missing'][:10])}"
             + (" ..." if len(report["missing"]) > 10 else "") if report["missing"] else ""))
  title = f"{args.benchmark} {args.split}"
  print()
  print(format_table(title, {k: r["metrics"] for k, r in reports.items()}, TABLE_COLUMNS[protocol]))
  if args.json:
    blob = {"benchmark": args.benchmark, "split": args.split, "root": os.path.abspath(args.root),
            "protocol": protocol, "num_sequences": len(sequences), "trackers": reports}
    results_lib.atomic_write_bytes(
        args.json, (json.dumps(_json_safe(blob), indent=1, allow_nan=False) + "\n").encode())
    print(f"wrote {args.json}")
  if args.plots:
    for path in plots.report_plots(args.plots, reports, args.benchmark):
      print(f"wrote {path}")
  return 0


def run_pack(args: argparse.Namespace) -> int:
  sequences = datasets.open_benchmark(args.benchmark, args.root, args.split, args.split_file)
  no_times = []
  with tempfile.TemporaryDirectory() as tmp:
    for seq in sequences:
      boxes, times = results_lib.load_sequence_results(args.results, seq.name, len(seq.frames))
      if args.benchmark == "got10k":
        for rep, b in enumerate(boxes, 1):
          results_lib.write_got10k(tmp, seq.name, b, times if rep == 1 else None, repetition=rep)
        if times is None:
          no_times.append(seq.name)
      else:
        results_lib.write_trackingnet(tmp, seq.name, boxes[0])
    results_lib.pack_zip(tmp, args.out)
  print(f"wrote {args.out} ({len(sequences)} sequences)")
  if no_times:
    print(f"warning: no <seq>_time.txt for {len(no_times)} sequences (e.g. {no_times[0]}); the "
          f"GOT-10k server reports speed from them")
  return 0


SPLIT_HELP = ("got10k: train/val/test; lasot: test/train/all; trackingnet: test/train/TRAIN_<i>; "
              "uav, otb: test/all")
EVALUATE_EXAMPLE = """example:
  python -m dropmae_jax.track evaluate --benchmark=got10k --root=data/got10k --split=val \\
      --results=results/ours --results=results/released --json=report.json --plots=plots
"""
PACK_EXAMPLE = """example:
  python -m dropmae_jax.track pack --benchmark=got10k --root=data/got10k --split=test \\
      --results=results/got10k_test --out=submission.zip
"""


def _add_evaluate_parser(sub) -> None:
  p = sub.add_parser(
      "evaluate", help="score result files against a benchmark's ground truth",
      description="Score result files (ours or a released tracker's: pytracking <seq>.txt or "
      "GOT-10k <seq>/<seq>_001.txt, any delimiter) against a benchmark's ground truth; print a "
      "table, optionally write a JSON report and success/precision plots.",
      epilog=EVALUATE_EXAMPLE)
  p.add_argument("--benchmark", required=True, choices=datasets.BENCHMARKS,
                 help="the benchmark whose ground truth --root holds")
  p.add_argument("--root", required=True, help="the benchmark's root folder")
  p.add_argument("--split", required=True, help=SPLIT_HELP)
  p.add_argument("--results", required=True, action="append",
                 help="a results folder; repeat to compare trackers")
  p.add_argument("--name", action="append",
                 help="a label per --results, in order (default: each folder's name)")
  p.add_argument("--protocol", default="auto", choices=("auto", "got10k", "ope"),
                 help="auto: the GOT-10k toolkit's for got10k, pytracking's OPE otherwise")
  p.add_argument("--split-file",
                 help="score only the sequences named in this file, one a line (default: every "
                 "sequence of the split)")
  p.add_argument("--allow-missing", action="store_true",
                 help="score the sequences that have results and list the others (default: a "
                 "sequence without results is an error)")
  p.add_argument("--json", help="write the full report (metrics, curves, per sequence) to this "
                 "file (default: none)")
  p.add_argument("--plots", help="write success/precision plots (PNG) into this folder "
                 "(default: none)")
  p.set_defaults(func=run_evaluate)


def _add_pack_parser(sub) -> None:
  p = sub.add_parser(
      "pack", help="zip results in an evaluation server's layout",
      description="Convert a results folder to an evaluation server's layout (GOT-10k: "
      "<seq>/<seq>_00r.txt + <seq>_time.txt; TrackingNet: <seq>.txt) and zip it.",
      epilog=PACK_EXAMPLE)
  p.add_argument("--benchmark", required=True, choices=("got10k", "trackingnet"),
                 help="whose server layout to write")
  p.add_argument("--root", required=True,
                 help="the benchmark's root folder (it lists the split's sequences)")
  p.add_argument("--split", default="test", help="the split whose results to pack")
  p.add_argument("--results", required=True, help="the results folder to pack")
  p.add_argument("--out", required=True, help="the .zip to write")
  p.add_argument("--split-file",
                 help="pack only the sequences named in this file, one a line (default: every "
                 "sequence of the split)")
  p.set_defaults(func=run_pack)


def _add_run_parser(sub) -> None:
  """`run` lives in run_cli.py: it imports JAX and the model, which evaluate / pack never need."""
  from dropmae_jax.track import run_cli
  run_cli.add_run_parser(sub)
  from dropmae_jax.track import video_cli
  video_cli.add_video_parser(sub)


def _run_errors(command: str) -> tuple[type[BaseException], ...]:
  """Input mistakes `run` reports in one line (config, weights, frames); imported only for run."""
  if command not in ("run", "video"):
    return ()
  from dropmae_jax.config import loading as config_loading
  from dropmae_jax.convert import io
  from dropmae_jax.track import tracker
  from dropmae_jax.track import video_cli
  return (config_loading.ConfigError, io.ConvertError, images.ImageReadError,
          video_cli.VideoInputError)


def build_parser(with_run: bool = True) -> argparse.ArgumentParser:
  parser = arguments.ArgumentParser(prog="python -m dropmae_jax.track", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  _add_evaluate_parser(sub)
  _add_pack_parser(sub)
  if with_run:
    _add_run_parser(sub)
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  # Building `run` imports the tracker; skip it when another subcommand is named.
  parser = build_parser(with_run=not argv or argv[0] not in ("evaluate", "pack"))
  args, extra = parser.parse_known_args(argv)
  # Only `run` takes config overrides (--config.tracker.search_factor=4.5), as main.py does.
  if extra and (args.command not in ("run", "video")
                or not all(a.startswith("--config.") for a in extra)):
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  args.overrides = extra
  try:
    return int(args.func(args) or 0)
  except _ERRORS + _run_errors(args.command) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
