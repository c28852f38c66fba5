"""DropTrack fine-tuning through the one trainer: resume, sharding, NaN stop, init from pre-training.

A tiny tracker (micro/16, depth 2, template 32 / search 64 px, one CE layer) on a small synthetic
GOT-10k-layout set made once per session. The references are independent of the code under test:
an uninterrupted run (for resume), a one-device run (for the 8-device mesh), MAE's sin-cos table
written out in numpy and torch's bicubic interpolation (for the position tables after
init_from), and the pre-training parameters themselves.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dropmae_jax import configlib
from dropmae_jax.models import mae
from dropmae_jax.models import ostrack
from dropmae_jax.train import checkpoint as ckpt_lib
from dropmae_jax.train import loop
from dropmae_jax.train import sharding
from dropmae_jax.train import step as step_lib
from dropmae_jax.train import tracking_optim
from dropmae_jax.train.tasks import droptrack


@pytest.fixture(scope="session")
def tracking_root(tmp_path_factory):
  """Two train and one val synthetic sequences of 24 frames at 160x120 (GOT-10k layout)."""
  from dropmae_jax.data import make_tracking_sequences
  root = str(tmp_path_factory.mktemp("tracking") / "got10k")
  make_tracking_sequences.make_dataset(root, train=2, val=1, frames=24, size=(160, 120), seed=3,
                                       progress=False)
  return root


def tiny_config(root: str = ""):
  c = configlib.droptrack_defaults()
  c.model.variant = "micro/16"
  c.model.depth = 2
  c.model.template_size = 32          # 2x2 template tokens
  c.model.search_size = 64            # 4x4 search tokens: CE keeps 16 -> 14 -> 12 over the warm-up
  c.model.ce_loc = (1,)
  c.model.pretrain_img_size = 64
  c.model.head_channels = 16
  c.data.roots.got10k = root
  c.data.num_workers = 0
  c.data.max_sample_interval = 10
  c.data.val_samples = 8
  c.batch_size = 8
  c.lr = 1e-3 * 128 / 8               # lr 1e-3 at batch 8
  c.steps_per_epoch = 2
  c.epochs = 3                        # 6 steps
  c.lr_drop_epoch = 2
  c.ce_start_epoch = 1                # keep 1.0 in epoch 1, 0.7 from epoch 2 (warm-up of 1)
  c.ce_warm_epoch = 1
  c.val_every_epochs = 0
  c.log_every = 1
  c.ckpt_every = 2
  c.figure_every = 0
  c.tracker.batch_sequences = 2
  return c


def read_rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def train_rows(workdir: str) -> dict[int, dict]:
  return {r["step"]: r for r in read_rows(workdir) if "loss" in r}


def val_rows(workdir: str) -> dict[int, dict]:
  return {r["step"]: r for r in read_rows(workdir) if "val_loss" in r}


# ------------------------------------------------------------------------------- resume


def test_kill_and_resume_reproduces_losses(tracking_root, tmp_path):
  """Killed after step 3 and resumed == uninterrupted; CE switches on (a second compiled step)
  and the lr drops at epoch 2, on the same steps in both runs."""
  config = tiny_config(tracking_root)
  config.epochs = 2                      # 4 steps: epoch 1 keep 1.0 / lr, epoch 2 keep 0.7 / lr/10
  config.lr_drop_epoch = 1
  straight = str(tmp_path / "straight")
  loop.train_and_evaluate(config, straight)
  resumed = str(tmp_path / "resumed")
  first = tiny_config(tracking_root)
  first.update_from_flattened_dict({"epochs": 2, "lr_drop_epoch": 1, "max_steps": 3})
  loop.train_and_evaluate(first, resumed)       # "killed" after step 3 (saves at 2 and 3)
  assert sorted(train_rows(resumed)) == [1, 2, 3]
  loop.train_and_evaluate(config, resumed)
  a, b = train_rows(straight), train_rows(resumed)
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  for s in range(1, 5):
    for k in ("loss", "focal", "giou", "l1", "iou", "lr", "keep_ratio", "grad_norm"):
      np.testing.assert_allclose(b[s][k], a[s][k], rtol=1e-5, err_msg=f"step {s} {k}")
    assert b[s]["skipped_samples"] == a[s]["skipped_samples"]
  # The released schedules: keep 1.0 in epoch 1 then 0.7; lr 1e-3 then x0.1 from epoch 2.
  assert [a[s]["keep_ratio"] for s in range(1, 5)] == pytest.approx([1, 1, .7, .7])
  assert [a[s]["lr"] for s in range(1, 5)] == pytest.approx([1e-3] * 2 + [1e-4] * 2, rel=1e-6)
  assert {"loss", "focal", "giou", "l1", "iou", "grad_norm", "pairs_per_sec",
          "skipped_samples", "epoch"} <= set(a[4])
  assert os.listdir(os.path.join(straight, "tensorboard"))
  # A rerun of the finished schedule trains nothing.
  assert loop.train_and_evaluate(config, straight)["loss"] == pytest.approx(a[4]["loss"])
  assert len(train_rows(straight)) == 4


def test_validation_figure_and_exported_weights(tracking_root, tmp_path):
  """Validation at the end of the schedule (loss / IoU on val pairs, AO on a val sequence), a
  figure, and the final weights in the tracker layout equal to the last checkpoint's."""
  config = tiny_config(tracking_root)
  config.epochs = 1                      # 2 steps
  config.val_every_epochs = 1
  config.val_ao_sequences = 1
  config.figure_every = 2
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config, workdir)
  rows = val_rows(workdir)
  assert sorted(rows) == [2]
  assert {"val_loss", "val_focal", "val_giou", "val_l1", "val_iou", "val_ao", "val_sr50",
          "val_sr75"} <= set(rows[2])
  assert 0 <= rows[2]["val_ao"] <= 100 and 0 <= rows[2]["val_iou"] <= 1
  assert rows[2]["val_loss"] == pytest.approx(rows[2]["val_focal"] + 2 * rows[2]["val_giou"]
                                              + 5 * rows[2]["val_l1"], rel=1e-4)
  assert os.path.isfile(os.path.join(workdir, "figures", "tracking_00000002.png"))
  from dropmae_jax.convert import io
  variables, saved_config = io.load_tracker(os.path.join(workdir, droptrack.EXPORT_DIR))
  assert saved_config.model.search_size == 64
  task = droptrack.DropTrackTask(config, workdir)
  task.build(loop.plan_run(config, config.data.samples_per_epoch))
  with ckpt_lib.Checkpointer(workdir, keep=3) as ckpt:
    target = ckpt_lib.abstract_like(jax.eval_shape(task.create_state),
                                    jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    state, _ = ckpt.restore(2, target)
  for got, want in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(jax.tree.leaves(variables["batch_stats"]),
                       jax.tree.leaves(state.batch_stats)):
    np.testing.assert_array_equal(got, want)


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
  model = ostrack.OSTrackCE.from_config(config)
  tx, _ = tracking_optim.make_tracking_optimizer(config, config.steps_per_epoch)
  state = jax.device_get(jax.jit(lambda: step_lib.create_track_state(model, tx, 0))())
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
  state = jax.jit(lambda: step_lib.create_track_state(model, tx, 0))()
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


# ------------------------------------------------------------------------------ NaN stop


def test_nan_stops_before_saving(tracking_root, tmp_path):
  config = tiny_config(tracking_root)
  config.lr = 1e30
  config.grad_clip_norm = 0.0
  config.ckpt_every = 1
  workdir = str(tmp_path / "nan")
  with pytest.raises(loop.NonFiniteLossError, match="step"):
    loop.train_and_evaluate(config, workdir)
  saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  rows = train_rows(workdir)
  assert saved, "the healthy first step should have been saved"
  assert all(np.isfinite(r["loss"]) for r in rows.values())
  assert set(saved) <= set(rows)
  assert not os.path.isdir(os.path.join(workdir, droptrack.EXPORT_DIR))


# ---------------------------------------------------------------- init from pre-training


def mae_sincos_table(width: int, grid: int) -> np.ndarray:
  """MAE's get_2d_sincos_pos_embed(width, grid, cls_token=True), written out in numpy."""
  def one_d(dim, pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
  gw, gh = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
  emb = np.concatenate([one_d(width // 2, gw), one_d(width // 2, gh)], axis=1)
  return np.concatenate([np.zeros((1, width)), emb], axis=0)[None].astype(np.float32)


def torch_bicubic(table: np.ndarray, grid: int) -> np.ndarray:
  """The released resize: F.interpolate(bicubic, align_corners=False) of the patch slots."""
  import torch
  old = int(round(np.sqrt(table.shape[1] - 1)))
  t = torch.from_numpy(table[:, 1:].reshape(1, old, old, -1)).permute(0, 3, 1, 2).double()
  out = torch.nn.functional.interpolate(t, size=(grid, grid), mode="bicubic", align_corners=False)
  return out.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).float().numpy()


def test_init_from_a_pretraining_workdir_loads_the_encoder(tmp_path):
  """A pre-training WORKDIR (checkpoint as the loop writes it) -> the tracker's backbone."""
  pre = configlib.pretrain_defaults()
  pre.model.variant = "micro/16"
  pre.model.img_size = 64
  pre.model.decoder_embed_dim = 32
  pre.model.decoder_depth = 1
  pre.model.decoder_num_heads = 4
  pre.model.dtype = "float32"
  from dropmae_jax.train import optim
  mae_model = mae.DropMAE.from_config(pre)
  mae_tx = optim.make_optimizer(pre, 10)
  mae_state = jax.jit(lambda: step_lib.create_state(mae_model, mae_tx, 5,
                                                    jnp.zeros((1, 2, 64, 64, 3))))()
  rng = np.random.default_rng(1)   # make every tensor distinct from any fresh initialisation
  mae_state = mae_state.replace(params=jax.tree.map(
      lambda p: np.asarray(p) + rng.normal(0, 0.5, p.shape).astype(np.float32), mae_state.params))
  workdir = str(tmp_path / "pretrain")
  with ckpt_lib.Checkpointer(workdir, keep=1) as ckpt:
    ckpt.save(7, mae_state, meta={"counters": {}, "config": pre.to_json_best_effort()})

  config = tiny_config()
  config.init_from = workdir
  task = droptrack.DropTrackTask(config, str(tmp_path / "track"))
  task.build(loop.plan_run(config, 16))
  mesh = sharding.make_mesh(config.mesh)
  fresh = jax.jit(task.create_state)()
  shardings = sharding.state_shardings(jax.eval_shape(task.create_state), mesh)
  started = jax.device_get(task.load_initial(jax.device_put(fresh, shardings), shardings))
  fresh = jax.device_get(fresh)
  backbone, pretrained = started.params["backbone"], jax.device_get(mae_state.params)
  # Every encoder tensor is the pre-trained one (same flax names under 'backbone').
  for name in ("blocks_0", "blocks_1", "norm", "patch_embed", "temporal_pos_embed_x",
               "temporal_pos_embed_z"):
    for got, want in zip(jax.tree.leaves(backbone[name]), jax.tree.leaves(pretrained[name])):
      np.testing.assert_array_equal(got, want)
  # pos_embed: the pre-training sin-cos table; z / x tables: its bicubic resize (torch).
  table = mae_sincos_table(64, 4)
  np.testing.assert_allclose(backbone["pos_embed"], table, atol=1e-6)
  np.testing.assert_allclose(backbone["pos_embed_z"], torch_bicubic(table, 2), atol=1e-5)
  np.testing.assert_allclose(backbone["pos_embed_x"], torch_bicubic(table, 4), atol=1e-5)
  # The head, its BatchNorm statistics and the unused cls token keep their fresh values.
  for got, want in zip(jax.tree.leaves(started.params["box_head"]),
                       jax.tree.leaves(fresh.params["box_head"])):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(backbone["cls_token"], fresh.params["backbone"]["cls_token"])
  for got, want in zip(jax.tree.leaves(started.batch_stats), jax.tree.leaves(fresh.batch_stats)):
    np.testing.assert_array_equal(got, want)
  assert int(started.step) == 0


def test_config_mistakes_are_config_errors(tracking_root, tmp_path):
  from dropmae_jax.cli_config import ConfigError
  config = tiny_config(tracking_root)
  config.model.ce_loc = (5,)
  with pytest.raises(ConfigError, match="ce_loc"):
    loop.train_and_evaluate(config, str(tmp_path / "a"))
  config = tiny_config(str(tmp_path / "nowhere"))
  with pytest.raises(ConfigError):
    loop.train_and_evaluate(config, str(tmp_path / "b"))


def test_epoch_of_step_and_released_configs():
  assert [droptrack.epoch_of_step(s, 468) for s in (1, 468, 469, 936, 937)] == [1, 1, 2, 2, 3]
  from dropmae_jax import cli_config
  got10k = cli_config.load_config("configs/droptrack_got10k.py")
  full = cli_config.load_config("configs/droptrack_full.py")
  for c in (got10k, full):
    assert c.task == "droptrack" and c.batch_size == 128 and c.data.samples_per_epoch == 60000
    assert loop.plan_run(c, c.data.samples_per_epoch).steps_per_epoch in (468, 60000 // 128)
  assert (got10k.epochs, got10k.lr_drop_epoch, got10k.ce_warm_epoch) == (100, 80, 50)
  assert (full.epochs, full.lr_drop_epoch, full.ce_warm_epoch) == (300, 240, 80)
  assert tuple(full.data.datasets) == ("lasot", "got10k", "coco", "trackingnet")
  assert tuple(full.data.ratios) == (1, 1, 1, 1)
  demo = cli_config.load_config("configs/droptrack_demo.py")
  assert demo.data.roots.got10k == "synthetic" and demo.model.variant == "micro/16"
