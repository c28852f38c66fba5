"""DropTrack's train step on 8 devices == on one device, and CE's masked warm-up step.

The tiny tracker of test_droptrack_train.py on random batches, stepped directly (no loop). The
references: a one-device run (for the 8-device mesh) and the step that removes the tokens (for
the masked warm-up step). Split from test_droptrack_train.py so that pytest-xdist's
--dist loadfile can run the two files on different workers (each compiles for minutes on CPU).
"""
from __future__ import annotations

import jax
import numpy as np
import pytest

from dropmae_jax.config import defaults as configlib
from dropmae_jax.track import ostrack
from dropmae_jax.train import loop
from dropmae_jax.train import sharding
from dropmae_jax.track import step as step_lib
from dropmae_jax.track import optim as tracking_optim
from dropmae_jax.track import task as droptrack

from test_droptrack_train import tiny_config


# ----------------------------------------------------------------------------- sharding


def random_batch(rng: np.random.Generator, b: int, config) -> dict[str, np.ndarray]:
  z, x = config.model.template_size, config.model.search_size
  xy = rng.uniform(0.2, 0.5, (b, 2))
  wh = rng.uniform(0.15, 0.4, (b, 2))
  return {"template": rng.integers(0, 256, (b, z, z, 3), dtype=np.uint8),
          "search": rng.integers(0, 256, (b, x, x, 3), dtype=np.uint8),
          "template_brightness": rng.uniform(0.8, 1.2, b).astype(np.float32),
          "search_brightness": rng.uniform(0.8, 1.2, b).astype(np.float32),
          "search_box": np.concatenate([xy, wh], 1).astype(np.float32),
          "skip_count": rng.integers(0, 2, b).astype(np.int32)}


def initial_state(config):
  """A fresh state (host arrays) from the trainer's own program: `task.create_state` jitted with
  the state's shardings on the default mesh. test_droptrack_train.py's runs compile that program,
  so this is a compilation-cache hit when that file ran first (the tracker's init is one of its
  slowest programs to compile)."""
  task = droptrack.DropTrackTask(config, "")
  task.build(loop.plan_run(config, config.data.samples_per_epoch))
  mesh = sharding.make_mesh(configlib.droptrack_defaults().mesh)
  shardings = sharding.state_shardings(jax.eval_shape(task.create_state), mesh)
  return jax.device_get(jax.jit(task.create_state, out_shardings=shardings)())


def run_track_steps(config, mesh, state, batches, keep_ratios):
  model = ostrack.OSTrackCE.from_config(config)
  tx, schedule = tracking_optim.make_tracking_optimizer(config, config.steps_per_epoch)
  shardings = sharding.state_shardings(jax.eval_shape(lambda: state), mesh)
  state = jax.device_put(state, shardings)
  losses, skipped = [], []
  for batch, ratio in zip(batches, keep_ratios):
    fn = step_lib.make_track_train_step(model, tx, schedule, config.loss, ratio,
                                        accum_steps=config.accum_steps)
    step = jax.jit(lambda s, b, fn=fn: fn(s, b, step_lib.step_rng(s)),
                   out_shardings=(shardings, sharding.replicated(mesh)))
    state, metrics = step(state, sharding.global_batch(batch, sharding.batch_sharding(mesh)))
    losses.append(float(metrics["loss"]))
    skipped.append(int(metrics["skipped"]))
  return jax.device_get(state), losses, skipped


