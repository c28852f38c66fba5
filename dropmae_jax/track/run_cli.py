"""`python -m dropmae_jax.track run`: track every sequence of a benchmark split, write result files.

  python -m dropmae_jax.track run --config=configs/droptrack_got10k.py --weights=DIR \
      --benchmark=got10k --split=val --root=DATA --out=RESULTS

Sequences run in lock-step batches (`config.tracker.batch_sequences`, over all local devices);
`--batch-sequences=1` is the released one-sequence-at-a-time loop. Results go in the benchmark's
own layout (GOT-10k `<seq>/<seq>_001.txt` + `_time.txt`, TrackingNet `<seq>.txt`, pytracking
`<seq>.txt` elsewhere); every file is written atomically and a sequence's box file last, so a rerun
skips finished sequences and nothing half-written is ever left.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from dropmae_jax.track import datasets
from dropmae_jax.track.evaluation import results


def add_run_parser(subparsers) -> argparse.ArgumentParser:
  p = subparsers.add_parser("run", help="track a benchmark split and write result files")
  p.add_argument("--config", required=True,
                 help="tracker config: a file or an installed name (droptrack_got10k)")
  p.add_argument("--weights", required=True,
                 help="tracker weights: a folder written by `convert import-tracker`")
  p.add_argument("--benchmark", required=True, choices=datasets.BENCHMARKS)
  p.add_argument("--split", default="test")
  p.add_argument("--root", required=True, help="the benchmark's root folder")
  p.add_argument("--out", required=True, help="results folder (created)")
  p.add_argument("--split-file", default="", help="a file of sequence names, one a line: only these")
  p.add_argument("--sequences", default="", help="comma-separated names: only these")
  p.add_argument("--batch-sequences", type=int, default=None,
                 help="sequences tracked in lock-step (default config.tracker.batch_sequences)")
  p.add_argument("--overwrite", action="store_true", help="re-track finished sequences")
  p.set_defaults(func=run_command)
  return p


def result_path(benchmark: str, out: str, name: str) -> str:
  """The box file whose presence means `name` is finished."""
  if benchmark == "got10k":
    return os.path.join(out, name, f"{name}_001.txt")
  return os.path.join(out, f"{name}.txt")


def write_result(benchmark: str, out: str, name: str, boxes, times) -> str:
  if benchmark == "got10k":
    return results.write_got10k(out, name, boxes, times)
  if benchmark == "trackingnet":
    return results.write_trackingnet(out, name, boxes)
  return results.write_pytracking(out, name, boxes, times)


def load_tracker(config_spec: str, weights: str, batch_sequences: int | None,
                 overrides: list[str] = ()):
  """-> (model, variables, settings, slots). The weights' own config fixes the network's shape."""
  from dropmae_jax.config import loading as config_loading
  from dropmae_jax.convert import io
  from dropmae_jax.track import ostrack
  from dropmae_jax.track import tracker

  config = config_loading.load_config(config_spec, overrides)
  variables, weights_config = io.load_tracker(weights)
  for field in ("variant", "template_size", "search_size"):
    if weights_config.model[field] != config.model[field]:
      raise config_loading.ConfigError(
          f"--weights {weights} holds model.{field}={weights_config.model[field]!r} but --config "
          f"{config_spec} says {config.model[field]!r}")
  model = ostrack.OSTrackCE.from_config(weights_config)
  settings = tracker.TrackerSettings.from_config(config)
  slots = batch_sequences or config.tracker.batch_sequences
  return model, variables, settings, slots


def run_command(args) -> int:
  import tqdm
  from dropmae_jax.track import tracker

  # Config and weights first: a mistake there is reported before any data is read.
  model, variables, settings, slots = load_tracker(args.config, args.weights, args.batch_sequences,
                                                   args.overrides)
  bench = datasets.open_benchmark(args.benchmark, args.root, args.split, args.split_file or None)
  names = [n for n in args.sequences.split(",") if n]
  if names:
    bench.restrict(names, "--sequences")
  sequences = list(bench)
  os.makedirs(args.out, exist_ok=True)
  todo = [s for s in sequences
          if args.overwrite or not os.path.isfile(result_path(args.benchmark, args.out, s.name))]
  if len(todo) < len(sequences):
    print(f"{len(sequences) - len(todo)} of {len(sequences)} sequences already have results in "
          f"{args.out}; tracking the other {len(todo)} (--overwrite to redo)")
  if not todo:
    return 0
  total = sum(len(s.frames) - 1 for s in todo)
  t0 = time.perf_counter()
  done = 0
  with tqdm.tqdm(total=total, unit="frame", desc=f"{args.benchmark}/{args.split}",
                 smoothing=0.1) as bar, \
       tracker.BatchedRunner(model, variables, settings, slots=slots) as runner:
    for result in runner.run(todo, on_frames=bar.update):
      write_result(args.benchmark, args.out, result.sequence.name, result.boxes, result.times)
      done += 1
      bar.set_postfix(sequences=f"{done}/{len(todo)}")
  seconds = time.perf_counter() - t0
  print(f"tracked {done} sequences, {total} frames in {seconds:.1f} s ({total / seconds:.1f} "
        f"frames/s, {runner.slots} in lock-step); results in {args.out}")
  if args.benchmark in ("got10k", "trackingnet") and args.split == "test":
    print(f"for the evaluation server: python -m dropmae_jax.track pack --benchmark={args.benchmark} "
          f"--root={args.root} --split=test --results={args.out} --out=SUBMISSION.zip")
  return 0


if __name__ == "__main__":
  sys.exit("use: python -m dropmae_jax.track run ...")
