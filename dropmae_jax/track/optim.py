"""DropTrack fine-tuning optimiser and schedules, as the released OSTrack code
(`lib/train/base_functions.py`, `lib/train/trainers/ltr_trainer.py`, `lib/utils/ce_utils.py`).

  * `get_optimizer_scheduler`: torch.optim.AdamW (β 0.9/0.999, eps 1e-8, decoupled weight decay
    1e-4 on every parameter) with two groups — parameters whose name contains "backbone" at
    lr · BACKBONE_MULTIPLIER (0.1), the rest (the box head) at lr; `StepLR(LR_DROP_EPOCH)` with
    the default gamma 0.1, stepped once after every epoch.
  * `LTRTrainer`: `clip_grad_norm_(net.parameters(), GRAD_CLIP_NORM=0.1)` before every step.
  * The lr scales with the global batch: lr · batch_size / 128 (128 = 32 per GPU x 4, the
    author-endorsed rule, OSTrack issue #15).
  * `adjust_keep_rate` (lib/utils/ce_utils.py) with ITERS_PER_EPOCH = 1: the CE keep ratio per
    1-based epoch.

Parameters the released forward never uses (`backbone.cls_token`, the legacy `backbone.pos_embed`)
have `grad is None` in PyTorch, so AdamW skips them entirely (no decay either) and they stay out of
the clipping norm. Here they get zero gradients: they add nothing to the norm, Adam's step is 0,
and `UNUSED_PARAMS` masks them out of the weight decay, so they stay bit-identical, as released.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

ADAMW_B1 = 0.9             # torch.optim.AdamW defaults (the released call passes no betas / eps)
ADAMW_B2 = 0.999
ADAMW_EPS = 1e-8
REFERENCE_BATCH = 128      # TRAIN.BATCH_SIZE 32 x 4 GPUs: the batch the released lr is for
CLIP_EPS = 1e-6            # torch clip_grad_norm_: coef = max_norm / (total_norm + 1e-6)
BACKBONE = "backbone"      # the released group rule: '"backbone" in name'
# Released params without a gradient (unused by the forward): skipped by torch's AdamW.
UNUSED_PARAMS = (("backbone", "cls_token"), ("backbone", "pos_embed"))


def _key_name(entry: Any) -> str:
  """The name of one pytree path entry (dict key, attribute or index)."""
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _names(path) -> tuple[str, ...]:
  return tuple(_key_name(p) for p in path)


def in_backbone(path) -> bool:
  """The released group rule on a pytree path: '"backbone" in name' of the dotted name."""
  return BACKBONE in ".".join(_names(path))


def _unused(path) -> bool:
  names = _names(path)
  return any(names[-len(u):] == u for u in UNUSED_PARAMS if len(names) >= len(u))


def weight_decay_mask(params: Any) -> Any:
  """True for every parameter except `UNUSED_PARAMS` (no gradient, hence no decay, in PyTorch)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: not _unused(path), params)


def learning_rate(config: ml_collections.ConfigDict) -> float:
  """The head's initial lr: config.lr (given for batch 128) · batch_size / 128."""
  return float(config.lr) * int(config.batch_size) / REFERENCE_BATCH


def make_lr_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """StepLR stepped per epoch: schedule(step) = lr · gamma^((step // steps_per_epoch) // drop).

  With 1-based epochs e, epoch e trains at lr · gamma^floor((e − 1) / drop): epochs 1..80 at lr,
  81..100 at lr/10 for the GOT-10k recipe (the scheduler steps after each epoch). `step` counts
  optimizer updates from 0 (optax's count), so `steps_per_epoch` is updates per epoch.
  `config.lr_drop_epoch` <= 0 disables the drop. Returns the head's lr; the backbone trains at
  `config.backbone_multiplier` times it.
  """
  if steps_per_epoch <= 0:
    raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
  base = learning_rate(config)
  drop = int(config.lr_drop_epoch)
  gamma = float(config.lr_drop_factor)

  def schedule(step):
    if drop <= 0:
      return jnp.full((), base, jnp.float32)
    epoch = jnp.asarray(step, jnp.int32) // steps_per_epoch
    drops = (epoch // drop).astype(jnp.float32)
    return jnp.asarray(base, jnp.float32) * jnp.asarray(gamma, jnp.float32) ** drops

  return schedule


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
  """torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1.

  optax.clip_by_global_norm uses max_norm / norm (no epsilon); this keeps torch's factor.
  """
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    # sqrt of the sum of squares over all leaves (torch: the norm of the per-tensor norms).
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
                        for g in jax.tree.leaves(updates)))
    coef = jnp.minimum(max_norm / (norm + CLIP_EPS), 1.0)
    return jax.tree.map(lambda g: (g * coef).astype(g.dtype), updates), state

  return optax.GradientTransformation(init_fn, update_fn)


