"""Adaptive Spatial-Attention Dropout (ASAD): the public op and its plain-jnp reference.

ASAD (DropMAE, CVPR 2023) drops, per (batch, head), K attention cells that lie in a query's *own*
frame, with probability proportional to how strongly the query attends spatially, scaled by how well
it already matches the *other* frame. The decoder must then reconstruct from temporal cues.

For attention probabilities P = softmax(S) over L = 2n tokens (frames x and z, n tokens each):
  t_i  = max_{j in other frame} P_ij + 1e-6       ('max', the released code; 'sum' is the paper's)
  a_ij = P_ij + 1e-6 for j in i's frame, j != i;  a_ii = 0;   Â_ij = a_ij / Σ_j a_ij
  W_ij = Â_ij · t_i on those cells, 0 elsewhere
  draw K = floor(P_drop · (n − 1)) · L distinct cells ∝ W without replacement, set their logits to −∞.
Sampling without replacement ∝ W is done exactly as an exponential race (≡ Gumbel-top-K): keys
W_ij / E_bhij, keep the K largest (ties broken toward the lower flat index i·L + j, `lax.top_k`'s
rule). E comes from the counter-based hash in `hashing.py` and the row sums are exact
(`arithmetic.py`), so the kernels in `kernels.py` select bit-identical cells.

Layouts follow Flax: q, k, v are (B, L, H, D).
"""
from __future__ import annotations

import math
from typing import Literal

import chex
import jax
import jax.numpy as jnp

from dropmae_jax.ops.asad import arithmetic as asad_math
from dropmae_jax.ops.asad import kernels as asad_pallas
from dropmae_jax.ops import dispatch

Temporal = Literal["max", "sum"]
MASK_VALUE = asad_math.MASK_VALUE
num_dropped_cells = asad_math.num_dropped_cells


