"""Train-step throughput: TwinMAE (P = 0) vs DropMAE (ASAD reference), measured in one run.

  python benchmarks/train_step.py                         # ViT-B/16, batch 64 (accelerators)
  python benchmarks/train_step.py --variant=micro/16 --img_size=112 --batch=16   # a CPU

Prints a table of ms/step and pairs/s with ratios against TwinMAE measured in the same run, the
released-code H100 figures of DESIGN.md §2 beside them, and a RESULT line for scripts.
Synthetic uint8 frames: this measures the model step, not the input pipeline.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from dropmae_jax import configlib
from dropmae_jax.models import mae
from dropmae_jax.train import optim
from dropmae_jax.train import step as step_lib

RELEASED_H100 = {"twinmae": (89.2, 718), "dropmae": (316.4, 202)}  # ms/step, pairs/s at batch 64


def time_step(config, batch: int, iters: int) -> float:
  model = mae.DropMAE.from_config(config)
  tx = optim.make_optimizer(config, steps_per_epoch=1000)
  schedule = optim.make_lr_schedule(config, steps_per_epoch=1000)
  size = config.model.img_size
  state = jax.jit(lambda: step_lib.create_state(model, tx, 0, jnp.zeros((1, 2, size, size, 3))))()
  fn = step_lib.make_train_step(model, tx, schedule)
  step = jax.jit(lambda s, b: fn(s, b, step_lib.step_rng(s)), donate_argnums=(0,))
  frames = jax.random.randint(jax.random.key(0), (batch, 2, size, size, 3), 0, 256).astype(jnp.uint8)
  state, metrics = step(state, {"frames": frames})  # compile
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(iters):
    state, metrics = step(state, {"frames": frames})
  jax.block_until_ready(metrics)
  return (time.perf_counter() - start) / iters


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="B/16")
  parser.add_argument("--img_size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--iters", type=int, default=10)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--decoder", default="512,8,16", help="width,depth,heads")
  args = parser.parse_args()

  rows = {}
  for name, ratio in (("twinmae", 0.0), ("dropmae", 0.1)):
    c = configlib.pretrain_defaults()
    c.model.variant, c.model.img_size, c.model.dtype = args.variant, args.img_size, args.dtype
    width, depth, heads = (int(x) for x in args.decoder.split(","))
    c.model.decoder_embed_dim, c.model.decoder_depth, c.model.decoder_num_heads = width, depth, heads
    c.asad.drop_ratio = ratio
    c.batch_size = args.batch
    rows[name] = time_step(c, args.batch, args.iters)

  device = jax.devices()[0].device_kind
  print(f"\ntrain step, {args.variant} @ {args.img_size}px, batch {args.batch}, {args.dtype}, "
        f"{device} x{jax.device_count()}")
  print(f"{'system':<34}{'ms/step':>10}{'pairs/s':>10}{'vs TwinMAE':>12}")
  base = rows["twinmae"]
  for name, label in (("twinmae", "ours TwinMAE (P=0)"), ("dropmae", "ours DropMAE (ASAD reference)")):
    sec = rows[name]
    print(f"{label:<34}{1e3 * sec:>10.1f}{args.batch / sec:>10.1f}{sec / base:>11.2f}x")
  for name, label in (("twinmae", "released TwinMAE, H100 (DESIGN)"),
                      ("dropmae", "released DropMAE, H100 (DESIGN)")):
    ms, pps = RELEASED_H100[name]
    print(f"{label:<34}{ms:>10.1f}{pps:>10.0f}{ms / RELEASED_H100['twinmae'][0]:>11.2f}x")
  print(f"RESULT twinmae_pairs_per_sec={args.batch / rows['twinmae']:.1f} "
        f"dropmae_pairs_per_sec={args.batch / rows['dropmae']:.1f} "
        f"asad_overhead={rows['dropmae'] / base:.3f}")


if __name__ == "__main__":
  main()
