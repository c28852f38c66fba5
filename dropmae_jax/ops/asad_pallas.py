"""ASAD attention as Pallas kernels, one source for GPU (Triton lowering) and TPU (Mosaic).

The jnp reference materialises the (B, H, L, L) logits four times over and ranks 76,832 keys per
(b, h) with `lax.top_k`, the step that dominates its cost. Here the work is split in four kernels that
never hold more than one block of query rows against one frame of keys:

  1. keys    (grid B, H, row blocks): logits -> the row terms of DESIGN §1 -> int32 sampling key of
             every same-frame cell, written as a (2·n_pad, n_pad) slab per (b, h).
  2. select  (grid B, H): the K-th largest key τ by 16-way bisection over the int32 key range (8
             counting passes over the slab, no sort), then — only when cells tie at τ — the flat-index
             cutoff that reproduces `lax.top_k`'s lower-index-first rule.
  3. forward (grid B, H, row blocks): attention whose same-frame logits are masked where
             key > τ or (key == τ and flat index <= cutoff), an online softmax over key chunks
             (so K/V tiles stay small at 384²); writes out, the row log-sum-exp and the mask.
  4. backward: dq over row blocks, dk/dv over key blocks, reading the int8 mask that the forward
             kernel wrote (a quarter of the keys slab, which is freed after the forward pass).

Layout inside: (B, H, 2·n_pad, ·) — each frame's n tokens padded to n_pad = max(128, 2^⌈log2 n⌉)
rows, so that frame boundaries fall on block boundaries and every block shape is a power of two
(Triton) and lane-aligned (TPU). The backend layer is `pallas_backend.pallas_call`; the static plan
(shapes, block sizes, validation, VMEM budget) is `asad_plan`. The kernel bodies are shared.
"""
from __future__ import annotations

import functools

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


def _divmod(x, divisor: int):
  """Quotient and remainder of a non-negative traced int32 by a static divisor, with plain lax ops
  (jnp's floor-division wrappers do not lower inside Triton loops on jax 0.10)."""
  divisor = jnp.int32(divisor)
  return lax.div(x, divisor), lax.rem(x, divisor)


