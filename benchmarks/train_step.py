"""Train-step throughput and memory: TwinMAE (P = 0) vs DropMAE (ASAD), measured in one run.

  python benchmarks/train_step.py                         # ViT-B/16, batch 64 (accelerators)
  python benchmarks/train_step.py --variant=micro/16 --img_size=112 --batch=16   # a CPU
  python benchmarks/train_step.py --batch=256 --remat     # rematerialised blocks

Prints a table of ms/step, pairs/s and peak device memory with ratios against TwinMAE measured in
the same run, the released-code H100 figures of docs/performance.md beside them, and a RESULT line
for scripts. Peak memory is the compiled step's need by XLA's buffer assignment (arguments +
outputs + temporaries − donated aliases: deterministic, no run needed) and, where the device
reports memory_stats (GPUs), the measured peak of this process if it rose during that row (JAX
cannot reset it; benchmarks/gpu_report.py runs the full table). Synthetic uint8 frames: this
measures the model step, not the input pipeline.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)),
                os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
import _common  # noqa: E402

from dropmae_jax.ops.asad import attention as asad  # noqa: E402

RELEASED_H100 = {"twinmae": (89.2, 718), "dropmae": (316.4, 202)}  # ms/step, pairs/s at batch 64


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="B/16")
  parser.add_argument("--img_size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--iters", type=int, default=10)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--decoder", default="512,8,16", help="width,depth,heads")
  parser.add_argument("--impl", default="auto", help="config.asad.impl of the DropMAE row")
  parser.add_argument("--remat", action="store_true", help="config.model.remat=True")
  args = parser.parse_args()

  decoder = tuple(int(x) for x in args.decoder.split(","))
  configs = {name: _common.step_config(variant=args.variant, img_size=args.img_size,
                                       dtype=args.dtype, decoder=decoder, drop_ratio=ratio,
                                       impl=args.impl, batch=args.batch, remat=args.remat)
             for name, ratio in (("twinmae", 0.0), ("dropmae", 0.1))}
  state = _common.initial_state(configs["twinmae"])
  rows = {}
  for name, config in configs.items():
    peak_before = _common.memory_stats().get("peak_bytes_in_use")
    compiled, batch = _common.compile_step(config, args.batch)
    seconds = _common.run_step(compiled, state, batch, args.iters)
    peak_after = _common.memory_stats().get("peak_bytes_in_use")
    measured = peak_after if peak_after is not None and peak_after != peak_before else None
    rows[name] = (seconds, _common.compiled_bytes(compiled), measured)
    del compiled

  device = jax.devices()[0].device_kind
  impl = asad.resolve_impl(args.impl)
  print(f"\ntrain step, {args.variant} @ {args.img_size}px, batch {args.batch}, {args.dtype}, "
        f"remat {args.remat}, {device} x{jax.device_count()}")
  print(f"{'system':<34}{'ms/step':>10}{'pairs/s':>10}{'vs TwinMAE':>12}"
        f"{'compiled GiB':>14}{'measured GiB':>14}")
  base = rows["twinmae"][0]
  gib = lambda b: "—" if b is None else f"{b / _common.GIB:.3g}"
  for name, label in (("twinmae", "ours TwinMAE (P=0)"), ("dropmae", f"ours DropMAE ({impl})")):
    sec, compiled_b, measured_b = rows[name]
    print(f"{label:<34}{1e3 * sec:>10.1f}{args.batch / sec:>10.1f}{sec / base:>11.2f}x"
          f"{gib(compiled_b):>14}{gib(measured_b):>14}")
  for name, label in (("twinmae", "released TwinMAE, H100 (DESIGN)"),
                      ("dropmae", "released DropMAE, H100 (DESIGN)")):
    ms, pps = RELEASED_H100[name]
    print(f"{label:<34}{ms:>10.1f}{pps:>10.0f}{ms / RELEASED_H100['twinmae'][0]:>11.2f}x")
  peak = rows["dropmae"][2] or rows["dropmae"][1]
  print(f"RESULT twinmae_pairs_per_sec={args.batch / rows['twinmae'][0]:.1f} "
        f"dropmae_pairs_per_sec={args.batch / rows['dropmae'][0]:.1f} "
        f"asad_overhead={rows['dropmae'][0] / base:.3f} "
        f"dropmae_peak_gib={(peak or float('nan')) / _common.GIB:.2f}")


if __name__ == "__main__":
  main()
