"""DropSeg fine-tuning: the loss and optimiser against the released torch code, the step, and a
tiny run through the one trainer.

References: jimmy-dq/DropSeg `model/losses.py` (`BootstrappedCE`, `LossComputer`'s per-sample 2- or
3-class call) and `model/model.py` (torch.optim.Adam(weight_decay) + MultiStepLR stepped after
each update) written out in torch here, and an uninterrupted run for resume.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dropmae_jax.config import defaults as configlib
from dropmae_jax.vos import losses
from dropmae_jax.vos import optim
from dropmae_jax.vos import step as step_lib
from dropmae_jax.vos.dropseg import model as model_lib


class ReleasedBootstrappedCE(torch.nn.Module):
  """jimmy-dq/DropSeg `model/losses.py` BootstrappedCE, written out."""

  def __init__(self, start_warm, end_warm, top_p):
    super().__init__()
    self.start_warm, self.end_warm, self.top_p = start_warm, end_warm, top_p

  def forward(self, input, target, it):
    if it < self.start_warm:
      return F.cross_entropy(input, target), 1.0
    raw_loss = F.cross_entropy(input, target, reduction="none").view(-1)
    num_pixels = raw_loss.numel()
    if it > self.end_warm:
      this_p = self.top_p
    else:
      this_p = self.top_p + (1 - self.top_p) * ((self.end_warm - it)
                                                / (self.end_warm - self.start_warm))
    loss, _ = torch.topk(raw_loss, int(num_pixels * this_p), sorted=False)
    return loss.mean(), this_p


def released_loss(object_logits, selector, labels, it, start, end, top_p):
  """`do_pass` from the per-object logits: sigmoid, × selector, `aggregate`, then
  `LossComputer.compute`'s per-sample call (2 channels without a second object), / B."""
  prob = torch.sigmoid(object_logits) * selector[:, :, None, None]
  new_prob = torch.cat([torch.prod(1 - prob, dim=1, keepdim=True), prob], 1).clamp(1e-7, 1 - 1e-7)
  logits = torch.log(new_prob / (1 - new_prob))
  bce = ReleasedBootstrappedCE(start, end, top_p)
  b = logits.shape[0]
  total, ps = 0.0, 0.0
  for j in range(b):
    if selector[j][1] > 0.5:
      loss, p = bce(logits[j:j + 1], labels[j:j + 1], it)
    else:
      loss, p = bce(logits[j:j + 1, :2], labels[j:j + 1], it)
    total, ps = total + loss / b, ps + p / b
  return total, ps


@pytest.mark.parametrize("it", [0, 19, 20, 37, 70, 71, 500])
def test_bootstrapped_ce_matches_released(it):
  """Before, during and after the warm-up (start 20, end 70, top 15%), 2- and 3-class samples."""
  rng = np.random.default_rng(it)
  b, h, w = 3, 12, 10
  logits = rng.normal(0, 3, (b, 2, h, w)).astype(np.float32)
  selector = np.array([[1, 1], [1, 0], [1, 1]], np.float32)
  labels = rng.integers(0, 3, (b, h, w)).astype(np.int32)
  labels[1][labels[1] == 2] = 1   # no second object in sample 1
  bce = losses.BootstrappedCE(20, 70, 0.15)
  ours, metrics = jax.jit(losses.segmentation_loss, static_argnums=4)(
      jnp.asarray(logits), jnp.asarray(selector), jnp.asarray(labels), jnp.int32(it), bce)
  ref, p = released_loss(torch.from_numpy(logits), torch.from_numpy(selector),
                         torch.from_numpy(labels).long(), it, 20, 70, 0.15)
  np.testing.assert_allclose(float(ours), float(ref), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(float(metrics["top_p"]), p, rtol=1e-6)


def test_keep_counts_are_the_released_python_arithmetic():
  table = losses.keep_counts(147456, 20000, 70000, 0.15)
  for it in (20000, 20001, 33333, 45678, 69999, 70000):
    p = 0.15 + (1 - 0.15) * ((70000 - it) / (70000 - 20000))
    assert table[it - 20000] == int(147456 * p)
  bce = losses.BootstrappedCE(20000, 70000, 0.15)
  assert int(bce.count(jnp.int32(70001), 147456)) == int(147456 * 0.15)
  assert int(bce.count(jnp.int32(45678), 147456)) == table[45678 - 20000]


def _small_tree(rng):
  return {"a": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)},
          "b": rng.normal(size=(5,)).astype(np.float32)}


def test_adam_multisteplr_matches_torch():
  """7 updates, milestone 3 (gamma 0.1), wd 0.1 (L2, large enough to matter): params within 1e-6;
  a frozen entry kept beside them (not in the optimiser) stays bit-identical."""
  c = configlib.dropseg_defaults()
  c.lr, c.weight_decay, c.lr_steps, c.lr_gamma = 1e-2, 0.1, (3,), 0.1
  tx, schedule = optim.make_segmentation_optimizer(c)
  rng = np.random.default_rng(0)
  params = _small_tree(rng)
  frozen = {"pos": rng.normal(size=(2, 2)).astype(np.float32)}
  frozen_before = jax.tree.map(np.copy, frozen)
  grads = [_small_tree(rng) for _ in range(7)]
  torch_params = [torch.nn.Parameter(torch.from_numpy(params["a"]["kernel"].copy())),
                  torch.nn.Parameter(torch.from_numpy(params["b"].copy()))]
  opt = torch.optim.Adam(torch_params, lr=1e-2, weight_decay=0.1)
  sched = torch.optim.lr_scheduler.MultiStepLR(opt, [3], 0.1)
  state = tx.init(params)
  p = jax.tree.map(jnp.asarray, params)
  lrs = []
  for i, g in enumerate(grads):
    lrs.append(float(schedule(i)))
    assert lrs[-1] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-7)
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, p)
    p = jax.tree.map(lambda x, u: x + u, p, updates)
    torch_params[0].grad = torch.from_numpy(g["a"]["kernel"])
    torch_params[1].grad = torch.from_numpy(g["b"])
    opt.step()
    sched.step()
  assert lrs == pytest.approx([1e-2] * 3 + [1e-3] * 4)
  np.testing.assert_allclose(p["a"]["kernel"], torch_params[0].detach().numpy(), atol=1e-6)
  np.testing.assert_allclose(p["b"], torch_params[1].detach().numpy(), atol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, frozen, frozen_before)