def _row_block_position(plan: Plan, rows: int):
  """(frame, first local row) of the program's row block (grid axis 2)."""
  frame, block = _divmod(pl.program_id(2), plan.padded // rows)
  return frame, block * rows


# --------------------------------------------------------------------------- 1. keys


def _keys_body(seed, batch_offset, q_ref, k_own_ref, k_other_ref, keys_ref, *, plan: Plan):
  rows = plan.blocks.rows
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
  rows, npad, d = plan.blocks.rows, plan.padded, plan.head_dim
  per_frame = npad // rows
  frame_of = lambda r: _divmod(r, per_frame)[0]
  return pallas_backend.pallas_call(
      functools.partial(_keys_body, plan=plan), plan, grid=(plan.batch, plan.heads, 2 * per_frame),
      scalars=[(jnp.asarray(seed, jnp.uint32), False),
               (jnp.asarray(batch_offset, jnp.int32), False)],
      inputs=[(q, (None, None, rows, d), lambda b, h, r: (b, h, r, 0)),
              (k, (None, None, npad, d), lambda b, h, r: (b, h, frame_of(r), 0)),
              (k, (None, None, npad, d), lambda b, h, r: (b, h, 1 - frame_of(r), 0))],
      outputs=[(jax.ShapeDtypeStruct((plan.batch, plan.heads, 2 * npad, npad), jnp.int32),
                (None, None, rows, npad), lambda b, h, r: (b, h, r, 0))],
      name="asad_keys")[0]


# --------------------------------------------------------------------------- 2. select


def _count_passes(keys_ref, thresholds, predicate, plan: Plan):
  """Counts, for each threshold, the slab cells with predicate(keys, flat, threshold)."""
  rows, npad = plan.blocks.select_rows, plan.padded
  per_frame = npad // rows

  def step(block, counts):
    start = pl.multiple_of(block * rows, rows)
    keys = keys_ref[pl.ds(start, rows), :]
    frame, block_in_frame = _divmod(block, per_frame)
    local_rows = lax.broadcasted_iota(jnp.int32, keys.shape, 0) + block_in_frame * rows
    local_cols = lax.broadcasted_iota(jnp.int32, keys.shape, 1)
    flat = _flat_index(frame, local_rows, local_cols, plan)
    return tuple(c + jnp.sum(predicate(keys, flat, t).astype(jnp.float32)).astype(jnp.int32)
                 for c, t in zip(counts, thresholds))

  zeros = tuple(jnp.int32(0) for _ in thresholds)
  return lax.fori_loop(0, 2 * per_frame, step, zeros)


def _bisect(keys_ref, bracket, predicate, on_lo_side, plan: Plan):
  """Narrows an integer bracket (lo, hi, count(lo), count(hi)) until hi = lo + 1.

  Each pass counts 15 evenly spaced thresholds in one sweep over the slab; counts are monotone in
  the threshold, so the thresholds with on_lo_side(count) form a prefix: the last of them becomes
  lo and the first of the rest becomes hi.
  """
  def body(state):
    lo, hi, c_lo, c_hi = state
    step = _divmod(hi - lo, _RADIX)[0] + 1
    thresholds = [jnp.minimum(lo + d * step, hi) for d in range(1, _RADIX)]
    counts = _count_passes(keys_ref, thresholds, predicate, plan)
    new_lo, new_c_lo, new_hi, new_c_hi = lo, c_lo, hi, c_hi
    for t, c in zip(thresholds, counts):
      lo_side = on_lo_side(c)
      new_lo, new_c_lo = jnp.where(lo_side, t, new_lo), jnp.where(lo_side, c, new_c_lo)
    for t, c in zip(reversed(thresholds), reversed(counts)):
      hi_side = jnp.logical_not(on_lo_side(c))
      new_hi, new_c_hi = jnp.where(hi_side, t, new_hi), jnp.where(hi_side, c, new_c_hi)
    return new_lo, new_hi, new_c_lo, new_c_hi

  return lax.while_loop(lambda state: state[1] - state[0] > 1, body, bracket)


def _select_body(keys_ref, *, plan: Plan):
  """Returns (τ, cutoff): drop the cells with key > τ, and those with key == τ and flat <= cutoff."""
  k = jnp.int32(plan.num_drop)
  cells = jnp.int32(2 * plan.padded * plan.padded)
  tau, _, count_ge, count_gt = _bisect(
      keys_ref, (jnp.int32(0), jnp.int32(_KEY_LIMIT), cells, jnp.int32(0)),
      lambda keys, flat, t: keys >= t, lambda c: c >= k, plan)
  # Cells tied at τ: lax.top_k keeps the lower flat indices. Usually all ties fit and the search
  # below starts already narrowed (hi = lo + 1).
  need, ties = k - count_gt, count_ge - count_gt
  last = jnp.int32(plan.length * plan.length - 1)
  lo = jnp.where(ties > need, jnp.int32(-1), last - 1)
  _, cutoff, _, _ = _bisect(
      keys_ref, (lo, last, jnp.int32(0), ties),
      lambda keys, flat, t: (keys == tau) & (flat <= t), lambda c: c < need, plan)
  return tau, cutoff


def select_threshold(keys, plan: Plan):
  """Kernel 2. keys (B, H, 2·n_pad, n_pad) int32 -> (τ, cutoff), each (B, H) int32."""
  slab = (None, None, 2 * plan.padded, plan.padded)
  return pallas_backend.pallas_call(
      functools.partial(_select_body, plan=plan), plan, grid=(plan.batch, plan.heads),
      inputs=[(keys, slab, lambda b, h: (b, h, 0, 0))], scalar_outputs=2, parallel=False,
      vmem_bytes=asad_plan.select_vmem_bytes(plan), name="asad_select")


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
        drop_ref[:, c0:c0 + width] = jnp.where(drop, 1, 0).astype(jnp.int8)
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
    drop_ref[:, c0:c0 + chunk] = jnp.zeros((rows, chunk), jnp.int8)
  out_ref[...] = (acc / total).astype(out_ref.dtype)
  lse_ref[...] = row_max * plan.scale + jnp.log(total)


def _frame_inputs(plan: Plan, rows: int, *arrays):
  """Blocks for a row-block program: each array's own frame and other frame, whole."""
  per_frame = plan.padded // rows
  frame_of = lambda r: _divmod(r, per_frame)[0]
  block = (None, None, plan.padded, plan.head_dim)
  specs = []
  for a in arrays:
    specs += [(a, block, lambda b, h, r: (b, h, frame_of(r), 0)),
              (a, block, lambda b, h, r: (b, h, 1 - frame_of(r), 0))]
  return specs


def masked_forward(q, k, v, keys, tau, cutoff, plan: Plan):
  """Kernel 3. Padded-layout attention with the ASAD mask.

  Returns out (like q), lse (B, H, 2·n_pad, 1) float32 and the drop mask as int8
  (B, H, 2·n_pad, n_pad) — a quarter of the keys slab, kept for the backward pass.
  """
  rows, npad, d = plan.blocks.rows, plan.padded, plan.head_dim
  row_block = lambda b, h, r: (b, h, r, 0)
  return pallas_backend.pallas_call(
      functools.partial(_forward_body, plan=plan), plan,
      grid=(plan.batch, plan.heads, 2 * npad // rows),
      scalars=[(tau, True), (cutoff, True)],
      inputs=[(q, (None, None, rows, d), row_block), *_frame_inputs(plan, rows, k, v),
              (keys, (None, None, rows, npad), row_block)],
      outputs=[(jax.ShapeDtypeStruct(q.shape, q.dtype), (None, None, rows, d), row_block),
               (jax.ShapeDtypeStruct((plan.batch, plan.heads, 2 * npad, 1), jnp.float32),
                (None, None, rows, 1), row_block),
               (jax.ShapeDtypeStruct(keys.shape, jnp.int8), (None, None, rows, npad), row_block)],
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
        s = jnp.where(_is_set(drop_ref[:, c0:c0 + width]), asad_math.MASK_VALUE, s)
      p = jnp.exp(s * plan.scale - lse)
      dp = lax.dot_general(dout, v_ref[c0:c0 + width, :], (((1,), (1,)), ((), ())),
                           preferred_element_type=jnp.float32)
      ds = p * (dp - delta)
      dq = dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)
  dq_ref[...] = (dq * plan.scale).astype(dq_ref.dtype)


def _dkv_body(k_ref, v_ref, q_ref, dout_ref, lse_ref, delta_ref, drop_ref,
              dk_ref, dv_ref, *, plan: Plan):
  key_rows, rows, npad = plan.blocks.key_rows, plan.blocks.rows, plan.padded
  key_frame, key_block = _divmod(pl.program_id(2), npad // key_rows)
  col0 = key_block * key_rows
  k, v = k_ref[...], v_ref[...]
  per_frame = npad // rows

  def step(block, carry):
    dk, dv = carry
    start = pl.multiple_of(block * rows, rows)
    q = q_ref[pl.ds(start, rows), :]
    dout = dout_ref[pl.ds(start, rows), :]
    lse, delta = lse_ref[pl.ds(start, rows), :], delta_ref[pl.ds(start, rows), :]
    s, cols = _scores(q, k, plan)
    cols = cols + col0
    query_frame = _divmod(block, per_frame)[0]
    # Separate selects, as in the dq kernel; the mask applies only to same-frame query blocks.
    s = jnp.where(cols < plan.frame_len, s, asad_math.MASK_VALUE)
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
  dk, dv = lax.fori_loop(0, 2 * per_frame, step, (zeros, zeros))
  dk_ref[...] = (dk * plan.scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def masked_backward(q, k, v, drop, out, lse, dout, plan: Plan):
  """Kernel 4 (two calls). Gradients of the masked attention for the padded layout.

  drop: the int8 mask written by `masked_forward`.
  """
  rows, key_rows, npad, d = plan.blocks.rows, plan.blocks.key_rows, plan.padded, plan.head_dim
  delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
  row_block = lambda b, h, r: (b, h, r, 0)
  dq = pallas_backend.pallas_call(
      functools.partial(_dq_body, plan=plan), plan, grid=(plan.batch, plan.heads, 2 * npad // rows),
      inputs=[(q, (None, None, rows, d), row_block), *_frame_inputs(plan, rows, k, v),
              (drop, (None, None, rows, npad), row_block),
              (dout, (None, None, rows, d), row_block),
              (lse, (None, None, rows, 1), row_block), (delta, (None, None, rows, 1), row_block)],
      outputs=[(jax.ShapeDtypeStruct(q.shape, q.dtype), (None, None, rows, d), row_block)],
      name="asad_backward_dq")[0]
  whole = lambda b, h, c: (b, h, 0, 0)
  dk, dv = pallas_backend.pallas_call(
      functools.partial(_dkv_body, plan=plan), plan,
      grid=(plan.batch, plan.heads, 2 * npad // key_rows),
      inputs=[(k, (None, None, key_rows, d), row_block), (v, (None, None, key_rows, d), row_block),
              (q, (None, None, 2 * npad, d), whole), (dout, (None, None, 2 * npad, d), whole),
              (lse, (None, None, 2 * npad, 1), whole), (delta, (None, None, 2 * npad, 1), whole),
              (drop, (None, None, 2 * npad, key_rows),
               lambda b, h, c: (b, h, 0, _divmod(c, npad // key_rows)[1]))],
      outputs=[(jax.ShapeDtypeStruct(k.shape, k.dtype), (None, None, key_rows, d), row_block),
               (jax.ShapeDtypeStruct(v.shape, v.dtype), (None, None, key_rows, d), row_block)],
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
  # The backward pass reads the int8 mask (B·H·2·n_pad² bytes); the keys slab dies here.
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
