"""Where things sit in the ASAD kernels' padded layout, shared by every kernel.

Layout: (B, H, 2·n_pad, ·) — each frame's n tokens padded to n_pad rows
(`asad_plan.Plan.padded`), so that frame boundaries fall on block boundaries. Grids and loops visit only the row blocks that
hold real tokens; these helpers map a program or loop index to its block and a cell to the flat
index i·L + j of the unpadded (L, L) attention map.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from dropmae_jax.ops.asad.plan import Plan


def flat_index(frame, local_rows, local_cols, plan: Plan):
  """Index i·L + j of a same-frame cell in the unpadded (L, L) map (lax.top_k's tie order)."""
  offset = frame * plan.frame_len
  return (offset + local_rows) * plan.length + offset + local_cols


def static_divmod(x, divisor: int):
  """Quotient and remainder of a non-negative traced int32 by a static divisor, with plain lax ops
  (jnp's floor-division wrappers do not lower inside Triton loops on jax 0.10)."""
  divisor = jnp.int32(divisor)
  return lax.div(x, divisor), lax.rem(x, divisor)


def real_row_blocks(plan: Plan, rows: int) -> int:
  """Row blocks per frame that hold real tokens. Grids and loops visit only these: blocks wholly
  in a frame's padding are never computed, read or written (n = 196 pads to 256: 13 blocks of
  16 rows a frame, not 16)."""
  return -(-plan.frame_len // rows)


def padded_block(index, plan: Plan, rows: int):
  """Index over the real row blocks of both frames -> (frame, block index in the padded layout)."""
  frame, block_in_frame = static_divmod(index, real_row_blocks(plan, rows))
  return frame, frame * (plan.padded // rows) + block_in_frame


def row_block_position(plan: Plan, rows: int):
  """(frame, first local row) of the program's row block (grid axis 2, real blocks only)."""
  frame, block = static_divmod(pl.program_id(2), real_row_blocks(plan, rows))
  return frame, block * rows


def row_grid(plan: Plan, rows: int):
  return (plan.batch, plan.heads, 2 * real_row_blocks(plan, rows))


def row_block_index(rows: int, plan: Plan):
  """Index map of a program's own row block."""
  return lambda b, h, r: (b, h, padded_block(r, plan, rows)[1], 0)


def slab_block(block, plan: Plan, rows: int):
  """Loop index over the real row blocks of both frames -> (frame, first local row, slab row)."""
  frame, block_in_frame = static_divmod(block, real_row_blocks(plan, rows))
  local0 = block_in_frame * rows
  return frame, local0, pl.multiple_of(frame * plan.padded + local0, rows)
