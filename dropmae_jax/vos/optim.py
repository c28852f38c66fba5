"""DropSeg's optimiser and lr schedule: jimmy-dq/DropSeg `model/model.py` (`ViTSTCNModel`).

  self.optimizer = optim.Adam(filter(lambda p: p.requires_grad, ...), lr, weight_decay)
  self.scheduler = optim.lr_scheduler.MultiStepLR(self.optimizer, steps, gamma)
  ... optimizer.step(); scheduler.step()       # once per iteration

* torch.optim.Adam's weight decay is L2: wd · p is added to the gradient before the moments (not
  AdamW's decoupled decay). betas / eps are torch's defaults (config.adam_b1 / _b2 / _eps).
* Only 'params' are optimised; the 'frozen' collection (position tables requires_grad=False,
  and cls_token / pos_embed / head / fc_norm, which get no gradient so Adam skips them) is not
  in the optimiser at all.
* MultiStepLR stepped after every update: update i (0-based, optax's count) uses
  lr · gamma^(number of milestones <= i), e.g. milestones [125000]: updates 0..124999 at lr,
  then lr · gamma.
* No gradient clipping in the released code; config.grad_clip_norm > 0 adds a global-norm clip
  (torch's `clip_grad_norm_` factor) before the weight decay, as torch code would clip `.grad`.
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

CLIP_EPS = 1e-6            # torch clip_grad_norm_: coef = max_norm / (total_norm + 1e-6)


def make_lr_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """MultiStepLR per iteration: schedule(i) = lr · gamma^#{m in config.lr_steps : m <= i}."""
  base = float(config.lr)
  gamma = float(config.lr_gamma)
  milestones = np.sort(np.asarray([int(m) for m in config.lr_steps], np.int32))
  if base <= 0:
    raise ValueError(f"config.lr={base} must be positive")

  def schedule(step):
    if milestones.size == 0:
      return jnp.full((), base, jnp.float32)
    passed = jnp.sum(jnp.asarray(step, jnp.int32) >= jnp.asarray(milestones))
    return jnp.asarray(base, jnp.float32) * jnp.asarray(gamma, jnp.float32) ** passed

  return schedule


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
  """torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1."""
  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    norm = optax.tree.norm(updates)
    coef = jnp.minimum(max_norm / (norm + CLIP_EPS), 1.0)
    return optax.tree.scale(coef, updates), state

  return optax.GradientTransformation(init_fn, update_fn)


def make_segmentation_optimizer(config: ml_collections.ConfigDict
                                ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """-> (tx, schedule): [clip] -> + wd · p -> Adam moments -> −lr(i) (module docstring).

  `tx.update(grads, state, params)` needs `params` (the L2 term). Under gradient accumulation the
  step averages the micro-batch gradients first, so the count is in updates.
  """
  schedule = make_lr_schedule(config)
  parts = []
  if float(config.grad_clip_norm) > 0:
    parts.append(clip_by_global_norm_torch(float(config.grad_clip_norm)))
  if float(config.weight_decay) < 0:
    raise ValueError(f"config.weight_decay={config.weight_decay} must be >= 0")
  parts += [optax.add_decayed_weights(float(config.weight_decay)),
            optax.scale_by_adam(b1=float(config.adam_b1), b2=float(config.adam_b2),
                                eps=float(config.adam_eps)),
            optax.scale_by_learning_rate(schedule)]
  return optax.chain(*parts), schedule