def halves_frame_ids(batch: int, length: int) -> jax.Array:
  """(B, L) int32 frame ids for the decoder's layout [x tokens; z tokens]: 0 for x, 1 for z."""
  ids = (jnp.arange(length) >= length // 2).astype(jnp.int32)
  return jnp.broadcast_to(ids, (batch, length))


def _row_terms(scores: jax.Array, frame_ids: jax.Array, temporal: Temporal, scale: float = 1.0):
  """ASAD steps 1-3 (docs/pretraining.md) in the kernels' arithmetic: (e, c, a, eligible), with
  W = (e + c) · a.

  `scale` is applied after subtracting the row max, as the kernels do: exp((s - max) · scale) has
  no multiply-add that a compiler could fuse into an FMA.
  """
  scores = scores.astype(jnp.float32)
  length = scores.shape[-1]
  e = jnp.exp((scores - jnp.max(scores, axis=-1, keepdims=True)) * scale)
  total = asad_math.exact_sum(e)
  same_frame = (frame_ids[:, :, None] == frame_ids[:, None, :])[:, None]  # (B, 1, L, L)
  eligible = same_frame & ~jnp.eye(length, dtype=bool)
  other = jnp.where(same_frame, 0.0, e)
  if temporal == "max":
    other = jnp.max(other, axis=-1, keepdims=True)
  elif temporal == "sum":
    other = asad_math.exact_sum(other)
  else:
    raise ValueError(f"asad temporal must be 'max' or 'sum', got {temporal!r}")
  offset = asad_math.eps_offset(total)
  own_sum = asad_math.exact_sum(jnp.where(eligible, e + offset, 0.0))
  weight_scale = asad_math.weight_scale(asad_math.temporal_match(other, total), own_sum, total)
  return e, offset, weight_scale, eligible


def drop_weights(logits: jax.Array, frame_ids: jax.Array, temporal: Temporal = "max") -> jax.Array:
  """ASAD sampling weights W (B, H, L, L), float32; zero outside same-frame off-diagonal cells.

  Args:
    logits: (B, H, L, L) scaled attention logits (treated as constants).
    frame_ids: (B, L) int frame id of each token.
    temporal: 'max' (released code) or 'sum' (paper) over the other frame's probabilities.
  """
  e, offset, weight_scale, eligible = _row_terms(logits, frame_ids, temporal)
  return jnp.where(eligible, (e + offset) * weight_scale, 0.0)


def drop_keys_reference(logits: jax.Array, seed: jax.Array, *, frame_ids: jax.Array | None = None,
                        temporal: Temporal = "max", batch_offset: int = 0,
                        scale: float = 1.0) -> jax.Array:
  """Sampling keys (B, H, L, L) int32: the K largest per (b, h) are dropped; 0 = never dropped.

  The attention logits are `logits · scale` (pass raw q·k and 1/sqrt(D) to match the kernels bit
  for bit, or scaled logits and 1).
  """
  batch, heads, length, _ = logits.shape
  if frame_ids is None:
    frame_ids = halves_frame_ids(batch, length)
  e, offset, weight_scale, eligible = _row_terms(jax.lax.stop_gradient(logits), frame_ids,
                                                temporal, scale)
  b = (jnp.arange(batch, dtype=jnp.uint32) + jnp.uint32(batch_offset))[:, None, None, None]
  h = jnp.arange(heads, dtype=jnp.uint32)[None, :, None, None]
  i = jnp.arange(length, dtype=jnp.uint32)[None, None, :, None]
  j = jnp.arange(length, dtype=jnp.uint32)[None, None, None, :]
  exponential = asad_math.cell_exponential(jnp.asarray(seed, jnp.uint32), b, h, i, j)
  keys = asad_math.sampling_keys(e, offset, weight_scale, exponential)
  return asad_math.keys_as_int(keys, eligible)


def drop_mask_reference(logits: jax.Array, seed: jax.Array, *, drop_ratio: float,
                        frame_ids: jax.Array | None = None, temporal: Temporal = "max",
                        batch_offset: int = 0, scale: float = 1.0) -> jax.Array:
  """The exact ASAD drop mask, (B, H, L, L) bool, True = dropped. No gradient flows through it.

  Args:
    logits: (B, H, L, L) attention logits.
    seed: uint32 scalar; with (b, h, i, j) it fixes every random variate.
    drop_ratio: P in the paper; K = floor(P (L/2 − 1)) L cells are dropped per (b, h).
    frame_ids: (B, L) frame id per token; default: first half frame x, second half frame z.
    temporal: 'max' | 'sum'.
    batch_offset: global batch index of row 0, for per-shard calls.
    scale: multiplies `logits` (see `drop_keys_reference`).
  """
  batch, heads, length, _ = logits.shape
  keys = drop_keys_reference(logits, seed, frame_ids=frame_ids, temporal=temporal,
                             batch_offset=batch_offset, scale=scale)
  k = min(num_dropped_cells(length, drop_ratio), length * length)
  # Keys are bit patterns of non-negative finite floats (0 = ineligible), whose int32 order is
  # their float order, equal floats having equal bits: ranking them as float32 picks the same
  # cells, and XLA's float top-k is an order of magnitude faster than its int32 path (a sort).
  as_float = jax.lax.bitcast_convert_type(keys, jnp.float32)
  top_keys, top_index = jax.lax.top_k(as_float.reshape(batch, heads, length * length), k)
  # An ineligible cell (key 0) can only come up when fewer than K cells are eligible (short
  # frames in the encoder ablation); never drop it.
  chosen = top_keys > 0
  mask = jnp.zeros((batch, heads, length * length), bool)
  b_idx = jnp.arange(batch)[:, None, None]
  h_idx = jnp.arange(heads)[None, :, None]
  mask = mask.at[b_idx, h_idx, top_index].set(chosen)
  return mask.reshape(batch, heads, length, length)


def attention_reference(q: jax.Array, k: jax.Array, v: jax.Array,
                        drop_mask: jax.Array | None = None) -> jax.Array:
  """Softmax attention in float32 math with an optional boolean drop mask.

  Args:
    q, k, v: (B, L, H, D).
    drop_mask: (B, H, L, L) bool, True = logit set to −∞ before the softmax.
  Returns:
    (B, L, H, D) in q's dtype.
  """
  scale = 1.0 / math.sqrt(q.shape[-1])
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  if drop_mask is not None:
    logits = jnp.where(drop_mask, MASK_VALUE, logits)
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
  return out.astype(q.dtype)


IMPLEMENTATIONS = ("reference", "pallas_gpu", "pallas_tpu", "auto")
MASKED_ATTENTION = ("fused", "cudnn", "auto")


def attention_with_drop_mask(q: jax.Array, k: jax.Array, v: jax.Array,
                             drop_mask: jax.Array) -> jax.Array:
  """`jax.nn.dot_product_attention` with the ASAD cells hidden: cuDNN's flash attention where it
  supports the call (dispatch.attention_implementation), XLA's elsewhere (CPU tests, float32).

  Args:
    q, k, v: (B, L, H, D).
    drop_mask: (B, H, L, L) bool, True = dropped; treated as a constant (no gradient).
  Returns:
    (B, L, H, D) in q's dtype.
  """
  chex.assert_shape(drop_mask, (q.shape[0], q.shape[2], q.shape[1], k.shape[1]))
  # A row always keeps its other frame's keys, so no softmax row is empty.
  return dispatch.dot_product_attention(q, k, v, mask=~jax.lax.stop_gradient(drop_mask))


def resolve_masked_attention(choice: str, device: dispatch.Device | None = None) -> str:
  """Maps config.asad.masked_attention to 'fused' or 'cudnn' on `device` (default: JAX's first).

  'auto' is the choice measured on that hardware (dispatch.MEASURED_MASKED_ATTENTION), else
  'fused'.
  """
  if choice not in MASKED_ATTENTION:
    raise ValueError(f"unknown config.asad.masked_attention {choice!r}; choose from "
                     f"{MASKED_ATTENTION}")
  if choice == "auto":
    return dispatch.masked_attention_for(device or dispatch.current_device())
  return choice


def resolve_impl(impl: str, device: dispatch.Device | None = None) -> str:
  """Maps config.asad.impl to a concrete implementation on `device` (default: JAX's first).

  'auto' is the kernel measured on that hardware (dispatch.MEASURED_ASAD_KERNELS), else the
  reference.
  """
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"unknown ASAD impl {impl!r} (config.asad.impl); choose from {IMPLEMENTATIONS}")
  if impl == "auto":
    return dispatch.asad_impl_for(device or dispatch.current_device())
  return impl


