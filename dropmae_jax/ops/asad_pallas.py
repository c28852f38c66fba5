"""ASAD attention as Pallas kernels, one source for GPU (Triton lowering) and TPU (Mosaic).

The jnp reference materialises the (B, H, L, L) logits four times over and ranks 76,832 keys per
(b, h) with `lax.top_k`, the step that dominates its cost. Here the work is split in four kernels that
never hold more than one block of query rows against one frame of keys:

  1. keys    (grid B, H, row blocks): logits -> the row terms of DESIGN §1 -> int32 sampling key of
             every same-frame cell, written as a (2·n_pad, n_pad) slab per (b, h).
  2. select  (grid B, H): the K-th largest key τ by 16-way bisection over the int32 key range,
             counting passes over the slab, no sort. GPU: a sampled bracket and ~2 passes narrow
             it to <= 64 cells, one sweep gathers them and τ is read from those (kernel
             `asad_select_bracket` + a small top_k); TPU, and GPU (b, h) whose bracket does not
             gather cleanly: all 8 passes (`asad_select`). Either way a flat-index cutoff
             reproduces `lax.top_k`'s lower-index-first rule when cells tie at τ.
  3. forward (grid B, H, row blocks): attention whose same-frame logits are masked where
             key > τ or (key == τ and flat index <= cutoff), an online softmax over key chunks
             (so K/V tiles stay small at 384²); writes out, the row log-sum-exp and the mask —
             one bit per cell on GPU (a word per column of a row block), int8 on TPU.
  4. backward: dq over row blocks, dk/dv over key blocks, reading that mask (the keys slab is
             freed after the forward pass).

Layout inside: (B, H, 2·n_pad, ·) — each frame's n tokens padded to n_pad = max(128, 2^⌈log2 n⌉)
rows, so that frame boundaries fall on block boundaries and every block shape is a power of two
(Triton) and lane-aligned (TPU). Grids and loops visit only the row blocks that hold real tokens
(n = 196: 13 of 16 blocks of 16 rows a frame); rows of padding blocks are never written. The
backend layer is `pallas_backend.pallas_call`; the static plan (shapes, block sizes, validation,
VMEM budget) is `asad_plan`. The kernel bodies are shared.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from dropmae_jax.ops import asad_math
from dropmae_jax.ops import asad_plan
from dropmae_jax.ops import hashing
from dropmae_jax.ops import pallas_backend
# The plan is part of this module's public surface (callers build it with make_plan).
from dropmae_jax.ops.asad_plan import BlockSizes, Plan, make_plan, tpu_vmem_problem  # noqa: F401

_RADIX = 16                      # thresholds counted per pass in the select kernel
_KEY_LIMIT = 0x7F800001          # above every finite positive float32's int32 pattern


# --------------------------------------------------------------------------- shared pieces


def _scores(q, k, plan: Plan):
  """(rows, D) x (keys, D) -> raw float32 q·k (not yet scaled by 1/sqrt(D)), column indices."""
  s = lax.dot_general(q, k, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  cols = lax.broadcasted_iota(jnp.int32, s.shape, 1)
  return s, cols


def _own_other_scores(q, k_own, k_other, plan: Plan):
  s_own, cols = _scores(q, k_own, plan)
  s_other, _ = _scores(q, k_other, plan)
  valid = cols < plan.frame_len
  return (jnp.where(valid, s_own, asad_math.MASK_VALUE),
          jnp.where(valid, s_other, asad_math.MASK_VALUE), cols)


def _flat_index(frame, local_rows, local_cols, plan: Plan):
  """Index i·L + j of a same-frame cell in the unpadded (L, L) map (lax.top_k's tie order)."""
  offset = frame * plan.frame_len
  return (offset + local_rows) * plan.length + offset + local_cols


def _dropped(keys, tau, cutoff, frame, local_rows, local_cols, plan: Plan):
  """The drop rule for a block of same-frame cells: the K largest keys, lower index first on ties."""
  flat = _flat_index(frame, local_rows, local_cols, plan)
  return (keys > tau) | ((keys == tau) & (flat <= cutoff))


def _is_set(mask_int8):
  """int8 mask block -> bool, compared in int32 (TPU v4 has no int8 vector compare)."""
  return mask_int8.astype(jnp.int32) != 0


# The drop mask the backward pass reads. With query row blocks of 8, 16 or 32 rows (GPU) it is
# kept as one bit per cell: for each row block and column, one word whose bit r is row r —
# packing and unpacking are a shift and a column sum, no reshape. TPU's 128-row blocks keep an
# int8 per cell.
_MASK_WORDS = {8: jnp.int8, 16: jnp.int16, 32: jnp.int32}


def packs_mask(plan: Plan) -> bool:
  return plan.blocks.rows in _MASK_WORDS


def _mask_struct(plan: Plan):
  """(ShapeDtypeStruct of the stored mask, rows of it per query row block)."""
  rows, npad = plan.blocks.rows, plan.padded
  if packs_mask(plan):
    shape = (plan.batch, plan.heads, 2 * npad // rows, npad)
    return jax.ShapeDtypeStruct(shape, _MASK_WORDS[rows]), 1
  return jax.ShapeDtypeStruct((plan.batch, plan.heads, 2 * npad, npad), jnp.int8), rows


def _store_mask(drop, plan: Plan):
  """(rows, w) bool -> what the mask stores for them: (1, w) words or (rows, w) int8."""
  if not packs_mask(plan):
    return jnp.where(drop, 1, 0).astype(jnp.int8)
  bit = jnp.left_shift(jnp.int32(1), lax.broadcasted_iota(jnp.int32, drop.shape, 0))
  words = jnp.sum(jnp.where(drop, bit, 0), axis=0, keepdims=True)   # distinct bits: a sum is an OR
  return words.astype(_MASK_WORDS[plan.blocks.rows])


def _load_mask(stored, plan: Plan):
  """Inverse of `_store_mask`: -> (rows, w) bool."""
  if not packs_mask(plan):
    return _is_set(stored)
  shape = (plan.blocks.rows, stored.shape[1])
  # Sign extension to int32 only fills bits above the word's own.
  return (jnp.right_shift(stored.astype(jnp.int32), lax.broadcasted_iota(jnp.int32, shape, 0))
          & 1) != 0


def _divmod(x, divisor: int):
  """Quotient and remainder of a non-negative traced int32 by a static divisor, with plain lax ops
  (jnp's floor-division wrappers do not lower inside Triton loops on jax 0.10)."""
  divisor = jnp.int32(divisor)
  return lax.div(x, divisor), lax.rem(x, divisor)


def _real_row_blocks(plan: Plan, rows: int) -> int:
  """Row blocks per frame that hold real tokens. Grids and loops visit only these: blocks wholly
  in a frame's padding are never computed, read or written (n = 196 pads to 256: 13 blocks of
  16 rows a frame, not 16)."""
  return -(-plan.frame_len // rows)


def _padded_block(index, plan: Plan, rows: int):
  """Index over the real row blocks of both frames -> (frame, block index in the padded layout)."""
  frame, block_in_frame = _divmod(index, _real_row_blocks(plan, rows))
  return frame, frame * (plan.padded // rows) + block_in_frame


def _row_block_position(plan: Plan, rows: int):
  """(frame, first local row) of the program's row block (grid axis 2, real blocks only)."""
  frame, block = _divmod(pl.program_id(2), _real_row_blocks(plan, rows))
  return frame, block * rows


def _row_grid(plan: Plan, rows: int):
  return (plan.batch, plan.heads, 2 * _real_row_blocks(plan, rows))


def _row_block_index(rows: int, plan: Plan):
  """Index map of a program's own row block."""
  return lambda b, h, r: (b, h, _padded_block(r, plan, rows)[1], 0)


def _slab_block(block, plan: Plan, rows: int):
  """Loop index over the real row blocks of both frames -> (frame, first local row, slab row)."""
  frame, block_in_frame = _divmod(block, _real_row_blocks(plan, rows))
  local0 = block_in_frame * rows
  return frame, local0, pl.multiple_of(frame * plan.padded + local0, rows)


# --------------------------------------------------------------------------- 1. keys


def _keys_body(seed, batch_offset, q_ref, k_own_ref, k_other_ref, keys_ref, *, plan: Plan):
  rows = plan.blocks.keys_rows
  frame, row0 = _row_block_position(plan, rows)
  s_own, s_other, cols = _own_other_scores(q_ref[...], k_own_ref[...], k_other_ref[...], plan)
  local_rows = lax.broadcasted_iota(jnp.int32, s_own.shape, 0) + row0
  row_max = jnp.maximum(jnp.max(s_own, axis=1, keepdims=True),
                        jnp.max(s_other, axis=1, keepdims=True))
  # Scale after the shift, as the reference does: no multiply-add to fuse into an FMA.
  e_own = jnp.exp((s_own - row_max) * plan.scale)
  e_other = jnp.exp((s_other - row_max) * plan.scale)
  total = asad_math.digit_sums_to_value(asad_math.add_digit_sums(
      asad_math.fixed_point_digit_sums(e_own), asad_math.fixed_point_digit_sums(e_other)))
  if plan.temporal == "max":
    other = jnp.max(e_other, axis=1, keepdims=True)
  else:
    other = asad_math.exact_sum(e_other)
  eligible = (cols < plan.frame_len) & (local_rows < plan.frame_len) & (cols != local_rows)
  eps_offset = asad_math.eps_offset(total)
  own_sum = asad_math.exact_sum(jnp.where(eligible, e_own + eps_offset, 0.0))
  scale = asad_math.weight_scale(asad_math.temporal_match(other, total), own_sum, total)
  # Hash coordinates are the unpadded token indices, as in the reference.
  first_token = frame * plan.frame_len
  row_ids = lax.broadcasted_iota(jnp.int32, (rows, 1), 0) + row0 + first_token
  col_ids = lax.broadcasted_iota(jnp.int32, (1, plan.padded), 1) + first_token
  b = (pl.program_id(0) + batch_offset).astype(jnp.uint32)
  h = pl.program_id(1).astype(jnp.uint32)
  row_state = hashing.row_bits(seed.astype(jnp.uint32), b, h, row_ids.astype(jnp.uint32))
  exponential = hashing.exponential_from_bits(hashing.mix32(row_state ^ col_ids.astype(jnp.uint32)))
  keys = asad_math.sampling_keys(e_own, eps_offset, scale, exponential)
  keys_ref[...] = asad_math.keys_as_int(keys, eligible)


def sampling_keys(q, k, seed, batch_offset, plan: Plan) -> jax.Array:
  """Kernel 1. q, k: (B, H, 2·n_pad, D) padded layout -> int32 keys (B, H, 2·n_pad, n_pad).

  batch_offset: int32 scalar, the global batch index of row 0 (a shard hashes global rows).
  """
  rows, npad, d = plan.blocks.keys_rows, plan.padded, plan.head_dim
  row_block = _row_block_index(rows, plan)
  return pallas_backend.pallas_call(
      functools.partial(_keys_body, plan=plan), plan, grid=_row_grid(plan, rows),
      scalars=[(jnp.asarray(seed, jnp.uint32), False),
               (jnp.asarray(batch_offset, jnp.int32), False)],
      inputs=[(q, (None, None, rows, d), row_block), *_frame_inputs(plan, rows, k)],
      outputs=[(jax.ShapeDtypeStruct((plan.batch, plan.heads, 2 * npad, npad), jnp.int32),
                (None, None, rows, npad), row_block)],
      name="asad_keys")[0]


# --------------------------------------------------------------------------- 2. select
#
# τ is the K-th largest key of a (b, h) slab. Counting passes (15 thresholds per sweep) narrow an
# integer bracket [lo, hi) that holds τ; from the whole int32 range that takes 8 (TPU, and the
# GPU fallback). On GPU three things cut it to ~2:
#   * the first bracket comes from a sample (Floyd-Rivest): two order statistics of 4 keys per
#     slab row, and the first pass checks it while splitting it 14 ways;
#   * the passes stop once the bracket holds at most _GATHER_LIMIT cells — locating τ's exact bit
#     pattern would take ~4 more, since neighbouring keys lie ~2^11 patterns apart;
#   * one more sweep gathers those few cells (per row and 32-column group, by masked row maxima:
#     no scatter, which Pallas cannot express portably) and τ is read from them outside the kernel.
# A sample bracket that misses τ only costs passes. A group holding more bracket cells than it can
# gather, or more ties at τ than the gathered flat indices can order, falls back to the full
# search: exact in every case, fast in the usual one.

_SAMPLE_PER_ROW = 4  # keys each real slab row gives the GPU select's sample (hashed columns)
_SAMPLE_SPREAD = 5.0  # the sample bracket's half-width in standard deviations of the K-th's rank
_GATHER_LIMIT = 64   # bracket cells at which the GPU select stops counting and gathers
_GATHER_COLUMNS = 32  # columns per gathered group
_GATHER_ROUNDS = 2   # cells (distinct values) gathered per row and group


def _count_passes(keys_ref, thresholds, predicate, plan: Plan):
  """Counts, for each threshold, the slab cells with predicate(keys, flat, threshold)."""
  rows = plan.blocks.select_rows

  def step(block, counts):
    frame, local0, start = _slab_block(block, plan, rows)
    keys = keys_ref[pl.ds(start, rows), :]
    local_rows = lax.broadcasted_iota(jnp.int32, keys.shape, 0) + local0
    local_cols = lax.broadcasted_iota(jnp.int32, keys.shape, 1)
    flat = _flat_index(frame, local_rows, local_cols, plan)
    return tuple(c + jnp.sum(predicate(keys, flat, t).astype(jnp.float32)).astype(jnp.int32)
                 for c, t in zip(counts, thresholds))

  zeros = tuple(jnp.int32(0) for _ in thresholds)
  return lax.fori_loop(0, 2 * _real_row_blocks(plan, rows), step, zeros)


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


def _bisect(count, bracket, on_lo_side, stop_cells: int = 0):
  """Narrows an integer bracket (lo, hi, count(lo), count(hi)) until hi = lo + 1 or, with
  stop_cells > 0 and counts of keys >= the bound, until it holds at most stop_cells cells.

  count(thresholds) -> their counts in one sweep; each pass counts 15 evenly spaced thresholds.
  Returns the final bracket and the number of passes it took.
  """
  def body(state):
    lo, hi, passes = state[0], state[1], state[4]
    step = _divmod(hi - lo, _RADIX)[0] + 1
    thresholds = [jnp.minimum(lo + d * step, hi) for d in range(1, _RADIX)]
    return (*_narrow(state, thresholds, count(thresholds), on_lo_side), passes + 1)

  def unresolved(state):
    lo, hi, c_lo, c_hi, _ = state
    if stop_cells:
      return (hi - lo > 1) & (c_lo - c_hi > stop_cells)
    return hi - lo > 1

  return lax.while_loop(unresolved, body, (*bracket, jnp.int32(0)))


def _slab_counter(keys_ref, predicate, plan: Plan):
  return lambda thresholds: _count_passes(keys_ref, thresholds, predicate, plan)


def _keys_at_least(keys, flat, t):
  return keys >= t


def _full_bracket(plan: Plan):
  """(lo, hi, count(>= lo), count(>= hi)) that holds every key."""
  return (jnp.int32(0), jnp.int32(_KEY_LIMIT), jnp.int32(2 * plan.padded * plan.padded),
          jnp.int32(0))


def _exact_select_body(keys_ref, *, plan: Plan):
  """Returns (τ, cutoff): drop the cells with key > τ, and those with key == τ and flat <= cutoff."""
  k = jnp.int32(plan.num_drop)
  tau, _, count_ge, count_gt, _ = _bisect(_slab_counter(keys_ref, _keys_at_least, plan),
                                       _full_bracket(plan), lambda c: c >= k)
  # Cells tied at τ: lax.top_k keeps the lower flat indices. Usually all ties fit and the search
  # below starts already narrowed (hi = lo + 1).
  need, ties = k - count_gt, count_ge - count_gt
  last = jnp.int32(plan.length * plan.length - 1)
  lo = jnp.where(ties > need, jnp.int32(-1), last - 1)
  _, cutoff, _, _, _ = _bisect(
      _slab_counter(keys_ref, lambda keys, flat, t: (keys == tau) & (flat <= t), plan),
      (lo, last, jnp.int32(0), ties), lambda c: c < need)
  return tau, cutoff


def _gather_groups(plan: Plan):
  """Static (first column, width) of the gathered column groups that hold real tokens."""
  return [(c0, _GATHER_COLUMNS) for c0 in range(0, plan.frame_len, _GATHER_COLUMNS)]


def _sample_cells(plan: Plan) -> np.ndarray:
  """Flat slab indices of the GPU select's sample: _SAMPLE_PER_ROW evenly spaced columns of every
  real slab row, at a hashed per-row offset (so the sample spreads over rows and columns). Fixed
  positions are enough: the keys themselves carry the seeded randomness."""
  rows = plan.blocks.select_rows
  real = _real_row_blocks(plan, rows) * rows
  slab_rows = np.concatenate([np.arange(real), plan.padded + np.arange(real)]).astype(np.uint32)
  spacing = plan.padded // _SAMPLE_PER_ROW
  with np.errstate(over="ignore"):
    offsets = hashing.mix32(slab_rows ^ np.uint32(0x5BD1E995)) % np.uint32(spacing)
  cols = offsets[:, None].astype(np.int64) + spacing * np.arange(_SAMPLE_PER_ROW)
  return (slab_rows[:, None].astype(np.int64) * plan.padded + cols).reshape(-1)


def _slab_sample(keys, plan: Plan):
  """The sampled keys (B, H, S_pad) int32, padded to a power of two with -1 (never counted)."""
  cells = _sample_cells(plan)
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
  size = len(_sample_cells(plan))
  cells = 2 * _real_row_blocks(plan, rows) * rows * plan.padded
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
  step = _divmod(high + 1 - low, _RADIX - 2)[0] + 1
  thresholds = [jnp.minimum(low + d * step, high + 1) for d in range(_RADIX - 2)] + [high + 1]
  bracket = _narrow(_full_bracket(plan), thresholds, count(thresholds), lambda c: c >= k)
  lo, hi, c_lo, c_hi, passes = _bisect(count, bracket, lambda c: c >= k,
                                       stop_cells=_GATHER_LIMIT)
  rows = plan.blocks.select_rows
  no_index = jnp.int32(plan.length * plan.length)

  def sweep(block, overflow):
    frame, local0, start = _slab_block(block, plan, rows)
    out_rows = pl.ds(pl.multiple_of(block * rows, rows), rows)
    local_rows = lax.broadcasted_iota(jnp.int32, (rows, _GATHER_COLUMNS), 0) + local0
    for g, (c0, width) in enumerate(_gather_groups(plan)):
      keys = keys_ref[pl.ds(start, rows), c0:c0 + width]
      flat = _flat_index(frame, local_rows,
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

  overflow = lax.fori_loop(0, 2 * _real_row_blocks(plan, rows), sweep, jnp.int32(0))
  return lo, hi, c_lo, c_hi, overflow, passes + 1


def _gathered_shape(plan: Plan):
  groups = len(_gather_groups(plan)) * _GATHER_ROUNDS
  return (plan.batch, plan.heads, groups,
          2 * _real_row_blocks(plan, plan.blocks.select_rows) * plan.blocks.select_rows)


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


def exact_select(keys, plan: Plan):
  """The full search: (τ, cutoff) by counting passes to the exact key (8 for real keys), then
  the flat-index cutoff when ties at τ exceed what fits. TPU's select, GPU's fallback."""
  slab = (None, None, 2 * plan.padded, plan.padded)
  return pallas_backend.pallas_call(
      functools.partial(_exact_select_body, plan=plan), plan, grid=(plan.batch, plan.heads),
      inputs=[(keys, slab, lambda b, h: (b, h, 0, 0))], scalar_outputs=2, parallel=False,
      vmem_bytes=asad_plan.select_vmem_bytes(plan), name="asad_select")


def _bracket_select(keys, plan: Plan):
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

  GPU: bracket and gather (`_bracket_select`), with the full search for the (b, h) that need it —
  run only when some do. TPU: the full search (its key slab sits in VMEM, so passes are cheap).
  """
  if plan.backend != "gpu":
    return exact_select(keys, plan)
  tau, cutoff, exact_needed, _ = _bracket_select(keys, plan)
  exact = lambda: exact_select(keys, plan)
  tau_exact, cutoff_exact = lax.cond(jnp.any(exact_needed), exact, lambda: (tau, cutoff))
  return jnp.where(exact_needed, tau_exact, tau), jnp.where(exact_needed, cutoff_exact, cutoff)


# --------------------------------------------------------------------------- 3. forward


def _key_chunks(plan: Plan):
  """Static (first column, width) of the key chunks that hold real tokens; chunks wholly in a
  frame's padding are skipped (n = 576 pads to 1024: 9 chunks of 64, not 16)."""
  chunk = plan.blocks.key_chunk
  return [(c0, chunk) for c0 in range(0, plan.frame_len, chunk)]


def _forward_body(tau, cutoff, q_ref, k_own_ref, k_other_ref, v_own_ref, v_other_ref, keys_ref,
                  out_ref, lse_ref, drop_ref, *, plan: Plan):
  """Online softmax over key chunks, own frame (masked) then other frame; static chunk slices
  lower the same way for Triton and Mosaic."""
  rows = plan.blocks.rows
  frame, row0 = _row_block_position(plan, rows)
  q = q_ref[...]
  row_max = jnp.full((rows, 1), asad_math.MASK_VALUE, jnp.float32)
  total = jnp.zeros((rows, 1), jnp.float32)
  acc = jnp.zeros((rows, plan.head_dim), jnp.float32)
  for k_ref, v_ref, own in ((k_own_ref, v_own_ref, True), (k_other_ref, v_other_ref, False)):
    for c0, width in _key_chunks(plan):
      s, cols = _scores(q, k_ref[c0:c0 + width, :], plan)
      cols = cols + c0
      s = jnp.where(cols < plan.frame_len, s, asad_math.MASK_VALUE)
      if own:
        local_rows = lax.broadcasted_iota(jnp.int32, s.shape, 0) + row0
        drop = _dropped(keys_ref[:, c0:c0 + width], tau, cutoff, frame, local_rows, cols, plan)
        drop_ref[:, c0:c0 + width] = _store_mask(drop, plan)
        s = jnp.where(drop, asad_math.MASK_VALUE, s)
      new_max = jnp.maximum(row_max, jnp.max(s, axis=1, keepdims=True))
      rescale = jnp.exp((row_max - new_max) * plan.scale)
      p = jnp.exp((s - new_max) * plan.scale)
      v = v_ref[c0:c0 + width, :]
      total = total * rescale + jnp.sum(p, axis=1, keepdims=True)
      acc = acc * rescale + jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
      row_max = new_max
  chunk = plan.blocks.key_chunk
  for c0 in range(len(_key_chunks(plan)) * chunk, plan.padded, chunk):
    # Padding columns are never read, but written: no uninitialised memory escapes.
    drop_ref[:, c0:c0 + chunk] = jnp.zeros((drop_ref.shape[0], chunk), drop_ref.dtype)
  out_ref[...] = (acc / total).astype(out_ref.dtype)
  lse_ref[...] = row_max * plan.scale + jnp.log(total)


def _frame_inputs(plan: Plan, rows: int, *arrays):
  """Blocks for a row-block program: each array's own frame and other frame, whole."""
  frame_of = lambda r: _padded_block(r, plan, rows)[0]
  block = (None, None, plan.padded, plan.head_dim)
  specs = []
  for a in arrays:
    specs += [(a, block, lambda b, h, r: (b, h, frame_of(r), 0)),
              (a, block, lambda b, h, r: (b, h, 1 - frame_of(r), 0))]
  return specs


def masked_forward(q, k, v, keys, tau, cutoff, plan: Plan):
  """Kernel 3. Padded-layout attention with the ASAD mask.

  Returns out (like q), lse (B, H, 2·n_pad, 1) float32 and the drop mask kept for the backward
  pass: one bit per cell, (B, H, 2·n_pad / rows, n_pad) words of `rows` bits (GPU: 1/32 of the
  keys slab), or int8 (B, H, 2·n_pad, n_pad) for TPU's 128-row blocks.
  """
  rows, npad, d = plan.blocks.rows, plan.padded, plan.head_dim
  row_block = _row_block_index(rows, plan)
  mask, mask_rows = _mask_struct(plan)
  return pallas_backend.pallas_call(
      functools.partial(_forward_body, plan=plan), plan, grid=_row_grid(plan, rows),
      scalars=[(tau, True), (cutoff, True)],
      inputs=[(q, (None, None, rows, d), row_block), *_frame_inputs(plan, rows, k, v),
              (keys, (None, None, rows, npad), row_block)],
      outputs=[(jax.ShapeDtypeStruct(q.shape, q.dtype), (None, None, rows, d), row_block),
               (jax.ShapeDtypeStruct((plan.batch, plan.heads, 2 * npad, 1), jnp.float32),
                (None, None, rows, 1), row_block),
               (mask, (None, None, mask_rows, npad), row_block)],
      name="asad_forward")


# --------------------------------------------------------------------------- 4. backward


def _dq_body(q_ref, k_own_ref, k_other_ref, v_own_ref, v_other_ref, drop_ref,
             dout_ref, lse_ref, delta_ref, dq_ref, *, plan: Plan):
  q, lse, delta, dout = q_ref[...], lse_ref[...], delta_ref[...], dout_ref[...]
  dq = jnp.zeros((plan.blocks.rows, plan.head_dim), jnp.float32)
  for k_ref, v_ref, own in ((k_own_ref, v_own_ref, True), (k_other_ref, v_other_ref, False)):
    for c0, width in _key_chunks(plan):
      k = k_ref[c0:c0 + width, :]
      s, cols = _scores(q, k, plan)
      # One mask per select: Mosaic cannot combine a column-broadcast mask with a full one.
      s = jnp.where(cols + c0 < plan.frame_len, s, asad_math.MASK_VALUE)
      if own:
        s = jnp.where(_load_mask(drop_ref[:, c0:c0 + width], plan), asad_math.MASK_VALUE, s)
      p = jnp.exp(s * plan.scale - lse)
      dp = lax.dot_general(dout, v_ref[c0:c0 + width, :], (((1,), (1,)), ((), ())),
                           preferred_element_type=jnp.float32)
      ds = p * (dp - delta)
      dq = dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)
  dq_ref[...] = (dq * plan.scale).astype(dq_ref.dtype)


def _dkv_body(k_ref, v_ref, q_ref, dout_ref, lse_ref, delta_ref, drop_ref,
              dk_ref, dv_ref, *, plan: Plan):
  key_rows, rows = plan.blocks.key_rows, plan.blocks.rows
  key_frame, key_block = _divmod(pl.program_id(2), _real_row_blocks(plan, key_rows))
  col0 = key_block * key_rows
  k, v = k_ref[...], v_ref[...]

  def step(block, carry):
    dk, dv = carry
    query_frame, _, start = _slab_block(block, plan, rows)
    q = q_ref[pl.ds(start, rows), :]
    dout = dout_ref[pl.ds(start, rows), :]
    lse, delta = lse_ref[pl.ds(start, rows), :], delta_ref[pl.ds(start, rows), :]
    s, cols = _scores(q, k, plan)
    cols = cols + col0
    # Separate selects, as in the dq kernel; the mask applies only to same-frame query blocks.
    s = jnp.where(cols < plan.frame_len, s, asad_math.MASK_VALUE)
    if packs_mask(plan):
      dropped = _load_mask(drop_ref[pl.ds(lax.div(start, jnp.int32(rows)), 1), :], plan)
    else:
      dropped = _is_set(drop_ref[pl.ds(start, rows), :])
    s = jnp.where(query_frame == key_frame, jnp.where(dropped, asad_math.MASK_VALUE, s), s)
    p = jnp.exp(s * plan.scale - lse)
    dv = dv + lax.dot_general(p.astype(dout.dtype), dout, (((0,), (0,)), ((), ())),
                              preferred_element_type=jnp.float32)
    dp = lax.dot_general(dout, v, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    ds = p * (dp - delta)
    dk = dk + lax.dot_general(ds.astype(q.dtype), q, (((0,), (0,)), ((), ())),
                              preferred_element_type=jnp.float32)
    return dk, dv

  zeros = jnp.zeros((key_rows, plan.head_dim), jnp.float32)
  dk, dv = lax.fori_loop(0, 2 * _real_row_blocks(plan, rows), step, (zeros, zeros))
  dk_ref[...] = (dk * plan.scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def masked_backward(q, k, v, drop, out, lse, dout, plan: Plan):
  """Kernel 4 (two calls). Gradients of the masked attention for the padded layout.

  drop: the mask written by `masked_forward`.
  """
  rows, key_rows, npad, d = plan.blocks.rows, plan.blocks.key_rows, plan.padded, plan.head_dim
  mask_rows = _mask_struct(plan)[1]
  delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
  row_block = _row_block_index(rows, plan)
  dq = pallas_backend.pallas_call(
      functools.partial(_dq_body, plan=plan), plan, grid=_row_grid(plan, rows),
      inputs=[(q, (None, None, rows, d), row_block), *_frame_inputs(plan, rows, k, v),
              (drop, (None, None, mask_rows, npad), row_block),
              (dout, (None, None, rows, d), row_block),
              (lse, (None, None, rows, 1), row_block), (delta, (None, None, rows, 1), row_block)],
      outputs=[(jax.ShapeDtypeStruct(q.shape, q.dtype), (None, None, rows, d), row_block)],
      name="asad_backward_dq")[0]
  whole = lambda b, h, c: (b, h, 0, 0)
  key_block = _row_block_index(key_rows, plan)
  dk, dv = pallas_backend.pallas_call(
      functools.partial(_dkv_body, plan=plan), plan, grid=_row_grid(plan, key_rows),
      inputs=[(k, (None, None, key_rows, d), key_block), (v, (None, None, key_rows, d), key_block),
              (q, (None, None, 2 * npad, d), whole), (dout, (None, None, 2 * npad, d), whole),
              (lse, (None, None, 2 * npad, 1), whole), (delta, (None, None, 2 * npad, 1), whole),
              (drop, (None, None, drop.shape[2], key_rows),
               lambda b, h, c: (b, h, 0, _divmod(c, _real_row_blocks(plan, key_rows))[1]))],
      outputs=[(jax.ShapeDtypeStruct(k.shape, k.dtype), (None, None, key_rows, d), key_block),
               (jax.ShapeDtypeStruct(v.shape, v.dtype), (None, None, key_rows, d), key_block)],
      name="asad_backward_dkv")
  return dq, dk, dv


# --------------------------------------------------------------------------- public pieces


def to_padded(x: jax.Array, plan: Plan) -> jax.Array:
  """(B, L, H, D) -> (B, H, 2·n_pad, D): heads first, each frame zero-padded to n_pad rows."""
  x = jnp.swapaxes(x, 1, 2).reshape(plan.batch, plan.heads, 2, plan.frame_len, plan.head_dim)
  x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, plan.padded - plan.frame_len), (0, 0)))
  return x.reshape(plan.batch, plan.heads, 2 * plan.padded, plan.head_dim)


def from_padded(x: jax.Array, plan: Plan) -> jax.Array:
  """Inverse of `to_padded`."""
  x = x.reshape(plan.batch, plan.heads, 2, plan.padded, plan.head_dim)[:, :, :, :plan.frame_len]
  return jnp.swapaxes(x.reshape(plan.batch, plan.heads, plan.length, plan.head_dim), 1, 2)


def drop_selection(q, k, seed, plan: Plan, batch_offset=0):
  """Kernels 1-2 on (B, L, H, D) inputs: (keys slab, τ, cutoff) — for tests and diagnostics."""
  keys = sampling_keys(to_padded(q, plan), to_padded(k, plan), seed, batch_offset, plan)
  tau, cutoff = select_threshold(keys, plan)
  return keys, tau, cutoff


def dense_keys(keys: jax.Array, plan: Plan) -> jax.Array:
  """The keys slab as the reference's (B, H, L, L) int32 map (0 off the same-frame blocks)."""
  n, npad = plan.frame_len, plan.padded
  slab = keys.reshape(plan.batch, plan.heads, 2, npad, npad)[:, :, :, :n, :n]
  dense = jnp.zeros((plan.batch, plan.heads, plan.length, plan.length), jnp.int32)
  dense = dense.at[:, :, :n, :n].set(slab[:, :, 0])
  return dense.at[:, :, n:, n:].set(slab[:, :, 1])


def dense_mask(keys, tau, cutoff, plan: Plan) -> jax.Array:
  """The drop rule of the kernels applied to a dense key map: (B, H, L, L) bool."""
  dense = dense_keys(keys, plan)
  flat = jnp.arange(plan.length * plan.length, dtype=jnp.int32).reshape(plan.length, plan.length)
  tau, cutoff = tau[:, :, None, None], cutoff[:, :, None, None]
  return (dense > tau) | ((dense == tau) & (flat <= cutoff))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _attention(q, k, v, seed, batch_offset, plan: Plan):
  return _attention_forward(q, k, v, seed, batch_offset, plan)[0]


def _attention_forward(q, k, v, seed, batch_offset, plan: Plan):
  qp, kp, vp = (to_padded(x, plan) for x in (q, k, v))
  keys = sampling_keys(qp, kp, seed, batch_offset, plan)
  tau, cutoff = select_threshold(keys, plan)
  out, lse, drop = masked_forward(qp, kp, vp, keys, tau, cutoff, plan)
  # The backward pass reads the drop mask (1 bit a cell on GPU); the keys slab dies here.
  return from_padded(out, plan), (qp, kp, vp, drop, out, lse)


def _attention_backward(plan: Plan, residuals, dout):
  qp, kp, vp, drop, out, lse = residuals
  dq, dk, dv = masked_backward(qp, kp, vp, drop, out, lse, to_padded(dout, plan), plan)
  no_gradient = np.zeros((), jax.dtypes.float0)
  return (from_padded(dq, plan), from_padded(dk, plan), from_padded(dv, plan), no_gradient,
          no_gradient)


_attention.defvjp(_attention_forward, _attention_backward)


def asad_attention(q, k, v, *, seed, plan: Plan, batch_offset=0) -> jax.Array:
  """ASAD attention through the kernels. q, k, v: (B, L, H, D); differentiable in q, k, v.

  seed: uint32 scalar; batch_offset: int32 scalar, global index of batch row 0 (per-shard calls).
  """
  if plan.num_drop == 0:
    raise ValueError("ASAD kernels need K > 0 dropped cells; use plain attention for K = 0")
  return _attention(q, k, v, jnp.asarray(seed, jnp.uint32), jnp.asarray(batch_offset, jnp.int32),
                    plan)
