"""AdamW with the released decay mask and the MAE per-step learning-rate schedule."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate(config: ml_collections.ConfigDict) -> float:
  """Absolute peak lr: `config.lr` if set, else blr · batch_size / 256 (the MAE scaling rule)."""
  if config.lr > 0:
    return float(config.lr)
  return float(config.blr) * config.batch_size / 256


def make_lr_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """The released `adjust_learning_rate`, evaluated at the fractional epoch of each step.

  Linear warm-up over `warmup_epochs`, then a half-cycle cosine from lr to `min_lr` at `epochs`.
  """
  peak, floor = learning_rate(config), float(config.min_lr)
  warmup, total = float(config.warmup_epochs), float(config.epochs)
  if total <= warmup:
    raise ValueError(f"config.epochs ({total}) must exceed config.warmup_epochs ({warmup})")

  def schedule(step):
    epoch = jnp.asarray(step, jnp.float32) / steps_per_epoch
    warm = peak * epoch / max(warmup, 1e-12)
    progress = (epoch - warmup) / (total - warmup)
    cosine = floor + (peak - floor) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    return jnp.where(epoch < warmup, warm, cosine)

  return schedule


def weight_decay_mask(params):
  """True where AdamW decays: the released rule skips 1-D parameters and biases.

  So LayerNorm scales/biases and all biases are not decayed; kernels, the (1, 1, D) mask token
  and frame embeddings are.
  """
  def decayed(path, leaf):
    name = getattr(path[-1], "key", str(path[-1]))
    return leaf.ndim > 1 and name != "bias"

  return jax.tree_util.tree_map_with_path(decayed, params)


def make_optimizer(config: ml_collections.ConfigDict,
                   steps_per_epoch: int) -> optax.GradientTransformation:
  """[clip_by_global_norm] -> AdamW(β1, β2, eps 1e-8, decoupled weight decay on the mask)."""
  adamw = optax.adamw(make_lr_schedule(config, steps_per_epoch), b1=config.b1, b2=config.b2,
                      eps=1e-8, weight_decay=config.weight_decay, mask=weight_decay_mask)
  if config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adamw)
  return adamw
