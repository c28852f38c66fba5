"""`python -m dropmae_jax.track run`: track every sequence of a benchmark split, write result files.

  python -m dropmae_jax.track run --weights=DIR_OR_WORKDIR --benchmark=got10k --split=val \
      --root=DATA --out=RESULTS [--config=configs/droptrack_got10k.py] [--config.tracker.x=...]

--weights: an imported tracker folder or a fine-tuning WORKDIR (`weights_source.py`); the run's
config is the weights' own config.json unless --config names another (whose model must match).

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


RUN_EXAMPLE = """example:
  python -m dropmae_jax.track run --weights=runs/droptrack --benchmark=got10k --split=val \\
      --root=data/got10k --out=results/got10k_val --config.tracker.search_factor=4.5
"""


def add_run_parser(subparsers) -> argparse.ArgumentParser:
  p = subparsers.add_parser(
      "run", help="track a benchmark split and write result files",
      description="Track every sequence of a benchmark split and write the benchmark's result "
      "files. Finished sequences are kept (a rerun tracks the others); a failed run leaves only "
      "the sequences it finished. --config.FIELD=VALUE (repeatable) overrides one field of the "
      "config, e.g. --config.tracker.search_factor=4.5.",
      epilog=RUN_EXAMPLE, extra_prefixes=("--config.",))
  p.add_argument("--weights", required=True,
                 help="tracker weights: a folder written by `python -m dropmae_jax.convert "
                 "import-tracker`, or a DropTrack fine-tuning WORKDIR (its tracker_weights/, or "
                 "its newest good checkpoint when that is newer)")
  p.add_argument("--config", default=None,
                 help="tracker config: a .py file or an installed name (droptrack_got10k); its "
                 "model must match the weights' (default: the weights' own config.json)")
  p.add_argument("--benchmark", required=True, choices=datasets.BENCHMARKS,
                 help="which benchmark's layout --root holds and --out gets")
  p.add_argument("--split", default="test",
                 help="got10k: train/val/test; lasot: test/train/all; trackingnet: "
                 "test/train/TRAIN_<i>; uav, otb: test/all")
  p.add_argument("--root", required=True, help="the benchmark's root folder")
  p.add_argument("--out", required=True,
                 help="results folder (created when the first sequence is finished)")
  p.add_argument("--split-file", default="",
                 help="a file of sequence names, one a line: only these (default: every "
                 "sequence of the split)")
  p.add_argument("--sequences", default="",
                 help="comma-separated names: only these (default: every sequence of the split)")
  p.add_argument("--batch-sequences", type=int, default=None,
                 help="sequences tracked in lock-step (default: config.tracker.batch_sequences)")
  p.add_argument("--overwrite", action="store_true",
                 help="re-track sequences that already have results in --out (default: keep "
                 "them and track the others)")
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


MODEL_FIELDS = ("variant", "template_size", "search_size")   # what must match the weights


def _overlay(base: dict, values: dict) -> None:
  """Deep-update `base` (a config as a dict) with `values` (JSON: tuples came back as lists)."""
  for key, value in values.items():
    current = base.get(key)
    if isinstance(current, dict) and isinstance(value, dict):
      _overlay(current, value)
    elif isinstance(current, tuple) and isinstance(value, list):
      base[key] = tuple(value)
    else:
      base[key] = value


def weights_run_config(weights_config, overrides=()):
  """The weights' own config.json as a run config: the DropTrack defaults (fields the file may
  predate) under the file's values, then `overrides`, locked. Raises ConfigError."""
  import ml_collections
  from dropmae_jax.config import loading as config_loading
  from dropmae_jax.config import defaults as configlib
  merged = configlib.droptrack_defaults().to_dict()
  _overlay(merged, weights_config.to_dict())
  config = ml_collections.ConfigDict(merged)
  for item in overrides:
    config_loading.apply_override(config, item)
  config.lock()
  return config


def load_tracker(config_spec: str | None, weights: str, batch_sequences: int | None,
                 overrides: list[str] = ()):
  """-> (model, variables, settings, slots, description). The weights' own config fixes the
  network's shape; the run config is `config_spec` (None: the weights' config) + `overrides`."""
  from dropmae_jax.config import loading as config_loading
  from dropmae_jax.track import ostrack
  from dropmae_jax.track import tracker
  from dropmae_jax.track import weights_source

  if config_spec is not None:   # a config that does not load is reported before the weights load
    config = config_loading.load_config(config_spec, overrides)
  variables, weights_config, described = weights_source.load_tracker_weights(weights)
  if config_spec is None:
    config = weights_run_config(weights_config, overrides)
  for field in MODEL_FIELDS:
    if weights_config.model[field] != config.model[field]:
      said = (f"--config {config_spec} says" if config_spec is not None
              else f"--config.model.{field} sets")
      raise config_loading.ConfigError(
          f"--weights {weights} holds model.{field}={weights_config.model[field]!r} but {said} "
          f"{config.model[field]!r}")
  model = ostrack.OSTrackCE.from_config(weights_config)
  settings = tracker.TrackerSettings.from_config(config)
  slots = batch_sequences or config.tracker.batch_sequences
  return model, variables, settings, slots, described


def run_command(args) -> int:
  import tqdm
  from dropmae_jax.track import runner as runner_lib

  # Config and weights first: a mistake there is reported before any data is read.
  if os.path.exists(args.out) and not os.path.isdir(args.out):
    raise results.ResultsError(f"--out {args.out} is a file, not a results folder")
  model, variables, settings, slots, described = load_tracker(
      args.config, args.weights, args.batch_sequences, args.overrides)
  config_source = args.config or "the weights' config.json"
  print(f"weights: {described}; config: {config_source}"
        + (f" + {' '.join(args.overrides)}" if args.overrides else ""))
  bench = datasets.open_benchmark(args.benchmark, args.root, args.split, args.split_file or None)
  names = [n for n in args.sequences.split(",") if n]
  if names:
    bench.restrict(names, "--sequences")
  sequences = list(bench)
  # --out is made by the first finished sequence's writes: a run that finishes none (a corrupt
  # frame, an interrupt) leaves nothing behind.
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
       runner_lib.BatchedRunner(model, variables, settings, slots=slots) as runner:
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
