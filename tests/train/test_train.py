"""End-to-end training: sharded == single device, kill-and-resume == uninterrupted, NaN stops."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dropmae_jax.config import defaults as configlib
from dropmae_jax.models import mae
from dropmae_jax.train import loop
from dropmae_jax.pretrain import optim
from dropmae_jax.train import sharding
from dropmae_jax.pretrain import step as step_lib
from dropmae_jax.pretrain import task as pretrain_task


def tiny_config(root: str = ""):
  c = configlib.pretrain_defaults()
  c.model.variant = "micro/16"
  c.model.img_size = 64
  c.model.decoder_embed_dim = 32
  c.model.decoder_depth = 2
  c.model.decoder_num_heads = 4
  c.model.dtype = "float32"
  c.asad.drop_ratio = 0.2
  c.data.root = root
  c.data.num_workers = 0
  c.batch_size = 8
  c.steps_per_epoch = 4
  c.epochs = 2
  c.warmup_epochs = 1
  c.blr = 1e-3 * 256 / 8
  c.log_every = 1
  c.ckpt_every = 3
  c.figure_every = 0
  return c


def run_steps(config, mesh, state, batches):
  model = mae.DropMAE.from_config(config)
  tx = optim.make_optimizer(config, config.steps_per_epoch)
  fn = step_lib.make_train_step(model, tx, optim.make_lr_schedule(config, config.steps_per_epoch),
                                accum_steps=config.accum_steps)
  shardings = sharding.state_shardings(jax.eval_shape(lambda: state), mesh)
  state = jax.device_put(state, shardings)
  step = jax.jit(lambda s, b: fn(s, b, step_lib.step_rng(s)),
                 out_shardings=(shardings, sharding.replicated(mesh)))
  losses = []
  for frames in batches:
    batch = {"frames": jax.device_put(frames, sharding.batch_sharding(mesh))}
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  return jax.device_get(state), losses


def initial_state(config):
  model = mae.DropMAE.from_config(config)
  tx = optim.make_optimizer(config, config.steps_per_epoch)
  size = config.model.img_size
  # Under jit: one program to compile (op by op, the first init compiles every op: ~20 s).
  return jax.device_get(jax.jit(lambda: step_lib.create_state(
      model, tx, config.seed, jnp.zeros((1, 2, size, size, 3))))())


def assert_params_close(got, want, config, num_steps: int):
  """Parameters after `num_steps` AdamW steps from the same start, computed in another order.

  Where a gradient is ~0, its sign depends on summation order and Adam turns either sign into a
  step of about lr, so a few such parameters may differ by up to 2·lr per step (the bound below).
  Everything else must agree tightly, and those sign flips must stay rare.
  """
  bound = 2 * num_steps * optim.learning_rate(config)
  loose = total = 0
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    a, b = np.asarray(a), np.asarray(b)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    np.testing.assert_allclose(a, b, rtol=0, atol=bound)
    loose += int((~np.isclose(a, b, rtol=1e-4, atol=1e-6)).sum())
    total += a.size
  assert loose <= max(3, total // 1000), f"{loose} of {total} parameters differ beyond 1e-6"


@pytest.mark.parametrize("data,fsdp,accum", [(8, 1, 1), (4, 2, 2)])
def test_sharded_run_matches_one_device(data, fsdp, accum, monkeypatch):
  monkeypatch.setattr(sharding, "MIN_FSDP_ELEMENTS", 1024)  # shard even this tiny model
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
  config = tiny_config()
  config.accum_steps = accum
  config.model.decoder_embed_dim = 64  # big enough that fsdp shards some arrays
  rng = np.random.default_rng(0)
  batches = [rng.integers(0, 256, (16, 2, 64, 64, 3), dtype=np.uint8) for _ in range(3)]
  state = initial_state(config)
  one = sharding.make_mesh(configlib.pretrain_defaults().mesh, devices=jax.devices()[:1])
  config.mesh.data, config.mesh.fsdp = data, fsdp
  many = sharding.make_mesh(config.mesh)
  s1, l1 = run_steps(config, one, state, batches)
  s8, l8 = run_steps(config, many, state, batches)
  assert np.isfinite(l1).all()
  np.testing.assert_allclose(l8, l1, rtol=2e-5)
  assert_params_close(s8.params, s1.params, config, len(batches))
  if fsdp > 1:
    specs = {str(s.spec) for s in jax.tree.leaves(sharding.state_shardings(
        jax.eval_shape(lambda: state), many))}
    assert any("fsdp" in s for s in specs)


def test_accumulation_matches_full_batch_gradient(monkeypatch):
  """accum_steps=2 over a batch equals one step on it when masking draws are shared."""
  from dropmae_jax.models import masking

  def same_plan_for_every_sample(rng, batch, tokens_per_frame, mask_ratio):
    # Every sample hides the same 75% of its tokens, whichever micro-batch it lands in. (With
    # mask_ratio 0 nothing is reconstructed: the loss is 0/0 and the test compared NaN to NaN.)
    del rng
    order = jnp.broadcast_to(jnp.arange(2 * tokens_per_frame)[::-1], (batch, 2 * tokens_per_frame))
    return masking.plan_from_shuffle(order, int(2 * tokens_per_frame * (1 - mask_ratio)))

  monkeypatch.setattr(masking, "random_plan", same_plan_for_every_sample)
  config = tiny_config()
  config.asad.drop_ratio = 0.0
  rng = np.random.default_rng(1)
  batches = [rng.integers(0, 256, (8, 2, 64, 64, 3), dtype=np.uint8)]
  state = initial_state(config)
  mesh = sharding.make_mesh(configlib.pretrain_defaults().mesh, devices=jax.devices()[:1])
  s1, l1 = run_steps(config, mesh, state, batches)
  config.accum_steps = 2
  s2, l2 = run_steps(config, mesh, state, batches)
  assert np.isfinite(l1).all()
  np.testing.assert_allclose(l2, l1, rtol=1e-5)
  assert_params_close(s2.params, s1.params, config, len(batches))


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {row["step"]: row for row in map(json.loads, f)}


def test_kill_and_resume_reproduces_losses(video_tree, tmp_path):
  config = tiny_config(video_tree)
  config.ckpt_every = 4  # fewer saves (each takes seconds), still one before the kill
  straight = str(tmp_path / "straight")
  loop.train_and_evaluate(config, straight)
  resumed = str(tmp_path / "resumed")
  first = tiny_config(video_tree)
  first.ckpt_every = 4
  first.max_steps = 5  # "killed" after step 5 (a checkpoint at 4 and the stop save at 5)
  loop.train_and_evaluate(first, resumed)
  assert sorted(read_metrics(resumed)) == [1, 2, 3, 4, 5]
  loop.train_and_evaluate(config, resumed)
  a, b = read_metrics(straight), read_metrics(resumed)
  assert sorted(a) == sorted(b) == list(range(1, 9))
  for s in range(1, 9):
    np.testing.assert_allclose(b[s]["loss"], a[s]["loss"], rtol=1e-6, err_msg=f"step {s}")
    assert b[s]["skipped_videos"] == a[s]["skipped_videos"]
  assert os.listdir(os.path.join(straight, "tensorboard"))
  # The corrupt clip in the tree is skipped and counted, never a crash.
  assert a[8]["skipped_videos"] > 0
  assert {"loss", "lr", "grad_norm", "pairs_per_sec", "skipped_videos"} <= set(a[8])


class DivergesAtStep2(pretrain_task.PretrainTask):
  """Step 2 starts from parameters that have blown up (one tensor of NaNs): its loss is NaN.

  What a diverged run (e.g. lr 1e30) does to the state, after a healthy step 1. These are the
  resume test's compiled steps (an lr baked into the step would be another program to compile).
  """

  def compile_step(self, mesh, state_shardings, replicated):
    step = super().compile_step(mesh, state_shardings, replicated)

    def diverged_at_2(state, batch, step_no):
      if step_no == 2:
        leaves, tree = jax.tree.flatten(state.params)
        leaves[0] = jax.device_put(np.full(leaves[0].shape, np.nan, leaves[0].dtype),
                                   leaves[0].sharding)
        state = state.replace(params=jax.tree.unflatten(tree, leaves))
      return step(state, batch, step_no)
    return diverged_at_2


def test_nan_stops_before_saving(video_tree, tmp_path):
  config = tiny_config(video_tree)
  config.ckpt_every = 1
  workdir = str(tmp_path / "nan")
  with pytest.raises(loop.NonFiniteLossError, match="at step 2"):
    loop.train_and_evaluate(config, workdir, task=DivergesAtStep2(config, workdir))
  saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  rows = read_metrics(workdir)
  assert saved == [1], "the healthy first step should have been saved, and only it"
  # Only steps whose loss was checked finite were logged, and only those were saved.
  assert all(np.isfinite(r["loss"]) for r in rows.values())
  assert sorted(rows) == [1]


def test_missing_data_root_names_the_field(tmp_path):
  config = tiny_config(str(tmp_path / "nowhere"))
  with pytest.raises((FileNotFoundError, ValueError), match="data.root"):
    loop.train_and_evaluate(config, str(tmp_path / "w"))


def test_batch_not_divisible_names_the_field():
  config = tiny_config()
  config.batch_size = 12
  with pytest.raises(ValueError, match="batch_size"):
    loop.plan_run(config, 100)


@pytest.mark.parametrize("field", ["log_every", "keep_ckpts"])
@pytest.mark.parametrize("value", [0, -1])
def test_periods_that_cannot_mean_never_are_refused_at_start_up(field, value):
  config = tiny_config()
  config[field] = value
  with pytest.raises(ValueError, match=f"config.{field}={value} must be >= 1"):
    loop.plan_run(config, 100)


def test_zero_periods_mean_never(video_tree, tmp_path):
  # ckpt_every <= 0: no periodic checkpoint, only the save at the end of the run (here the
  # max_steps stop). figure_every = 0 (tiny_config) writes no figure.
  config = tiny_config(video_tree)
  config.ckpt_every = 0
  config.max_steps = 2
  workdir = str(tmp_path / "never")
  loop.train_and_evaluate(config, workdir)
  saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert saved == [2]
  assert sorted(read_metrics(workdir)) == [1, 2]
  assert not os.path.exists(os.path.join(workdir, "figures"))
  assert not loop.due(4, 0) and not loop.due(4, -3) and loop.due(4, 2) and not loop.due(3, 2)


def test_training_with_the_pallas_kernel_tracks_the_reference(video_tree, tmp_path):
  """The loop traces the step under its 8-device mesh, so the kernel runs per shard."""
  losses = {}
  for impl in ("reference", "pallas_gpu"):
    config = tiny_config(video_tree)
    config.model.decoder_num_heads = 2          # head dim 16: a size the kernels support
    config.model.decoder_depth = 1              # one ASAD layer: compiling the (interpreted)
                                                # kernel is most of this test's time
    config.asad.impl = impl
    config.max_steps = 3
    config.mesh.data, config.mesh.fsdp = 4, 2
    workdir = str(tmp_path / impl)
    loop.train_and_evaluate(config, workdir)
    losses[impl] = [read_metrics(workdir)[s]["loss"] for s in (1, 2, 3)]
  # Same seeds; the two implementations round the logits differently, so a drop cell at the
  # threshold may differ: equal up to such flips.
  np.testing.assert_allclose(losses["pallas_gpu"], losses["reference"], rtol=2e-3)
