"""ASAD's per-cell arithmetic, written once for the jnp reference and the Pallas kernels.

Every implementation must drop *bit-identical* cells for the same seed. The cells are the K largest
sampling keys per (batch, head), so every implementation must compute bit-identical keys. Elementwise
float ops (exp, log, *, /) give the same bits wherever their inputs are the same bits, and a max is
exact in any order; a float *sum* is not: its rounding depends on the order a reduction happens to
use (XLA's vectorised row, a kernel's blocks). So the row sums that enter the keys are computed in
fixed point: each term is cut to 29 fractional bits and split into three 10-bit integer digits; a sum
of up to 2^14 such digits is an integer below 2^24, exact in float32 in any order. The result differs
from the real sum by less than L · 2^-29 (7e-7 for L = 392), below float32 rounding of the values.

No per-cell division by a row value and no multiply feeding an add appear on the way to a key:
compilers turn those into reciprocal-multiplies and FMAs differently in different fusions (XLA on
CPU does both), which would break bit-equality between the reference and the kernels.

Keys. Drawing K cells without replacement ∝ W is the exponential race (Efraimidis-Spirakis): keep the
K largest W_ij / E_ij with E_ij ~ Exp(1) i.i.d. — the same distribution as Gumbel-top-K on log W,
since log(W/E) = log W + G with G = −log E standard Gumbel. E comes from the counter-based hash.
Positive float32 keys order like their int32 bit patterns, so keys are stored and selected as int32;
0 marks cells that can never be dropped.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from dropmae_jax.ops.asad import hashing

EPS = 1e-6  # the released code's additive constant
# A finite "minus infinity": exp() of it is exactly 0 in float32, and no row becomes all-masked
# because the diagonal and the other frame are never dropped.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
_FRACTION_BITS = 29   # terms are < 2, so term · 2^29 < 2^30 fits int32
_DIGIT_BITS = 10
_DIGIT_MASK = (1 << _DIGIT_BITS) - 1
MAX_EXACT_TERMS = 1 << (24 - _DIGIT_BITS)  # digit sums stay below 2^24


def num_dropped_cells(length: int, drop_ratio: float) -> int:
  """K = floor(P · (n − 1)) · L for L = 2n tokens (the released `sample_num`)."""
  return int(drop_ratio * (length // 2 - 1)) * length


def fixed_point_digit_sums(x: jax.Array, axis: int = -1):
  """Exact partial sums of terms in [0, 2): three float32 arrays of integer digit sums (keepdims).

  Partial results over disjoint parts of a row add exactly; `digit_sums_to_value` finishes.
  """
  scaled = (x * float(1 << _FRACTION_BITS)).astype(jnp.int32)
  digits = (scaled >> (2 * _DIGIT_BITS), (scaled >> _DIGIT_BITS) & _DIGIT_MASK,
            scaled & _DIGIT_MASK)
  return tuple(jnp.sum(d.astype(jnp.float32), axis=axis, keepdims=True) for d in digits)


def add_digit_sums(a, b):
  return tuple(x + y for x, y in zip(a, b))


def digit_sums_to_value(sums) -> jax.Array:
  high, middle, low = sums
  return (high * 2.0 ** (2 * _DIGIT_BITS - _FRACTION_BITS)
          + middle * 2.0 ** (_DIGIT_BITS - _FRACTION_BITS)) + low * 2.0 ** -_FRACTION_BITS


def exact_sum(x: jax.Array, axis: int = -1) -> jax.Array:
  """Order-independent sum of terms in [0, 2) along `axis` (keepdims), float32."""
  return digit_sums_to_value(fixed_point_digit_sums(x, axis))


def eps_offset(total: jax.Array) -> jax.Array:
  """c_i = ε · l_i: with it, P_ij + ε = (e_ij + c_i) / l_i for unnormalised e_ij = exp(s_ij − max)."""
  return EPS * total


def temporal_match(other: jax.Array, total: jax.Array) -> jax.Array:
  """t_i from the other frame's max (or exact sum) of e: other / l + ε."""
  return other / total + EPS


def weight_scale(match: jax.Array, own_sum: jax.Array, total: jax.Array) -> jax.Array:
  """a_i with W_ij = (e_ij + c_i) · a_i = Â_ij · t_i; own_sum = Σ_j (e_ij + c_i) over eligible j."""
  spatial = own_sum / total                     # Σ_j (P_ij + ε)
  return match / jnp.where(spatial > 0, spatial, 1.0) / total


def sampling_keys(e: jax.Array, offset: jax.Array, scale: jax.Array,
                  exponential: jax.Array) -> jax.Array:
  """Race keys W_ij / E_ij, float32, with W_ij = (e_ij + c_i) · a_i.

  Cells are never divided by a broadcast row value: XLA rewrites that into a multiply by the
  reciprocal and may then fuse it with the next add into an FMA, differently per fusion.
  """
  return (e + offset) * scale / exponential


def keys_as_int(keys: jax.Array, eligible: jax.Array) -> jax.Array:
  """Positive float32 keys as order-preserving int32 bit patterns; 0 where not eligible."""
  return jnp.where(eligible, jax.lax.bitcast_convert_type(keys, jnp.int32), 0)


def cell_exponential(seed, b, h, i, j) -> jax.Array:
  """Exp(1) variate of cell (b, h, i, j) (uint32 coordinates, broadcastable)."""
  return hashing.exponential_from_bits(hashing.cell_bits(seed, b, h, i, j))