@pytest.mark.parametrize("data,fsdp", [(4, 2)])
def test_sharded_run_matches_one_device(data, fsdp, monkeypatch):
  """8 fake CPU devices (data x fsdp) give the one-device losses, BN statistics and params.

  Drop-path is on (rate 0.1: its draws must not depend on the sharding) and the second step
  eliminates candidates (keep 0.7). Where a gradient is ~0 its sign depends on summation order
  and Adam turns either sign into a step of about lr, so parameters are bounded by 2·lr per step.
  """
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
  monkeypatch.setattr(sharding, "MIN_FSDP_ELEMENTS", 1024)  # shard even this tiny model
  config = tiny_config()
  config.model.drop_path_rate = 0.1
  rng = np.random.default_rng(0)
  batches = [random_batch(rng, 16, config) for _ in range(2)]
  state = initial_state(config)
  one = sharding.make_mesh(configlib.droptrack_defaults().mesh, devices=jax.devices()[:1])
  config.mesh.data, config.mesh.fsdp = data, fsdp
  many = sharding.make_mesh(config.mesh)
  s1, l1, k1 = run_track_steps(config, one, state, batches, [1.0, 0.7])
  s8, l8, k8 = run_track_steps(config, many, state, batches, [1.0, 0.7])
  np.testing.assert_allclose(l8, l1, rtol=2e-5)
  assert k8 == k1 == [int(b["skip_count"].sum()) for b in batches]
  bound = 2 * len(batches) * tracking_optim.learning_rate(config)
  loose = total = 0
  for a, b in zip(jax.tree.leaves(s8.params), jax.tree.leaves(s1.params)):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=0, atol=bound)
    loose += int((~np.isclose(a, b, rtol=1e-4, atol=1e-6)).sum())
    total += a.size
  assert loose <= max(3, total // 1000), f"{loose} of {total} parameters differ beyond 1e-6"
  # Running means / variances of sums over B x F x F: float32 summation order, ~1e-6 apart.
  for a, b in zip(jax.tree.leaves(s8.batch_stats), jax.tree.leaves(s1.batch_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
  # BatchNorm statistics moved (momentum 0.9 towards the batch's), and params were updated.
  fresh = jax.tree.leaves(state.batch_stats)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(s1.batch_stats), fresh))
  specs = {str(s.spec) for s in jax.tree.leaves(sharding.state_shardings(
      jax.eval_shape(lambda: state), many))}
  assert any("fsdp" in s for s in specs)


def test_masked_warmup_step_equals_removing_tokens():
  """The CE warm-up's masked step (counts traced) = the step that removes the tokens, and the
  task compiles three steps for a whole schedule: CE off, the warm-up, the final ratio."""
  config = tiny_config()
  config.model.drop_path_rate = 0.1
  batch = random_batch(np.random.default_rng(1), 8, config)
  model = ostrack.OSTrackCE.from_config(config)
  tx, schedule = tracking_optim.make_tracking_optimizer(config, config.steps_per_epoch)
  state = initial_state(config)
  ratio = 0.85
  counts = model.keep_counts(ratio)
  assert counts == [14]  # ceil(0.85 * 16): between CE off (16) and the final 0.7 (12)
  removed = step_lib.make_track_train_step(model, tx, schedule, config.loss, ratio)
  masked = step_lib.make_track_train_step(model, tx, schedule, config.loss, None)
  s_removed, m_removed = jax.jit(lambda s, b: removed(s, b, step_lib.step_rng(s)))(state, batch)
  s_masked, m_masked = jax.jit(lambda s, b: masked(s, b, step_lib.step_rng(s)))(
      state, {**batch, step_lib.CE_COUNTS: np.asarray(counts, np.int32),
              step_lib.CE_RATIO: np.float32(ratio)})
  for k in ("loss", "focal", "giou", "l1", "iou", "grad_norm", "keep_ratio"):
    np.testing.assert_allclose(float(m_masked[k]), float(m_removed[k]), rtol=1e-5, err_msg=k)
  bound = 2 * tracking_optim.learning_rate(config)  # a ~0 gradient's sign, times Adam's lr
  for a, b in zip(jax.tree.leaves(s_masked.params), jax.tree.leaves(s_removed.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=bound)
  for a, b in zip(jax.tree.leaves(s_masked.batch_stats), jax.tree.leaves(s_removed.batch_stats)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)

  # The plan over a schedule with a 4-epoch warm-up (CE from epoch 3): keep ratios 1, 1,
  # 0.956, 0.85, 0.744, then 0.7 -> ceil(r * 16) = 16, 16, 16, 14, 12, 12...
  config.ce_start_epoch, config.ce_warm_epoch = 2, 4
  task = droptrack.DropTrackTask(config, "")
  task.model = model
  keys = [task._ce_plan(tracking_optim.ce_keep_ratio(e, config))[0] for e in range(1, 9)]
  assert keys == [(16,), (16,), (16,), "masked", (12,), (12,), (12,), (12,)]
  config.ce_warmup_masked = False  # one compiled step per distinct count tuple
  keys = [task._ce_plan(tracking_optim.ce_keep_ratio(e, config))[0] for e in range(1, 9)]
  assert keys == [(16,), (16,), (16,), (14,), (12,), (12,), (12,), (12,)]