def asad_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, seed: jax.Array,
                   drop_ratio: float, frame_ids: jax.Array | None = None,
                   temporal: Temporal = "max", impl: str = "reference",
                   masked_attention: str = "fused", batch_offset: int = 0) -> jax.Array:
  """Attention with ASAD: the decoder's attention op.

  Args:
    q, k, v: (B, L, H, D) with L even (two frames).
    seed: uint32 scalar that fixes the drop cells (one per layer and step).
    drop_ratio: P; 0 gives plain attention (TwinMAE).
    frame_ids: (B, L) frame of each token; default halves [x; z] (the kernels support only that).
    temporal: 'max' (released) | 'sum' (paper).
    impl: 'reference' (jnp), 'pallas_gpu' (Triton lowering), 'pallas_tpu' (Mosaic) or 'auto'.
      On a CPU backend the kernels run in Pallas interpret mode (tests).
    masked_attention: who applies the chosen cells — 'fused' (the impl's own attention: the
      Pallas forward/backward kernels, or the reference's softmax), 'cudnn'
      (`attention_with_drop_mask`: impl selects the cells only) or 'auto'. Same cells either way.
    batch_offset: global batch index of row 0 when called per shard.
  Returns:
    (B, L, H, D).
  """
  chex.assert_rank([q, k, v], 4)
  chex.assert_equal_shape([q, k, v])
  length = q.shape[1]
  if frame_ids is None and length % 2:
    raise ValueError(f"ASAD needs two equal frames: sequence length {length} is odd")
  if not 0.0 <= drop_ratio < 1.0:
    raise ValueError(f"ASAD drop_ratio (config.asad.drop_ratio) must be in [0, 1), got {drop_ratio}")
  impl = resolve_impl(impl)
  fused = resolve_masked_attention(masked_attention) == "fused"
  if drop_ratio == 0.0 or num_dropped_cells(length, drop_ratio) == 0:
    return plain_attention(q, k, v)
  scale = 1.0 / math.sqrt(q.shape[-1])
  if impl != "reference":
    if frame_ids is not None:
      raise ValueError(f"ASAD impl {impl!r} supports the decoder's two-halves layout only; use "
                       "config.asad.impl='reference' with asad.in_encoder")
    return _kernel_attention(q, k, v, seed, drop_ratio, temporal, impl, fused, batch_offset)
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  mask = drop_mask_reference(scores, seed, drop_ratio=drop_ratio, frame_ids=frame_ids,
                             temporal=temporal, batch_offset=batch_offset, scale=scale)
  return attention_reference(q, k, v, mask) if fused else attention_with_drop_mask(q, k, v, mask)


