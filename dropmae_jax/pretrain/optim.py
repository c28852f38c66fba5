"""AdamW with the released decay mask and the MAE per-step learning-rate schedule."""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate(config: ml_collections.ConfigDict) -> float:
  """Absolute peak lr: `config.lr` if set (> 0), else blr · batch_size / 256 (MAE scaling rule).

  `batch_size` is the global batch per optimizer step (all micro-steps of all hosts), as in the
  released code's `eff_batch_size`.
  """
  if config.lr > 0:
    return float(config.lr)
  return float(config.blr) * config.batch_size / 256


def make_lr_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """The released `adjust_learning_rate`, evaluated at the fractional epoch of each step.

  epoch = step / steps_per_epoch; lr · epoch / warmup_epochs while epoch < warmup_epochs, then a
  half-cycle cosine from lr down to `min_lr` at epoch `epochs`. Step 0 (the first update) gets
  lr 0, as in the released loop, which sets the lr before each update.

  Returns:
    schedule(step) -> () float32; `step` may be a Python int or a traced int array.
  """
  if steps_per_epoch <= 0:
    raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
  peak, floor = learning_rate(config), float(config.min_lr)
  warmup, total = float(config.warmup_epochs), float(config.epochs)
  if warmup < 0 or total <= warmup:
    raise ValueError(f"need 0 <= config.warmup_epochs ({warmup}) < config.epochs ({total})")

  def schedule(step):
    epoch = jnp.asarray(step, jnp.float32) / steps_per_epoch
    # Both branches are evaluated by jnp.where; the max() keeps warmup = 0 from dividing by 0.
    warm = peak * epoch / max(warmup, 1e-12)
    # Clamped at the end so a run longer than `epochs` (config.total_steps) stays at min_lr
    # instead of climbing back up the cosine; identical to the released formula before that.
    progress = jnp.minimum((epoch - warmup) / (total - warmup), 1.0)
    cosine = floor + (peak - floor) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    return jnp.where(epoch < warmup, warm, cosine)

  return schedule


def _key_name(entry: Any) -> str:
  """The name of one pytree path entry (dict key, attribute or index)."""
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def weight_decay_mask(params: Any) -> Any:
  """True where AdamW decays, following the released rule (timm `add_weight_decay`).

  timm skips a parameter when `len(shape) == 1` or its name ends in `.bias`; everything else is
  decayed: Dense/Conv kernels (2-D/4-D), the (1, 1, D) mask token and frame embeddings. So
  LayerNorm scales/biases and all biases are not decayed.

  Args:
    params: parameter pytree (arrays or jax.ShapeDtypeStruct).
  Returns:
    A pytree of Python bools with the same structure.
  """
  def decayed(path, leaf) -> bool:
    name = _key_name(path[-1]) if path else ""
    return len(leaf.shape) != 1 and name != "bias"

  return jax.tree_util.tree_map_with_path(decayed, params)


def make_optimizer(config: ml_collections.ConfigDict,
                   steps_per_epoch: int) -> optax.GradientTransformation:
  """[clip_by_global_norm] -> AdamW(b1, b2, eps 1e-8, decoupled weight decay on the mask).

  Without `inject_hyperparams` the optimizer state holds only arrays (no schedule values), so it
  checkpoints as a plain pytree; report the lr by calling `make_lr_schedule(...)(step)`.
  optax counts updates from 0, so update k uses schedule(k), matching the train state's step.
  """
  adamw = optax.adamw(make_lr_schedule(config, steps_per_epoch), b1=float(config.b1),
                      b2=float(config.b2), eps=1e-8, weight_decay=float(config.weight_decay),
                      mask=weight_decay_mask)
  if config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(float(config.grad_clip_norm)), adamw)
  return adamw
