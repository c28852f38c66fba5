"""Kernel 2 of the ASAD kernels: τ, the K-th largest sampling key of each (b, h), and the cutoff.

τ is the K-th largest key of a (b, h) slab. Counting passes (15 thresholds per sweep) narrow an
integer bracket [lo, hi) that holds τ; from the whole int32 range that takes 8 (TPU, and the
GPU fallback). On GPU three things cut it to ~2:
  * the first bracket comes from a sample (Floyd-Rivest): two order statistics of 4 keys per
    slab row, and the first pass checks it while splitting it 14 ways;
  * the passes stop once the bracket holds at most _GATHER_LIMIT cells — locating τ's exact bit
    pattern would take ~4 more, since neighbouring keys lie ~2^11 patterns apart;
  * one more sweep gathers those few cells (per row and 32-column group, the 4 largest distinct
    values by masked row maxima: no scatter, which Pallas cannot express portably) and τ is read
    from them outside the kernel.
A sample bracket that misses τ only costs passes. A (b, h) with a group holding more bracket
values than it can gather, or more ties at τ than the gathered flat indices can order, falls back
to the full search, run for that (b, h) only: exact in every case, fast in the usual one.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from dropmae_jax.ops.asad import layout
from dropmae_jax.ops.asad import plan as asad_plan
from dropmae_jax.ops.asad import hashing
from dropmae_jax.ops.asad import backend as pallas_backend
from dropmae_jax.ops.asad.plan import Plan

_RADIX = 16                      # thresholds counted per pass
_KEY_LIMIT = 0x7F800001          # above every finite positive float32's int32 pattern
_SAMPLE_PER_ROW = 4  # keys each real slab row gives the GPU select's sample (hashed columns)
_SAMPLE_SPREAD = 5.0  # the sample bracket's half-width in standard deviations of the K-th's rank
_GATHER_LIMIT = 64   # bracket cells at which the GPU select stops counting and gathers
_GATHER_COLUMNS = 32  # columns per gathered group
# Cells (distinct values) gathered per row and group. Emulated on 16,384 decoder heads at 224²
# (benchmarks/asad_select_fallbacks.py): the most distinct bracket values one (row, 32-column
# group) held was 1 in 11,430 heads, 2 in 4,872, 3 in 81, 4 in 1 — with 2 slots 0.5% of heads
# overflowed, so a layer of 1,024 (b, h) almost always needed the full search; 4 slots leave
# ~1e-6 a head.
_GATHER_ROUNDS = 4


def _count_passes(keys_ref, thresholds, predicate, plan: Plan):
  """Counts, for each threshold, the slab cells with predicate(keys, flat, threshold)."""
  rows = plan.blocks.select_rows

  def step(block, counts):
    frame, local0, start = layout.slab_block(block, plan, rows)
    keys = keys_ref[pl.ds(start, rows), :]
    local_rows = lax.broadcasted_iota(jnp.int32, keys.shape, 0) + local0
    local_cols = lax.broadcasted_iota(jnp.int32, keys.shape, 1)
    flat = layout.flat_index(frame, local_rows, local_cols, plan)
    return tuple(c + jnp.sum(predicate(keys, flat, t).astype(jnp.float32)).astype(jnp.int32)
                 for c, t in zip(counts, thresholds))

  zeros = tuple(jnp.int32(0) for _ in thresholds)
  return lax.fori_loop(0, 2 * layout.real_row_blocks(plan, rows), step, zeros)


def _narrow(state, thresholds, counts, on_lo_side):
  """One pass's update of a bracket (lo, hi, count(lo), count(hi)) from counts at ascending
  thresholds: counts are monotone, so the thresholds with on_lo_side(count) form a prefix; the
  last of them becomes lo and the first of the rest becomes hi."""
  lo, c_lo, hi, c_hi = state[0], state[2], state[1], state[3]
  for t, c in zip(thresholds, counts):
    lo_side = on_lo_side(c)
    lo, c_lo = jnp.where(lo_side, t, lo), jnp.where(lo_side, c, c_lo)
  for t, c in zip(reversed(thresholds), reversed(counts)):
    hi_side = jnp.logical_not(on_lo_side(c))
    hi, c_hi = jnp.where(hi_side, t, hi), jnp.where(hi_side, c, c_hi)
  return lo, hi, c_lo, c_hi


def _bisect(count, bracket, on_lo_side, stop_cells: int = 0, active=True):
  """Narrows an integer bracket (lo, hi, count(lo), count(hi)) until hi = lo + 1 or, with
  stop_cells > 0 and counts of keys >= the bound, until it holds at most stop_cells cells.

  count(thresholds) -> their counts in one sweep; each pass counts 15 evenly spaced thresholds.
  active: a traced bool; False makes no pass at all (the bracket comes back as given).
  Returns the final bracket and the number of passes it took.
  """
  def body(state):
    lo, hi, passes = state[0], state[1], state[4]
    step = layout.static_divmod(hi - lo, _RADIX)[0] + 1
    thresholds = [jnp.minimum(lo + d * step, hi) for d in range(1, _RADIX)]
    return (*_narrow(state, thresholds, count(thresholds), on_lo_side), passes + 1)

  def unresolved(state):
    lo, hi, c_lo, c_hi, _ = state
    if stop_cells:
      return active & (hi - lo > 1) & (c_lo - c_hi > stop_cells)
    return active & (hi - lo > 1)

  return lax.while_loop(unresolved, body, (*bracket, jnp.int32(0)))


def _slab_counter(keys_ref, predicate, plan: Plan):
  return lambda thresholds: _count_passes(keys_ref, thresholds, predicate, plan)


def _keys_at_least(keys, flat, t):
  return keys >= t


def _full_bracket(plan: Plan):
  """(lo, hi, count(>= lo), count(>= hi)) that holds every key."""
  return (jnp.int32(0), jnp.int32(_KEY_LIMIT), jnp.int32(2 * plan.padded * plan.padded),
          jnp.int32(0))


def _exact_select_body(needed, keys_ref, *, plan: Plan):
  """Returns (τ, cutoff): drop the cells with key > τ, and those with key == τ and flat <= cutoff.
  needed: int32, 0 = this (b, h) is not asked for: no pass runs and (τ, cutoff) mean nothing."""
  k = jnp.int32(plan.num_drop)
  active = needed != 0
  tau, _, count_ge, count_gt, _ = _bisect(_slab_counter(keys_ref, _keys_at_least, plan),
                                       _full_bracket(plan), lambda c: c >= k, active=active)
  # Cells tied at τ: lax.top_k keeps the lower flat indices. Usually all ties fit and the search
  # below starts already narrowed (hi = lo + 1).
  need, ties = k - count_gt, count_ge - count_gt
  last = jnp.int32(plan.length * plan.length - 1)
  lo = jnp.where(ties > need, jnp.int32(-1), last - 1)
  _, cutoff, _, _, _ = _bisect(
      _slab_counter(keys_ref, lambda keys, flat, t: (keys == tau) & (flat <= t), plan),
      (lo, last, jnp.int32(0), ties), lambda c: c < need, active=active)
  return tau, cutoff


def _gather_groups(plan: Plan):
  """Static (first column, width) of the gathered column groups that hold real tokens."""
  return [(c0, _GATHER_COLUMNS) for c0 in range(0, plan.frame_len, _GATHER_COLUMNS)]


def sample_cells(plan: Plan) -> np.ndarray:
  """Flat slab indices of the GPU select's sample: _SAMPLE_PER_ROW evenly spaced columns of every
  real slab row, at a hashed per-row offset (so the sample spreads over rows and columns). Fixed
  positions are enough: the keys themselves carry the seeded randomness."""
  rows = plan.blocks.select_rows
  real = layout.real_row_blocks(plan, rows) * rows
  slab_rows = np.concatenate([np.arange(real), plan.padded + np.arange(real)]).astype(np.uint32)
  spacing = plan.padded // _SAMPLE_PER_ROW
  with np.errstate(over="ignore"):
    offsets = hashing.mix32(slab_rows ^ np.uint32(0x5BD1E995)) % np.uint32(spacing)
  cols = offsets[:, None].astype(np.int64) + spacing * np.arange(_SAMPLE_PER_ROW)
  return (slab_rows[:, None].astype(np.int64) * plan.padded + cols).reshape(-1)


def _slab_sample(keys, plan: Plan):
  """The sampled keys (B, H, S_pad) int32, padded to a power of two with -1 (never counted)."""
  cells = sample_cells(plan)
  sample = keys.reshape(plan.batch, plan.heads, -1)[:, :, jnp.asarray(cells, jnp.int32)]
  return jnp.pad(sample, ((0, 0), (0, 0), (0, pl.next_power_of_2(len(cells)) - len(cells))),
                 constant_values=-1)


def _sample_bracket(sample, plan: Plan):
  """(a, b): sample order statistics that bracket τ with overwhelming probability (Floyd-Rivest).

  Over the real rows' N cells the K-th largest key sits near rank r = K·S/N of the S sampled
  keys, with standard deviation sqrt(r·(1 − r/S)); a and b are the sampled keys at ranks
  r ± _SAMPLE_SPREAD deviations, each found by bisection over the sample (a few thousand keys,
  a small fraction of one slab pass)."""
  rows = plan.blocks.select_rows
  size = len(sample_cells(plan))
  cells = 2 * layout.real_row_blocks(plan, rows) * rows * plan.padded
  rank = plan.num_drop * size / cells
  spread = _SAMPLE_SPREAD * math.sqrt(rank * (1 - rank / size))
  count = lambda thresholds: tuple(jnp.sum((sample >= t).astype(jnp.float32)).astype(jnp.int32)
                                   for t in thresholds)
  start = (jnp.int32(0), jnp.int32(_KEY_LIMIT), jnp.int32(size), jnp.int32(0))
  order_statistic = lambda r: _bisect(count, start, lambda c: c >= r)[0]
  low = order_statistic(min(size, math.ceil(rank + spread)))
  high = order_statistic(max(1, math.floor(rank - spread)))
  return low, high


def _bracket_select_body(keys_ref, sample_ref, cells_ref, counts_ref, flats_ref, *, plan: Plan):
  """GPU select, kernel side: a first counting pass between two order statistics of the sample
  (which verifies that they bracket τ and narrows it 14-fold; where they miss, the bracket is the
  side they leave and the search goes on), then passes until the bracket holds <= _GATHER_LIMIT
  cells, then one sweep that writes, per real slab row and column group, the _GATHER_ROUNDS
  largest distinct bracket keys (-1: none), how many cells hold each and the flat index of the
  first of them. Returns (lo, hi, count(>= lo), count(>= hi), overflow, slab passes): overflow =
  some group held bracket cells it could not gather."""
  k = jnp.int32(plan.num_drop)
  count = _slab_counter(keys_ref, _keys_at_least, plan)
  low, high = _sample_bracket(sample_ref[...], plan)
  step = layout.static_divmod(high + 1 - low, _RADIX - 2)[0] + 1
  thresholds = [jnp.minimum(low + d * step, high + 1) for d in range(_RADIX - 2)] + [high + 1]
  bracket = _narrow(_full_bracket(plan), thresholds, count(thresholds), lambda c: c >= k)
  lo, hi, c_lo, c_hi, passes = _bisect(count, bracket, lambda c: c >= k,
                                       stop_cells=_GATHER_LIMIT)
  rows = plan.blocks.select_rows
  no_index = jnp.int32(plan.length * plan.length)

  def sweep(block, overflow):
    frame, local0, start = layout.slab_block(block, plan, rows)
    out_rows = pl.ds(pl.multiple_of(block * rows, rows), rows)
    local_rows = lax.broadcasted_iota(jnp.int32, (rows, _GATHER_COLUMNS), 0) + local0
    for g, (c0, width) in enumerate(_gather_groups(plan)):
      keys = keys_ref[pl.ds(start, rows), c0:c0 + width]
      flat = layout.flat_index(frame, local_rows,
                         lax.broadcasted_iota(jnp.int32, keys.shape, 1) + c0, plan)
      inside = (keys >= lo) & (keys < hi)
      remaining = jnp.sum(inside.astype(jnp.int32), axis=1)
      below = jnp.full((rows,), hi, jnp.int32)
      for r in range(_GATHER_ROUNDS):
        cell = jnp.max(jnp.where(inside & (keys < below[:, None]), keys, -1), axis=1)
        holds = (keys == cell[:, None]) & (cell[:, None] >= 0)
        held = jnp.sum(holds.astype(jnp.int32), axis=1)
        entry = g * _GATHER_ROUNDS + r
        cells_ref[entry, out_rows] = cell
        counts_ref[entry, out_rows] = held
        flats_ref[entry, out_rows] = jnp.min(jnp.where(holds, flat, no_index), axis=1)
        remaining, below = remaining - held, cell
      overflow = jnp.maximum(overflow, jnp.max(remaining))
    return overflow

  overflow = lax.fori_loop(0, 2 * layout.real_row_blocks(plan, rows), sweep, jnp.int32(0))
  return lo, hi, c_lo, c_hi, overflow, passes + 1


def _gathered_shape(plan: Plan):
  groups = len(_gather_groups(plan)) * _GATHER_ROUNDS
  return (plan.batch, plan.heads, groups,
          2 * layout.real_row_blocks(plan, plan.blocks.select_rows) * plan.blocks.select_rows)


def _threshold_from_gathered(cells, counts, flats, lo, hi, c_lo, c_hi, overflow, plan: Plan):
  """(τ, cutoff, exact_needed) per (b, h) from the gathered bracket cells, in XLA.

  The K-th largest key is the j-th largest bracket cell, j = K − count(>= hi) <= _GATHER_LIMIT,
  so it is among the _GATHER_LIMIT largest gathered entries (each entry holds >= 1 cell). When
  more cells tie at τ than are still needed, lax.top_k keeps the lower flat indices: the cutoff
  is the need-th smallest flat index among them, known when each tied entry holds one cell.
  """
  k, last = plan.num_drop, plan.length * plan.length - 1
  cells, counts, flats = (x.reshape(plan.batch, plan.heads, -1) for x in (cells, counts, flats))
  limit = min(_GATHER_LIMIT, cells.shape[-1])
  top, index = lax.top_k(cells, limit)
  reached = jnp.cumsum(jnp.take_along_axis(counts, index, axis=-1), axis=-1)
  position = jnp.argmax(reached >= (k - c_hi)[..., None], axis=-1)
  tau_known = hi - lo == 1
  tau = jnp.where(tau_known, lo, jnp.take_along_axis(top, position[..., None], axis=-1)[..., 0])
  above, tied = cells > tau[..., None], (cells == tau[..., None]) & (counts > 0)
  count_gt = c_hi + jnp.sum(jnp.where(above, counts, 0), axis=-1)
  ties = jnp.sum(jnp.where(tied, counts, 0), axis=-1)
  need = k - count_gt
  first_flats = -lax.top_k(-jnp.where(tied, flats, last + 1), limit)[0]   # ascending
  nth = jnp.take_along_axis(first_flats, jnp.clip(need - 1, 0, limit - 1)[..., None], axis=-1)
  cut = ties > need
  cutoff = jnp.where(cut, nth[..., 0], last)       # no cut: every tie at τ is dropped
  cut_unknown = cut & ((need > limit) | jnp.any(tied & (counts > 1), axis=-1))
  exact_needed = (overflow > 0) | cut_unknown
  return tau, cutoff, exact_needed


def exact_select(keys, plan: Plan, needed=None):
  """The full search: (τ, cutoff) by counting passes to the exact key (8 for real keys), then
  the flat-index cutoff when ties at τ exceed what fits. TPU's select, GPU's fallback.

  needed: optional (B, H) bool; a (b, h) where it is False makes no pass (its program only
  writes placeholders), so a fallback for a few heads costs those heads, not the batch's search.
  """
  slab = (None, None, 2 * plan.padded, plan.padded)
  needed = (jnp.ones((plan.batch, plan.heads), jnp.int32) if needed is None
            else jnp.asarray(needed).astype(jnp.int32))
  return pallas_backend.pallas_call(
      functools.partial(_exact_select_body, plan=plan), plan, grid=(plan.batch, plan.heads),
      scalars=[(needed, True)], inputs=[(keys, slab, lambda b, h: (b, h, 0, 0))],
      scalar_outputs=2, parallel=False, vmem_bytes=asad_plan.select_vmem_bytes(plan),
      name="asad_select")


def bracket_select(keys, plan: Plan):
  """GPU select: (τ, cutoff, exact_needed, slab counting passes), each (B, H); where exact_needed,
  τ and cutoff are not final."""
  slab = (None, None, 2 * plan.padded, plan.padded)
  shape = _gathered_shape(plan)
  whole = (None, None, *shape[2:])
  sample = _slab_sample(keys, plan)
  gathered = pallas_backend.pallas_call(
      functools.partial(_bracket_select_body, plan=plan), plan, grid=(plan.batch, plan.heads),
      inputs=[(keys, slab, lambda b, h: (b, h, 0, 0)),
              (sample, (None, None, sample.shape[-1]), lambda b, h: (b, h, 0))],
      outputs=[(jax.ShapeDtypeStruct(shape, jnp.int32), whole, lambda b, h: (b, h, 0, 0))] * 3,
      scalar_outputs=6, name="asad_select_bracket")
  *gathered, passes = gathered
  return (*_threshold_from_gathered(*gathered, plan), passes)


def select_threshold(keys, plan: Plan):
  """Kernel 2. keys (B, H, 2·n_pad, n_pad) int32 -> (τ, cutoff), each (B, H) int32.

  GPU: bracket and gather (`bracket_select`), with the full search for the (b, h) that need it —
  launched only when some do, and then searching only those. TPU: the full search (its key slab
  sits in VMEM, so passes are cheap).
  """
  if plan.backend != "gpu":
    return exact_select(keys, plan)
  tau, cutoff, exact_needed, _ = bracket_select(keys, plan)
  exact = lambda: exact_select(keys, plan, needed=exact_needed)
  tau_exact, cutoff_exact = lax.cond(jnp.any(exact_needed), exact, lambda: (tau, cutoff))
  return jnp.where(exact_needed, tau_exact, tau), jnp.where(exact_needed, cutoff_exact, cutoff)