def _interpret_kernels() -> bool:
  """Kernels run in Pallas interpret mode where they cannot be compiled: a CPU backend (tests).
  (benchmarks/asad_compile.py replaces this to compile for TPUs ahead of time from a CPU host.)"""
  return jax.default_backend() == "cpu"


def _kernel_attention(q, k, v, seed, drop_ratio, temporal, impl, fused, batch_offset):
  """The Pallas path. Under a mesh (jax.set_mesh) the batch is split over every mesh axis with
  shard_map — Pallas calls are not partitioned automatically — and each shard hashes its global
  batch rows, so any device count drops the same cells. fused: the kernels also compute the
  attention; else they select the cells and `attention_with_drop_mask` applies them."""
  make_plan = lambda shape: asad_pallas.make_plan(
      shape, drop_ratio=drop_ratio, temporal=temporal, backend=impl.removeprefix("pallas_"),
      interpret=_interpret_kernels())

  def attend(q, k, v, seed, plan, batch_offset):
    if fused:
      return asad_pallas.asad_attention(q, k, v, seed=seed, plan=plan, batch_offset=batch_offset)
    mask = asad_pallas.drop_mask(q, k, seed, plan, batch_offset=batch_offset)
    return attention_with_drop_mask(q, k, v, mask)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return attend(q, k, v, seed, make_plan(q.shape), batch_offset)
  axes = tuple(mesh.axis_names)
  if q.shape[0] % mesh.size:
    raise ValueError(f"ASAD kernels split the batch over all {mesh.size} devices of the mesh; "
                     f"batch {q.shape[0]} does not divide")
  local_shape = (q.shape[0] // mesh.size, *q.shape[1:])
  plan = make_plan(local_shape)

  def per_shard(q, k, v, seed):
    offset = batch_offset + jax.lax.axis_index(axes) * local_shape[0]
    return attend(q, k, v, seed, plan, offset)

  batch = jax.sharding.PartitionSpec(axes)
  return jax.shard_map(per_shard, mesh=mesh, in_specs=(batch, batch, batch,
                                                       jax.sharding.PartitionSpec()),
                       out_specs=batch, check_vma=False)(q, k, v, jnp.asarray(seed, jnp.uint32))


def plain_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """Unmasked attention, (B, L, H, D) -> (B, L, H, D): cuDNN's flash attention where it supports
  the call (dispatch.attention_implementation), else XLA's."""
  return dispatch.dot_product_attention(q, k, v)
