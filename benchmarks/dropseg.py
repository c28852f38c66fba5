"""DropSeg speed: fine-tuning pairs/s per device, one-shot inference frames/s (1 object, K objects
batched in one call) and what batching the objects saves over the released one-object loop.

  python benchmarks/dropseg.py            # released ViT-B/16: train 384, infer 480x854 (GPU)
  python benchmarks/dropseg.py --config=dropseg_demo --depth=2 --img-size=128 \
      --frame-size=320x240 --train-batch=8 --iters=5             # a CPU, in about a minute

Rows, each measured in this run:
  train step          `vos/step.make_seg_train_step` (both objects of a pair in one model call,
                      bootstrapped CE past its warm-up, backward, Adam) on random batches of
                      --train-batch pairs per device over all devices, in the config's compute
                      dtype (the released config: bfloat16 for the released AMP); pairs/s per device
  inference, 1 object `OneShotSegmenter.segment` of a --frame-size frame from frame 0 and a mask
                      with one object (normalise, pad to x16, network, aggregation, unpad, resize,
                      argmax, probabilities back to the host), float32 as the released evaluation;
                      frames/s
  inference, K objects the same with --objects objects in ONE call (this port)
  K separate calls    the released loop (jimmy-dq/DropSeg `inference_core.py`: one backbone pass
                      per object): K one-object calls per frame; frames/s
The ratio is (K separate calls) time / (K objects batched) time: > 1 means batching the objects
saves time. Random weights: speed does not depend on them.
Prints a table and a RESULT line: train<S>_pairs_per_sec_per_device, infer_fps_1obj,
infer_fps_<K>obj_batched, infer_fps_<K>obj_separate, batched_vs_separate_ratio.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

import jax  # noqa: E402
import numpy as np  # noqa: E402

from dropmae_jax.config import loading as config_loading  # noqa: E402
from dropmae_jax.train import sharding  # noqa: E402
from dropmae_jax.vos import losses  # noqa: E402
from dropmae_jax.vos import optim  # noqa: E402
from dropmae_jax.vos import step as step_lib  # noqa: E402
from dropmae_jax.vos.dropseg import inference  # noqa: E402
from dropmae_jax.vos.dropseg import model as model_lib  # noqa: E402


def load(args):
  c = config_loading.load_config(args.config)
  if args.variant:
    c.model.variant = args.variant
  if args.depth:
    c.model.depth = args.depth
  if args.img_size:
    c.model.img_size = args.img_size
  if args.dtype:
    c.model.dtype = args.dtype
  return c


def random_batch(rng, b: int, s: int) -> dict:
  """Random frames; a target box in every pair, a second object in every other pair."""
  labels = np.zeros((b, s, s), np.int32)
  masks = np.zeros((b, 2, s, s), np.float32)
  selector = np.ones((b, 2), np.float32)
  for i in range(b):
    masks[i, 0, s // 4:s // 2, s // 4:s // 2] = 1
    labels[i, s // 4 + 2:s // 2 + 2, s // 4:s // 2] = 1
    if i % 2:
      selector[i, 1] = 0
    else:
      masks[i, 1, :s // 8, :s // 8] = 1
      labels[i, :s // 8, :s // 8] = 2
  return {"memory_frame": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
          "query_frame": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
          "memory_masks": masks, "query_labels": labels, "selector": selector}


def train_rate(c, per_device: int, iters: int) -> float:
  """Pairs/s per device of the jitted, donated step (data-parallel over all devices)."""
  n_dev = jax.device_count()
  c.batch_size = per_device * n_dev
  model = model_lib.DropSeg.from_config(c)
  tx, schedule = optim.make_segmentation_optimizer(c)
  bce = losses.BootstrappedCE.from_config(c.loss)
  mesh = sharding.make_mesh(c.mesh)
  create = lambda: step_lib.create_seg_state(model, tx, 0)
  shardings = sharding.state_shardings(jax.eval_shape(create), mesh)
  state = jax.jit(create, out_shardings=shardings)()
  # Past the warm-up (the bootstrapped CE's sort is on): start at step end_warm + 1.
  state = state.replace(step=jax.device_put(np.int32(int(c.loss.end_warm) + 1), shardings.step))
  fn = step_lib.make_seg_train_step(model, tx, schedule, bce, accum_steps=int(c.accum_steps))
  step = jax.jit(lambda s, b: fn(s, b, step_lib.step_rng(s)), donate_argnums=(0,),
                 out_shardings=(shardings, sharding.replicated(mesh)))
  batch = sharding.global_batch(random_batch(np.random.default_rng(0), c.batch_size,
                                             int(c.model.img_size)),
                                sharding.batch_sharding(mesh))
  for _ in range(2):   # compile, then one more to settle
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(iters):
    state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  return per_device * iters / (time.perf_counter() - start)


def object_masks(h: int, w: int, k: int) -> np.ndarray:
  """(H, W) ids 1..k: k side-by-side boxes."""
  ids = np.zeros((h, w), np.uint8)
  for i in range(k):
    x0 = (i * w) // k + w // (4 * k)
    ids[h // 3:2 * h // 3, x0:x0 + w // (2 * k)] = i + 1
  return ids


def inference_rates(c, frame_hw: tuple[int, int], k: int, iters: int) -> dict[str, float]:
  """Frames/s of one-shot segmentation: 1 object, K batched, K separate one-object calls."""
  model = model_lib.DropSeg.from_config(c).clone(dtype="float32", drop_path_rate=0.0)
  segmenter = inference.OneShotSegmenter(model, model_lib.init_variables(model, 0))
  h, w = frame_hw
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (iters + 1, h, w, 3), dtype=np.uint8)
  ids = object_masks(h, w, k)
  singles = [np.where(ids == i + 1, 1, 0).astype(np.uint8) for i in range(k)]

  def one_object():
    for t in range(1, iters + 1):
      segmenter.segment(frames[0], singles[0], frames[t])

  def batched():
    for t in range(1, iters + 1):
      segmenter.segment(frames[0], ids, frames[t])

  def separate():   # the released loop: one pass per object
    for t in range(1, iters + 1):
      for single in singles:
        segmenter.segment(frames[0], single, frames[t])

  timings = {}
  for name, fn in (("1obj", one_object), ("batched", batched), ("separate", separate)):
    segmenter.segment(frames[0], singles[0] if name != "batched" else ids, frames[1])  # compile
    start = time.perf_counter()
    fn()
    timings[name] = time.perf_counter() - start
  # Again in reverse order: a shared machine's load change falls on every row.
  for name, fn in (("separate", separate), ("batched", batched), ("1obj", one_object)):
    start = time.perf_counter()
    fn()
    timings[name] += time.perf_counter() - start
  return {"infer_fps_1obj": 2 * iters / timings["1obj"],
          f"infer_fps_{k}obj_batched": 2 * iters / timings["batched"],
          f"infer_fps_{k}obj_separate": 2 * iters / timings["separate"],
          "batched_vs_separate_ratio": timings["separate"] / timings["batched"]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="dropseg_davis_ytvos",
                      help="an installed config or a .py path (dropseg_demo: the tiny model)")
  parser.add_argument("--variant", default="", help="ViT size/patch (default: the config's)")
  parser.add_argument("--depth", type=int, default=0, help="blocks (0: the config's)")
  parser.add_argument("--img-size", type=int, default=0,
                      help="training frame side (0: the config's; released 384)")
  parser.add_argument("--dtype", default="", help="training compute dtype (default: the config's)")
  parser.add_argument("--train-batch", type=int, default=4,
                      help="training pairs per device (released: 4 per GPU)")
  parser.add_argument("--train-iters", type=int, default=20, help="training steps timed")
  parser.add_argument("--frame-size", default="854x480", help="inference WIDTHxHEIGHT (DAVIS 480p)")
  parser.add_argument("--objects", type=int, default=3, help="K objects per frame")
  parser.add_argument("--iters", type=int, default=20,
                      help="frames timed per inference row (twice, in alternating order)")
  args = parser.parse_args()
  try:
    width, height = (int(v) for v in args.frame_size.lower().split("x"))
  except ValueError:
    print(f"error: --frame-size wants WIDTHxHEIGHT, e.g. 854x480, got {args.frame_size!r}",
          file=sys.stderr)
    sys.exit(2)
  if args.objects < 2:
    print(f"error: --objects={args.objects}: the batched rows need 2 or more", file=sys.stderr)
    sys.exit(2)
  try:
    c = load(args)
    model_lib.variable_shapes(model_lib.DropSeg.from_config(c))
  except (config_loading.ConfigError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  s = int(c.model.img_size)
  train = train_rate(c, args.train_batch, args.train_iters)
  rates = inference_rates(c, (height, width), args.objects, args.iters)
  k = args.objects
  depth = c.model.depth if c.model.depth > 0 else "full"
  print(f"\nDropSeg, {c.model.variant} (depth {depth}), {device}")
  print(f"{'row':>50}{'rate':>12}")
  print(f"{f'train step, {s}x{s}, {c.model.dtype}, {args.train_batch}/device':>50}"
        f"{train:>12.1f}  pairs/s/device")
  for name, key in (("inference, 1 object", "infer_fps_1obj"),
                    (f"inference, {k} objects in one call", f"infer_fps_{k}obj_batched"),
                    (f"inference, {k} one-object calls (released)", f"infer_fps_{k}obj_separate")):
    print(f"{name + f', {width}x{height}':>50}{rates[key]:>12.2f}  frames/s")
  print(f"{'batched vs separate (time ratio)':>50}{rates['batched_vs_separate_ratio']:>12.2f}x")
  print("RESULT " + " ".join([f"train{s}_pairs_per_sec_per_device={train:.2f}"]
                             + [f"{key}={v:.3f}" for key, v in rates.items()]))


if __name__ == "__main__":
  main()
