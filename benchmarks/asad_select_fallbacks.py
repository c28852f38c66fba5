"""How often the GPU select needs its full-search fallback, emulated at the decoder's real shape.

  python benchmarks/asad_select_fallbacks.py [--heads 16384] [--check 2]

The GPU select (`ops/asad/select.py`) narrows a bracket around τ, the K-th largest key of a
(b, h), until it holds <= 64 cells, then gathers per slab row and 32-column group the largest
distinct bracket values into a few slots; a (b, h) whose group holds more distinct values than
slots, or whose ties at τ the gathered flat indices cannot order, runs the full search. A layer
runs that search if any of its B·H heads needs it, so a per-head rate that looks negligible on a
few hundred heads decides a layer's time at batch 64 (1,024 heads).

Running the kernels in interpret mode on thousands of heads would take hours on a CPU, so this
script replays the kernel's narrowing in numpy — same sample cells, same order statistics, same
thresholds per pass — on keys from the jnp reference (bit-identical to the kernels' keys), and
records per head the most distinct bracket values one (row, group) holds. It prints, for several
gather layouts, the rate per head and the chance that a layer falls back at batch 64 and 256.
`--check N` runs the kernel itself (interpret mode) on N heads and stops unless the replay's
pass counts and fallback flags equal the kernel's.

Inputs: q, k ~ N(0, s) per batch of 16 heads with s uniform in [0.5, 6] (flat to peaked
attention), ViT-B decoder layer: L = 392, d = 32, P = 0.1.
"""
from __future__ import annotations

import argparse
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

from dropmae_jax.ops.asad import attention as asad
from dropmae_jax.ops.asad import kernels as asad_pallas
from dropmae_jax.ops.asad import select

LENGTH, HEAD_DIM, DROP_RATIO = 392, 32, 0.1
LAYOUTS = ((32, 2), (32, 3), (32, 4), (16, 2), (16, 3))   # (columns per group, slots)


def make_plan(heads: int):
  return asad_pallas.make_plan((1, LENGTH, heads, HEAD_DIM), drop_ratio=DROP_RATIO,
                               temporal="max", backend="gpu", interpret=True)


def decoder_keys(first: int, heads: int, plan) -> np.ndarray:
  """(heads, 2·n_pad, n_pad) int32 key slabs of `heads` (b, h), seeded by `first`."""
  rng = np.random.default_rng(first)
  key = jax.random.key(first)
  s = rng.uniform(0.5, 6.0)
  q, k = (jax.random.normal(jax.random.fold_in(key, i), (heads, LENGTH, 1, HEAD_DIM)) *
          math.sqrt(s) for i in (1, 2))
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)
  dense = np.asarray(asad.drop_keys_reference(scores, jnp.uint32(first + 7),
                                              scale=plan.scale))[:, 0]
  n, npad = plan.frame_len, plan.padded
  slabs = np.zeros((heads, 2 * npad, npad), np.int32)
  slabs[:, :n, :n] = dense[:, :n, :n]
  slabs[:, npad:npad + n, :n] = dense[:, n:, n:]
  return slabs


def _narrow(bracket, thresholds, counts, k):
  lo, hi, c_lo, c_hi = bracket
  for t, c in zip(thresholds, counts):
    if c >= k:
      lo, c_lo = t, c
  for t, c in zip(reversed(thresholds), reversed(counts)):
    if c < k:
      hi, c_hi = t, c
  return lo, hi, c_lo, c_hi


