"""ASAD attention as Pallas kernels, one source for GPU (Triton lowering) and TPU (Mosaic).

The jnp reference materialises the (B, H, L, L) logits four times over and ranks 76,832 keys per
(b, h) with `lax.top_k`, the step that dominates its cost. Here the work is split in four kernels that
never hold more than one block of query rows against one frame of keys:

  1. keys    (grid B, H, row blocks): logits -> ASAD's row terms (docs/pretraining.md) -> the
             int32 sampling key of every same-frame cell, written as a (2·n_pad, n_pad) slab
             per (b, h).
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
With asad.masked_attention='cudnn' only kernels 1-2 run: `drop_mask` lays their cells out as a
dense mask for `jax.nn.dot_product_attention` (cuDNN's flash attention) instead of 3-4.

Layout inside: (B, H, 2·n_pad, ·) — each frame's n tokens padded to
n_pad = max(128, 2^⌈log2 n⌉) rows, so that frame boundaries fall on block boundaries and every
block shape is a power of two (Triton) and lane-aligned (TPU). Grids and loops visit only the row
blocks that hold real tokens (n = 196: 13 of 16 blocks of 16 rows a frame); rows of padding
blocks are never written. Where things sit in that layout: `asad_layout`; kernel 2: `asad_select`;
the backend layer: `pallas_backend.pallas_call`; the static plan (shapes, block sizes,
validation, VMEM budget): `asad_plan`. The kernel bodies are shared by GPU and TPU.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from dropmae_jax.ops.asad import layout
from dropmae_jax.ops.asad import arithmetic as asad_math
from dropmae_jax.ops.asad import hashing
from dropmae_jax.ops.asad import backend as pallas_backend
# Kernel 2 lives in asad_select; its entry points are part of this module's surface.
from dropmae_jax.ops.asad.select import exact_select, select_threshold  # noqa: F401
# The plan is part of this module's public surface (callers build it with make_plan).
from dropmae_jax.ops.asad.plan import BlockSizes, Plan, make_plan, tpu_vmem_problem  # noqa: F401



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


def _dropped(keys, tau, cutoff, frame, local_rows, local_cols, plan: Plan):
  """The drop rule for a block of same-frame cells: the K largest keys, lower index first on ties."""
  flat = layout.flat_index(frame, local_rows, local_cols, plan)
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


# --------------------------------------------------------------------------- 1. keys


def _keys_body(seed, batch_offset, q_ref, k_own_ref, k_other_ref, keys_ref, *, plan: Plan):
  rows = plan.blocks.keys_rows
  frame, row0 = layout.row_block_position(plan, rows)
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
  row_block = layout.row_block_index(rows, plan)
  return pallas_backend.pallas_call(
      functools.partial(_keys_body, plan=plan), plan, grid=layout.row_grid(plan, rows),
      scalars=[(jnp.asarray(seed, jnp.uint32), False),
               (jnp.asarray(batch_offset, jnp.int32), False)],
      inputs=[(q, (None, None, rows, d), row_block), *_frame_inputs(plan, rows, k)],
      outputs=[(jax.ShapeDtypeStruct((plan.batch, plan.heads, 2 * npad, npad), jnp.int32),
                (None, None, rows, npad), row_block)],
      name="asad_keys")[0]


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
  frame, row0 = layout.row_block_position(plan, rows)
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
  frame_of = lambda r: layout.padded_block(r, plan, rows)[0]
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
  row_block = layout.row_block_index(rows, plan)
  mask, mask_rows = _mask_struct(plan)
  return pallas_backend.pallas_call(
      functools.partial(_forward_body, plan=plan), plan, grid=layout.row_grid(plan, rows),
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
  key_frame, key_block = layout.static_divmod(pl.program_id(2),
                                              layout.real_row_blocks(plan, key_rows))
  col0 = key_block * key_rows
  k, v = k_ref[...], v_ref[...]

  def step(block, carry):
    dk, dv = carry
    query_frame, _, start = layout.slab_block(block, plan, rows)
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
  dk, dv = lax.fori_loop(0, 2 * layout.real_row_blocks(plan, rows), step, (zeros, zeros))
  dk_ref[...] = (dk * plan.scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def masked_backward(q, k, v, drop, out, lse, dout, plan: Plan):
  """Kernel 4 (two calls). Gradients of the masked attention for the padded layout.

  drop: the mask written by `masked_forward`.
  """
  rows, key_rows, npad, d = plan.blocks.rows, plan.blocks.key_rows, plan.padded, plan.head_dim
  mask_rows = _mask_struct(plan)[1]
  delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
  row_block = layout.row_block_index(rows, plan)
  dq = pallas_backend.pallas_call(
      functools.partial(_dq_body, plan=plan), plan, grid=layout.row_grid(plan, rows),
      inputs=[(q, (None, None, rows, d), row_block), *_frame_inputs(plan, rows, k, v),
              (drop, (None, None, mask_rows, npad), row_block),
              (dout, (None, None, rows, d), row_block),
              (lse, (None, None, rows, 1), row_block), (delta, (None, None, rows, 1), row_block)],
      outputs=[(jax.ShapeDtypeStruct(q.shape, q.dtype), (None, None, rows, d), row_block)],
      name="asad_backward_dq")[0]
  whole = lambda b, h, c: (b, h, 0, 0)
  key_block = layout.row_block_index(key_rows, plan)
  dk, dv = pallas_backend.pallas_call(
      functools.partial(_dkv_body, plan=plan), plan, grid=layout.row_grid(plan, key_rows),
      inputs=[(k, (None, None, key_rows, d), key_block), (v, (None, None, key_rows, d), key_block),
              (q, (None, None, 2 * npad, d), whole), (dout, (None, None, 2 * npad, d), whole),
              (lse, (None, None, 2 * npad, 1), whole), (delta, (None, None, 2 * npad, 1), whole),
              (drop, (None, None, drop.shape[2], key_rows),
               lambda b, h, c: (b, h, 0, layout.static_divmod(
                   c, layout.real_row_blocks(plan, key_rows))[1]))],
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


def drop_mask(q, k, seed, plan: Plan, batch_offset=0) -> jax.Array:
  """Kernels 1-2 on (B, L, H, D) inputs -> the dense (B, H, L, L) bool drop mask, for an attention
  library to apply (`asad.attention_with_drop_mask`). No gradient flows through it."""
  q, k = lax.stop_gradient(q), lax.stop_gradient(k)
  return dense_mask(*drop_selection(q, k, seed, plan, batch_offset), plan)


def dense_keys(keys: jax.Array, plan: Plan) -> jax.Array:
  """The keys slab as the reference's (B, H, L, L) int32 map (0 off the same-frame blocks)."""
  n, npad = plan.frame_len, plan.padded
  slab = keys.reshape(plan.batch, plan.heads, 2, npad, npad)[:, :, :, :n, :n]
  dense = jnp.zeros((plan.batch, plan.heads, plan.length, plan.length), jnp.int32)
  dense = dense.at[:, :, :n, :n].set(slab[:, :, 0])
  return dense.at[:, :, n:, n:].set(slab[:, :, 1])


def dense_mask(keys, tau, cutoff, plan: Plan) -> jax.Array:
  """The drop rule of the kernels on the keys slab, laid out densely: (B, H, L, L) bool.

  Built from the two same-frame blocks and concatenated with the (never dropped) cross-frame
  blocks, so that XLA writes it — or the bias an attention library makes of it — in one fusion
  that reads only the slab's real cells.
  """
  n, npad = plan.frame_len, plan.padded
  slab = keys.reshape(plan.batch, plan.heads, 2, npad, npad)[:, :, :, :n, :n]
  frame = jnp.arange(2, dtype=jnp.int32)[:, None, None]
  rows = jnp.arange(n, dtype=jnp.int32)[None, :, None]
  cols = jnp.arange(n, dtype=jnp.int32)[None, None, :]
  dropped = _dropped(slab, tau[:, :, None, None, None], cutoff[:, :, None, None, None], frame,
                     rows, cols, plan)
  cross = jnp.zeros((plan.batch, plan.heads, n, n), bool)
  return jnp.concatenate([jnp.concatenate([dropped[:, :, 0], cross], axis=-1),
                          jnp.concatenate([cross, dropped[:, :, 1]], axis=-1)], axis=-2)


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