def scale_backbone(multiplier: float) -> optax.GradientTransformation:
  """Multiplies the updates of parameters in the 'backbone' group by `multiplier` (lr · 0.1 there).

  Placed after the lr scaling, so the backbone's step and decay both use lr · multiplier, as a
  torch param group with its own lr.
  """
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, u: u * multiplier if in_backbone(path) else u, updates)
    return scaled, state

  return optax.GradientTransformation(init_fn, update_fn)


def make_tracking_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int
                            ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """-> (tx, schedule): [torch clip] -> Adam -> decoupled decay -> −lr(step) -> backbone ×0.1.

  Update of a parameter p with gradient g (after clipping) at step t, group lr η_g:
    p ← p − η_g · (m̂ / (sqrt(v̂) + eps) + wd · p), i.e. torch.optim.AdamW (whose p·(1 − η_g·wd)
  then Adam step is the same sum). `tx` takes the params tree ({'backbone': ..., 'box_head': ...},
  or the same nested under 'params'); `tx.update(grads, state, params)` needs `params` (the
  decay); its state holds only arrays. `schedule(step)` is the head's lr (for logging); the
  backbone's is `config.backbone_multiplier` times it. Under gradient accumulation
  (optax.MultiSteps) the inner count is in updates, so pass updates per epoch as `steps_per_epoch`.
  """
  schedule = make_lr_schedule(config, steps_per_epoch)
  parts = []
  if float(config.grad_clip_norm) > 0:
    parts.append(clip_by_global_norm_torch(float(config.grad_clip_norm)))
  parts += [optax.scale_by_adam(b1=ADAMW_B1, b2=ADAMW_B2, eps=ADAMW_EPS),
            optax.add_decayed_weights(float(config.weight_decay), mask=weight_decay_mask),
            optax.scale_by_learning_rate(schedule),
            scale_backbone(float(config.backbone_multiplier))]
  return optax.chain(*parts), schedule


def ce_keep_ratio(epoch: int, config: ml_collections.ConfigDict) -> float:
  """The released `adjust_keep_rate(epoch, warmup_epochs=s, total_epochs=s + w, ITERS_PER_EPOCH=1,
  base_keep_rate=CE_KEEP_RATIO[0])` for the 1-based `epoch`.

  1.0 for epoch < s (CE off), `config.model.ce_keep_ratio` from epoch s + w on, in between
  base + (1 − base) · (cos(π (epoch − s) / w) + 1) / 2 (so epoch s itself gives 1.0: CE starts at
  s + 1). s = config.ce_start_epoch, w = config.ce_warm_epoch. Python float maths in the released
  order, so the `ceil(keep · L)` token counts match.
  """
  base = float(config.model.ce_keep_ratio)
  warmup_epochs = int(config.ce_start_epoch)
  total_epochs = warmup_epochs + int(config.ce_warm_epoch)
  if epoch < warmup_epochs:
    return 1.0
  if epoch >= total_epochs:
    return base
  iters = epoch * 1 - 1 * warmup_epochs
  total_iters = 1 * (total_epochs - warmup_epochs)
  return base + (1 - base) * (math.cos(iters / total_iters * math.pi) + 1) * 0.5
