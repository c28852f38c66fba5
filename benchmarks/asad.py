"""ASAD attention: the jnp reference vs the Pallas kernel, per decoder layer and in a train step.

  python benchmarks/asad.py                      # H100/TPU: batch 64, L 392, 16 heads, dim 32, bf16
  python benchmarks/asad.py --batch=2 --heads=2 --step_variant=micro/16 --step_img=112 --step_batch=4

Prints per-layer forward and forward+backward times (plain unmasked attention, reference, kernel),
how many drop cells the kernel and the reference disagree on (same seed; logits are rounded by
different matmuls, so a cell within rounding of the threshold may flip), the full DropMAE train step
in pairs/s for P = 0, the reference and the kernel, and the released code's H100 figures
(docs/performance.md, "The released PyTorch code on one H100") beside them. On a CPU the kernels
run in Pallas interpret mode: the table then checks that everything runs, its times mean nothing.
The last line is for scripts:
RESULT asad_fwd_ms=.. asad_fwdbwd_ms=.. dropmae_pairs_per_sec=.. twinmae_pairs_per_sec=..
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import jax
import jax.numpy as jnp

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)),
                os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
from _common import layer_timings, mask_disagreement, time_step  # noqa: E402

from dropmae_jax.config import defaults as configlib  # noqa: E402

RELEASED_MASK_MS_PER_LAYER = 29.7        # released code, H100, batch 64, mask alone (docs/)
RELEASED_STEP = {"twinmae": 718, "dropmae": 202}   # pairs/s, H100, batch 64, eager fp16


def step_pairs_per_sec(args, ratio: float, impl: str) -> float:
  c = configlib.pretrain_defaults()
  c.model.variant, c.model.img_size, c.model.dtype = args.step_variant, args.step_img, args.dtype
  c.asad.drop_ratio, c.asad.impl = ratio, impl
  c.batch_size = args.step_batch
  return args.step_batch / time_step(c, args.step_batch, args.step_iters)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--length", type=int, default=392)
  parser.add_argument("--heads", type=int, default=16)
  parser.add_argument("--dim", type=int, default=32)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--drop_ratio", type=float, default=0.1)
  parser.add_argument("--iters", type=int, default=20)
  parser.add_argument("--kernel", default=None, help="pallas_gpu | pallas_tpu (default: backend's)")
  parser.add_argument("--step_variant", default="B/16")
  parser.add_argument("--step_img", type=int, default=224)
  parser.add_argument("--step_batch", type=int, default=64)
  parser.add_argument("--step_iters", type=int, default=10)
  parser.add_argument("--skip_step", action="store_true", help="per-layer table only")
  args = parser.parse_args()

  backend = jax.default_backend()
  kernel = args.kernel or ("pallas_tpu" if backend == "tpu" else "pallas_gpu")
  dtype = jnp.dtype(args.dtype)
  shape = (args.batch, args.length, args.heads, args.dim)
  q, k, v = (jax.random.normal(jax.random.key(i), shape, dtype) for i in range(3))

  layer = {impl: layer_timings(impl, q, k, v, args.drop_ratio, args.iters)
           for impl in ("plain", "reference", kernel)}
  flipped, dropped = mask_disagreement(kernel, q, k, args.drop_ratio)

  device = f"{jax.devices()[0].device_kind} ({backend})"
  if backend == "cpu":
    device += " — kernels in interpret mode: times are not meaningful"
  print(f"\nASAD per layer: B {args.batch}, L {args.length}, {args.heads} heads, dim {args.dim}, "
        f"{args.dtype}, P {args.drop_ratio}; {device}")
  print(f"{'attention':<32}{'fwd ms':>10}{'fwd+bwd ms':>12}{'fwd vs plain':>14}")
  base = layer["plain"][0]
  labels = {"plain": "plain (P=0, jax.nn attention)", "reference": "ASAD jnp reference",
            kernel: f"ASAD kernel ({kernel})"}
  for impl, (fwd, fwdbwd) in layer.items():
    print(f"{labels[impl]:<32}{1e3 * fwd:>10.2f}{1e3 * fwdbwd:>12.2f}{fwd / base:>13.2f}x")
  print(f"{'released ASAD mask alone (H100)':<32}{RELEASED_MASK_MS_PER_LAYER:>10.2f}{'—':>12}")
  print(f"kernel vs reference drop masks: {flipped} of {dropped} dropped cells differ "
        f"({flipped / max(dropped, 1):.2e})")

  rows = {}
  if not args.skip_step:
    for name, ratio, impl in (("twinmae", 0.0, "reference"), ("reference", args.drop_ratio,
                                                              "reference"),
                              ("kernel", args.drop_ratio, kernel)):
      rows[name] = step_pairs_per_sec(args, ratio, impl)
    print(f"\ntrain step, {args.step_variant} @ {args.step_img}px, batch {args.step_batch}")
    print(f"{'system':<34}{'pairs/s':>10}{'vs TwinMAE':>12}")
    for name, label in (("twinmae", "ours TwinMAE (P=0)"), ("reference", "ours DropMAE, reference"),
                        ("kernel", f"ours DropMAE, {kernel}")):
      print(f"{label:<34}{rows[name]:>10.1f}{rows['twinmae'] / rows[name]:>11.2f}x")
    for name, label in (("twinmae", "released TwinMAE (H100, DESIGN)"),
                        ("dropmae", "released DropMAE (H100, DESIGN)")):
      pps = RELEASED_STEP[name]
      print(f"{label:<34}{pps:>10.0f}{RELEASED_STEP['twinmae'] / pps:>11.2f}x")

  fwd, fwdbwd = layer[kernel]
  print(f"RESULT asad_fwd_ms={1e3 * fwd:.3f} asad_fwdbwd_ms={1e3 * fwdbwd:.3f} "
        f"dropmae_pairs_per_sec={rows.get('kernel', math.nan):.1f} "
        f"twinmae_pairs_per_sec={rows.get('twinmae', math.nan):.1f}")


if __name__ == "__main__":
  main()
