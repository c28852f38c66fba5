"""Counter-based random numbers shared by every ASAD implementation.

ASAD draws one Gumbel variate per attention cell (batch b, head h, query i, key j). Drawing them
from `jax.random` would tie the cells to one implementation: `jax.random` has no lowering inside GPU
Pallas kernels. Instead each variate is a pure function of (seed, b, h, i, j) built from 32-bit
integer multiplies, xors and shifts, which every backend (XLA, Triton, Mosaic GPU/TPU, numpy)
computes bit for bit the same. So a kernel and the jnp reference drop the very same cells.

The mixer is the "lowbias32" finaliser (Wellons' hash-prospector), a bijection on uint32 with
good avalanche; chaining it over the coordinates gives independent-looking streams per cell.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

_GOLDEN = np.uint32(0x9E3779B9)
_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)


def mix32(x):
  """lowbias32: a uint32 -> uint32 bijection. Works on jnp and numpy uint32 arrays alike."""
  x = x ^ (x >> 16)
  x = x * _M1
  x = x ^ (x >> 15)
  x = x * _M2
  x = x ^ (x >> 16)
  return x


def row_bits(seed, b, h, i):
  """The hash state after (seed, b, h, i): kernels compute it once per query row."""
  x = mix32(seed + _GOLDEN)
  for coordinate in (b, h, i):
    x = mix32(x ^ coordinate)
  return x


def cell_bits(seed, b, h, i, j):
  """uint32 random bits for attention cell (b, h, i, j) under `seed` (all broadcastable uint32)."""
  return mix32(row_bits(seed, b, h, i) ^ j)


def bits_to_open_unit(bits):
  """uint32 -> float32 uniform in the open interval (0, 1): the top 24 bits, centred in their bin."""
  # Through int32: the 24-bit value is exact there, and unsigned->float conversions are not
  # lowered by every Pallas backend.
  return ((bits >> 8).astype(jnp.int32).astype(jnp.float32) + 0.5) * (1.0 / (1 << 24))


def exponential_from_bits(bits):
  """Standard exponential variates -log U from uint32 bits, float32 (ASAD's sampling keys)."""
  return -jnp.log(bits_to_open_unit(bits))


def gumbel_from_bits(bits):
  """Standard Gumbel variates -log(-log U) from uint32 bits, float32."""
  u = bits_to_open_unit(bits)
  return -jnp.log(-jnp.log(u))


def cell_gumbel(seed, batch: int, heads: int, length: int, *, batch_offset=0):
  """Gumbel noise for every cell of a (batch, heads, length, length) attention map, float32.

  Args:
    seed: uint32 scalar (array).
    batch, heads, length: the attention map's sizes.
    batch_offset: global index of this batch's first element (so a shard draws what the whole
      batch would have drawn for its rows).
  Returns:
    (batch, heads, length, length) float32.
  """
  seed = jnp.asarray(seed, jnp.uint32)
  b = (jnp.arange(batch, dtype=jnp.uint32) + jnp.uint32(batch_offset))[:, None, None, None]
  h = jnp.arange(heads, dtype=jnp.uint32)[None, :, None, None]
  i = jnp.arange(length, dtype=jnp.uint32)[None, None, :, None]
  j = jnp.arange(length, dtype=jnp.uint32)[None, None, None, :]
  return gumbel_from_bits(cell_bits(seed, b, h, i, j))


def cell_bits_numpy(seed: int, b, h, i, j) -> np.ndarray:
  """numpy twin of `cell_bits` (independent of XLA), for tests and host-side tools."""
  with np.errstate(over="ignore"):
    as_u32 = lambda v: np.asarray(v, dtype=np.uint32)
    x = mix32(as_u32(seed) + _GOLDEN)
    for coordinate in (b, h, i, j):
      x = mix32(x ^ as_u32(coordinate))
  return x
