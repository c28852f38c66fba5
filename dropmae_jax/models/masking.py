"""Which of the 2n joint tokens of a frame pair the encoder sees.

'random' is the released TwinMAE/DropMAE rule: per sample, argsort uniform noise over the whole
joint sequence [x; z] and keep the first int(2n (1 − ratio)), so one frame may keep more tokens than
the other. 'tube' is VideoMAE's: hide the same spatial positions in both frames.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class MaskPlan(NamedTuple):
  ids_keep: jax.Array     # (B, n_keep) int32 indices into [x; z] of the visible tokens
  ids_restore: jax.Array  # (B, 2n) int32: [visible; hidden] order -> [x; z] order
  mask: jax.Array         # (B, 2n) float32, 1 = hidden


def plan_from_shuffle(ids_shuffle: jax.Array, n_keep: int) -> MaskPlan:
  """ids_shuffle (B, L): a permutation whose first n_keep entries are the visible tokens."""
  ids_restore = jnp.argsort(ids_shuffle, axis=1).astype(jnp.int32)
  length = ids_shuffle.shape[1]
  hidden_in_shuffled_order = (jnp.arange(length) >= n_keep).astype(jnp.float32)
  mask = jnp.take_along_axis(jnp.broadcast_to(hidden_in_shuffled_order, ids_shuffle.shape),
                             ids_restore, axis=1)
  return MaskPlan(ids_shuffle[:, :n_keep].astype(jnp.int32), ids_restore, mask)


def random_plan(rng: jax.Array, batch: int, tokens_per_frame: int, mask_ratio: float) -> MaskPlan:
  """Released joint masking: uniform over all 2n tokens of the pair."""
  length = 2 * tokens_per_frame
  n_keep = int(length * (1 - mask_ratio))
  noise = jax.random.uniform(rng, (batch, length))
  return plan_from_shuffle(jnp.argsort(noise, axis=1), n_keep)


def tube_plan(rng: jax.Array, batch: int, tokens_per_frame: int, mask_ratio: float) -> MaskPlan:
  """VideoMAE tube masking: the same int(n (1 − ratio)) positions stay visible in both frames."""
  n = tokens_per_frame
  keep_per_frame = int(n * (1 - mask_ratio))
  order = jnp.argsort(jax.random.uniform(rng, (batch, n)), axis=1)
  keep, hide = order[:, :keep_per_frame], order[:, keep_per_frame:]
  ids_shuffle = jnp.concatenate([keep, keep + n, hide, hide + n], axis=1)
  return plan_from_shuffle(ids_shuffle, 2 * keep_per_frame)


def make_plan(rng: jax.Array, batch: int, tokens_per_frame: int, mask_ratio: float,
              strategy: str) -> MaskPlan:
  if strategy == "random":
    return random_plan(rng, batch, tokens_per_frame, mask_ratio)
  if strategy == "tube":
    return tube_plan(rng, batch, tokens_per_frame, mask_ratio)
  raise ValueError(f"config.model.masking must be 'random' or 'tube', got {strategy!r}")


def keep_all(batch: int, length: int) -> MaskPlan:
  """No masking: every token visible, in order (for feature extraction)."""
  ids = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
  return MaskPlan(ids, ids, jnp.zeros((batch, length), jnp.float32))