# ---------------------------------------------------------------------------------- the step


def tiny_model_config():
  """configs/dropseg_demo.py's micro model at 32 px (2x2 tokens per frame), depth 2."""
  from configs import dropseg_demo
  c = dropseg_demo.get_config()
  c.model.depth = 2
  c.model.img_size = 32
  c.model.pretrain_img_size = 32
  return c


def random_batch(rng, b: int, s: int, second=(True, False)) -> dict:
  labels = np.zeros((b, s, s), np.int32)
  masks = np.zeros((b, 2, s, s), np.float32)
  selector = np.ones((b, 2), np.float32)
  for i in range(b):
    y, x = rng.integers(0, s // 2, 2)
    labels[i, y:y + s // 2, x:x + s // 3] = 1
    masks[i, 0, y:y + s // 2, x:x + s // 3] = 1
    if second[i % len(second)]:
      labels[i, :4, :4] = 2
      masks[i, 1, :4, :4] = 1
    else:
      selector[i, 1] = 0
  return {"memory_frame": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
          "query_frame": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
          "memory_masks": masks, "query_labels": labels, "selector": selector,
          "skip_count": np.array([1] + [0] * (b - 1), np.int32)}


@pytest.fixture(scope="module")
def tiny_step():
  c = tiny_model_config()
  c.lr = 1e-3
  c.model.drop_path_rate = 0.5
  model = model_lib.DropSeg.from_config(c)
  tx, schedule = optim.make_segmentation_optimizer(c)
  bce = losses.BootstrappedCE(1, 3, 0.5)
  state = step_lib.create_seg_state(model, tx, 0)
  fn = jax.jit(lambda s, b: step_lib.make_seg_train_step(model, tx, schedule, bce)(
      s, b, step_lib.step_rng(s)))
  return c, model, state, fn, bce


def test_step_trains_params_and_keeps_frozen(tiny_step):
  c, model, state, fn, _ = tiny_step
  batch = random_batch(np.random.default_rng(0), 4, 32)
  frozen_before = jax.tree.map(np.asarray, state.frozen)
  params_before = jax.tree.map(np.asarray, state.params)
  s = state
  for _ in range(3):   # it 0 (plain CE), 1 and 2 (bootstrapped)
    s, metrics = fn(s, batch)
    assert np.isfinite(float(metrics["loss"])) and 0 < float(metrics["iou"]) <= 1
    assert int(metrics["skipped"]) == 1
  assert int(s.step) == 3
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, s.frozen), frozen_before)
  changed = jax.tree.map(lambda a, b: not np.array_equal(np.asarray(a), b), s.params,
                         params_before)
  assert all(jax.tree.leaves(changed))
  assert float(metrics["top_p"]) == pytest.approx(0.75)


def test_drop_path_only_in_training(tiny_step):
  """train=True draws drop-path from the rng (two keys differ); train=False is deterministic and
  equals train=True with drop_path_rate 0."""
  c, model, state, _, _ = tiny_step
  batch = random_batch(np.random.default_rng(1), 2, 32)

  def logits(m, train, key):
    return np.asarray(step_lib.object_logits(m, state.params, state.frozen, batch, train=train,
                                             rng=jax.random.key(key)))

  a, b = logits(model, True, 0), logits(model, True, 1)
  assert np.abs(a - b).max() > 1e-4
  c0 = tiny_model_config()
  c0.model.drop_path_rate = 0.0
  no_drop = model_lib.DropSeg.from_config(c0)
  np.testing.assert_allclose(logits(no_drop, True, 0), logits(model, False, 0), atol=1e-5)


def test_accumulated_step_equals_full_batch(tiny_step):
  """accum_steps = 2 gives the full batch's gradient (plain CE regime, no drop-path)."""
  c = tiny_model_config()
  c.model.drop_path_rate = 0.0
  model = model_lib.DropSeg.from_config(c)
  tx, schedule = optim.make_segmentation_optimizer(c)
  bce = losses.BootstrappedCE(100, 200, 0.5)
  state = step_lib.create_seg_state(model, tx, 0)
  batch = random_batch(np.random.default_rng(2), 4, 32)
  one = step_lib.make_seg_train_step(model, tx, schedule, bce)
  two = step_lib.make_seg_train_step(model, tx, schedule, bce, accum_steps=2)
  key = jax.random.key(0)
  _, m1 = jax.jit(one)(state, batch, key)
  _, m2 = jax.jit(two)(state, batch, key)
  np.testing.assert_allclose(float(m2["loss"]), float(m1["loss"]), rtol=1e-5)
  np.testing.assert_allclose(float(m2["grad_norm"]), float(m1["grad_norm"]), rtol=1e-4)
