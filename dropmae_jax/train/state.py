"""The train state every task's step carries: parameters, optimiser state, step count, run key.

Everything a step needs lives in the state (a pytree), so a step can be jitted, donated, sharded and
checkpointed as one value; tasks extend it with what else they carry (the tracker's BatchNorm
statistics).
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array          # () int32, optimizer steps taken
  params: Any              # float32 parameter pytree
  opt_state: Any           # optax state
  rng: jax.Array           # (2,) uint32 raw key data of the run's base key (per-step keys fold in `step`)


def step_rng(state: TrainState) -> jax.Array:
  """The step's key: a pure function of the run key and the step (so resume replays it)."""
  return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def micro_batches(frames: jax.Array, accum_steps: int) -> jax.Array:
  """(B, ...) -> (accum, B / accum, ...); sample b goes to micro-batch b % accum.

  Interleaving keeps the batch axis (the sharded one) intact within each micro-batch.
  """
  b = frames.shape[0]
  x = frames.reshape(b // accum_steps, accum_steps, *frames.shape[1:])
  return jnp.swapaxes(x, 0, 1)
