"""DropMAE's pure training step: `train_step(state, batch, rng) -> (state, metrics)`.

Everything the step needs lives in `TrainState` (a pytree), so the step can be jitted, donated,
sharded and checkpointed as one value.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from dropmae_jax.models import mae
from dropmae_jax.train.state import TrainState, micro_batches, step_rng  # noqa: F401  (step_lib.step_rng)


def create_state(model: mae.DropMAE, tx: optax.GradientTransformation, seed: int,
                 sample_frames: jax.Array) -> TrainState:
  """Initialise parameters and optimizer state. sample_frames: (B, 2, H, W, 3) for shapes only."""
  base = jax.random.key(seed)
  init_rng, run_rng = jax.random.split(base)
  params_rng, masking_rng, asad_rng = jax.random.split(init_rng, 3)
  variables = model.init({"params": params_rng, "masking": masking_rng, "asad": asad_rng},
                         sample_frames)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(run_rng))


def make_train_step(model: mae.DropMAE, tx: optax.GradientTransformation,
                    lr_schedule: optax.Schedule, *, accum_steps: int = 1,
                    norm_pix_loss: bool = True) -> Callable:
  """Build the pure step for this model/optimizer (jit it with the run's shardings)."""
  patch = model.patch_size

  def loss_fn(params, frames_uint8, rng):
    masking_rng, asad_rng = jax.random.split(rng)
    frames = mae.normalize_frames(frames_uint8)
    out = model.apply({"params": params}, frames,
                      rngs={"masking": masking_rng, "asad": asad_rng})
    return mae.reconstruction_loss(frames, out, patch, norm_pix_loss)

  grad_fn = jax.value_and_grad(loss_fn)

  def train_step(state: TrainState, batch: dict, rng: jax.Array):
    """batch['frames']: (B, 2, H, W, 3) uint8 (optional 'skipped', 'repeated': (B,) int32).

    Returns the new state and scalar metrics.
    """
    frames = batch["frames"]
    if accum_steps == 1:
      loss, grads = grad_fn(state.params, frames, rng)
    else:
      def accumulate(carry, xs):
        loss_sum, grad_sum = carry
        micro, k = xs
        loss, grads = grad_fn(state.params, micro, jax.random.fold_in(rng, k))
        return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (loss, grads), _ = jax.lax.scan(
          accumulate, (jnp.zeros((), jnp.float32), zeros),
          (micro_batches(frames, accum_steps), jnp.arange(accum_steps)))
      loss, grads = loss / accum_steps, jax.tree.map(lambda g: g / accum_steps, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "lr": lr_schedule(state.step),
    }
    # Input-side counts summed over the global batch, so every host's skips are counted.
    for key in ("skipped", "repeated"):
      if key in batch:
        metrics[key] = jnp.sum(batch[key])
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return train_step


def make_reconstruct(model: mae.DropMAE) -> Callable:
  """`reconstruct(params, frames_uint8, rng) -> (frames_normalised, MaeOutput)` for figures."""

  def reconstruct(params, frames_uint8, rng):
    masking_rng, asad_rng = jax.random.split(rng)
    frames = mae.normalize_frames(frames_uint8)
    out = model.apply({"params": params}, frames, rngs={"masking": masking_rng, "asad": asad_rng})
    return frames, out

  return reconstruct