def replay(slab: np.ndarray, plan) -> dict:
  """The kernel's narrowing on one slab: passes, bracket, and what the gather would see."""
  k, npad = plan.num_drop, plan.padded
  flat = slab.reshape(-1).astype(np.int64)
  ascending = np.sort(flat)
  count = lambda t: len(ascending) - np.searchsorted(ascending, t, side="left")   # keys >= t
  cells = select.sample_cells(plan)
  sample = np.sort(flat[cells])[::-1]
  rows = plan.blocks.select_rows
  real = 2 * (-(-plan.frame_len // rows)) * rows * npad
  rank = k * len(cells) / real
  spread = select._SAMPLE_SPREAD * math.sqrt(rank * (1 - rank / len(cells)))
  low = sample[min(len(cells), math.ceil(rank + spread)) - 1]
  high = sample[max(1, math.floor(rank - spread)) - 1]
  step = (high + 1 - low) // (select._RADIX - 2) + 1
  thresholds = [min(low + d * step, high + 1) for d in range(select._RADIX - 2)] + [high + 1]
  bracket = _narrow((0, select._KEY_LIMIT, 2 * npad * npad, 0), thresholds,
                    [count(t) for t in thresholds], k)
  passes = 1
  while bracket[1] - bracket[0] > 1 and bracket[2] - bracket[3] > select._GATHER_LIMIT:
    lo, hi = bracket[:2]
    step = (hi - lo) // select._RADIX + 1
    thresholds = [min(lo + d * step, hi) for d in range(1, select._RADIX)]
    bracket = _narrow(bracket, thresholds, [count(t) for t in thresholds], k)
    passes += 1
  lo, hi, _, c_hi = bracket
  r, c = np.nonzero((slab >= lo) & (slab < hi))
  values = slab[r, c]
  tau = np.sort(flat)[::-1][k - 1]
  need = k - int(np.sum(flat > tau))
  tied = values == tau
  distinct = {}
  for cols, _ in LAYOUTS:
    groups: dict[tuple[int, int], set] = {}
    for ri, ci, v in zip(r, c, values):
      groups.setdefault((ri, ci // cols), set()).add(v)
    distinct[cols] = max(len(g) for g in groups.values())
  # Ties at τ that the gathered flat indices cannot order (two tied cells in one row and group,
  # or more than the gather limit needed): a fallback whatever the slots.
  tie_groups = {(ri, ci // 32) for ri, ci in zip(r[tied], c[tied])}
  cut = int(tied.sum()) > need
  ties_unordered = cut and (need > select._GATHER_LIMIT or len(tie_groups) < int(tied.sum()))
  return {"passes": passes, "cells": len(values), "distinct": distinct,
          "ties_unordered": ties_unordered}


def falls_back(result: dict, cols: int, slots: int) -> bool:
  return result["distinct"][cols] > slots or result["ties_unordered"]


def check_against_kernel(heads: int) -> None:
  """The replay must give the kernel's pass counts and fallback flags (kernel: interpret mode;
  tests/ops/test_asad_pallas.py covers a constructed fallback)."""
  plan = make_plan(heads)
  slabs = decoder_keys(10 ** 6, heads, plan)
  _, _, needed, passes = jax.jit(lambda x: select.bracket_select(x, plan))(
      jnp.asarray(slabs[None]))
  for h in range(heads):
    result = replay(slabs[h], plan)
    want = (int(passes[0, h]), bool(needed[0, h]))
    got = (result["passes"], falls_back(result, select._GATHER_COLUMNS, select._GATHER_ROUNDS))
    if got != want:
      sys.exit(f"replay disagrees with the kernel on head {h}: (passes, fallback) {got} vs {want}")
  print(f"check: replay = kernel (passes, fallback) on {heads} heads")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--heads", type=int, default=4096, help="(b, h) slabs to replay")
  parser.add_argument("--check", type=int, default=2,
                      help="heads on which to compare the replay with the kernel (0: none)")
  args = parser.parse_args(argv)
  if args.check:
    check_against_kernel(args.check)
  plan, batch = make_plan(1), 16
  results = []
  for first in range(0, args.heads, batch):
    results += [replay(slab, plan) for slab in decoder_keys(first, batch, plan)]
  cells = np.array([r["cells"] for r in results])
  print(f"{len(results)} heads, L {LENGTH}, d {HEAD_DIM}, P {DROP_RATIO}, K {plan.num_drop}: "
        f"bracket cells mean {cells.mean():.1f}, max {cells.max()}; heads by slab passes "
        f"{ {p: int(n) for p, n in enumerate(np.bincount([r['passes'] for r in results])) if n} }; "
        f"ties not orderable {sum(r['ties_unordered'] for r in results)}")
  for cols in sorted({c for c, _ in LAYOUTS}, reverse=True):
    most = np.bincount([r["distinct"][cols] for r in results])
    print(f"most distinct bracket values in one (row, {cols}-column group): "
          + ", ".join(f"{v}: {n} heads" for v, n in enumerate(most) if n))
  print(f"\n{'columns':>8}{'slots':>6}{'heads falling back':>20}{'rate':>10}"
        f"{'P(layer), B·H 1024':>20}{'B·H 4096':>10}")
  for cols, slots in LAYOUTS:
    hits = sum(falls_back(r, cols, slots) for r in results)
    rate = hits / len(results)
    current = " (now)" if (cols, slots) == (select._GATHER_COLUMNS, select._GATHER_ROUNDS) else ""
    print(f"{cols:>8}{slots:>6}{hits:>20}{rate:>10.2e}{1 - (1 - rate) ** 1024:>20.3f}"
          f"{1 - (1 - rate) ** 4096:>10.3f}{current}")
  print(f"(0 heads: the rate is below ~3 / {len(results)} at 95% confidence)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
