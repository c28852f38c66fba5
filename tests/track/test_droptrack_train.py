"""DropTrack fine-tuning through the one trainer: resume, NaN stop, init from pre-training.

A tiny tracker (micro/16, depth 2, template 32 / search 64 px, one CE layer) on a small synthetic
GOT-10k-layout set made once per session. The references are independent of the code under test:
an uninterrupted run (for resume), MAE's sin-cos table written out in numpy and torch's bicubic
interpolation (for the position tables after init_from), and the pre-training parameters
themselves. The sharded step and CE's masked warm-up step: test_droptrack_sharding.py (a file of
its own so that pytest-xdist's --dist loadfile can run it beside this one).
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dropmae_jax.config import defaults as configlib
from dropmae_jax.models import mae
from dropmae_jax.train import checkpoint as ckpt_lib
from dropmae_jax.train import loop
from dropmae_jax.train import sharding
from dropmae_jax.pretrain import step as step_lib
from dropmae_jax.track import task as droptrack


@pytest.fixture(scope="session")
def tracking_root(tmp_path_factory):
  """Two train and one val synthetic sequences of 24 frames at 160x120 (GOT-10k layout)."""
  from dropmae_jax.track import synthetic as make_tracking_sequences
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


@pytest.fixture(scope="module")
def finished_run(tracking_root, tmp_path_factory):
  """One uninterrupted 4-step run, shared: the reference of the resume test and the run whose
  end-of-schedule validation, figure and exported weights are checked (each tiny tracker run
  compiles its steps for ~20 s; the NaN test reuses these compiled steps too, see below).

  Epoch 1 keeps 1.0 at lr 1e-3, epoch 2 keeps 0.7 at lr 1e-4 (CE and the lr drop on the same
  steps); validation and the figure only at the end of the schedule (step 4)."""
  config = kill_config(tracking_root)
  config.val_every_epochs = 2
  config.val_ao_sequences = 1
  config.figure_every = 4
  workdir = str(tmp_path_factory.mktemp("droptrack") / "straight")
  loop.train_and_evaluate(config, workdir)
  return config, workdir


def kill_config(root: str):
  """tiny_config with 4 steps: epoch 1 keep 1.0 / lr, epoch 2 keep 0.7 / lr/10."""
  config = tiny_config(root)
  config.epochs = 2
  config.lr_drop_epoch = 1
  return config


def test_kill_and_resume_reproduces_losses(finished_run, tracking_root, tmp_path):
  """Killed after step 3 and resumed == uninterrupted; CE switches on (a second compiled step)
  and the lr drops at epoch 2, on the same steps in both runs. (The killed run does not
  validate: validation, at step 4 of the uninterrupted run, must not change the training.)"""
  straight_config, straight = finished_run
  config = kill_config(tracking_root)
  resumed = str(tmp_path / "resumed")
  first = kill_config(tracking_root)
  first.max_steps = 3
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
  # A rerun of the finished schedule trains nothing and returns that run's last row (here
  # step 4's validation).
  rows = read_rows(straight)
  again = loop.train_and_evaluate(straight_config, straight)
  assert again == {k: v for k, v in rows[-1].items() if k != "step"} and "val_loss" in again
  assert read_rows(straight) == rows


def test_validation_figure_and_exported_weights(finished_run):
  """Validation at the end of the schedule (loss / IoU on val pairs, AO on a val sequence), a
  figure, and the final weights in the tracker layout equal to the last checkpoint's."""
  config, workdir = finished_run
  rows = val_rows(workdir)
  assert sorted(rows) == [4]
  assert {"val_loss", "val_focal", "val_giou", "val_l1", "val_iou", "val_ao", "val_sr50",
          "val_sr75"} <= set(rows[4])
  assert 0 <= rows[4]["val_ao"] <= 100 and 0 <= rows[4]["val_iou"] <= 1
  assert rows[4]["val_loss"] == pytest.approx(rows[4]["val_focal"] + 2 * rows[4]["val_giou"]
                                              + 5 * rows[4]["val_l1"], rel=1e-4)
  assert sorted(os.listdir(os.path.join(workdir, "figures"))) == ["tracking_00000004.png"]
  from dropmae_jax.convert import io
  variables, saved_config = io.load_tracker(os.path.join(workdir, droptrack.EXPORT_DIR))
  assert saved_config.model.search_size == 64
  task = droptrack.DropTrackTask(config, workdir)
  task.build(loop.plan_run(config, config.data.samples_per_epoch))
  with ckpt_lib.Checkpointer(workdir, keep=3) as ckpt:
    target = ckpt_lib.abstract_like(jax.eval_shape(task.create_state),
                                    jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    state, _ = ckpt.restore(4, target)
  for got, want in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(jax.tree.leaves(variables["batch_stats"]),
                       jax.tree.leaves(state.batch_stats)):
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------ NaN stop


class NaNAtStep2(droptrack.DropTrackTask):
  """Step 2's search crops are scaled by a NaN brightness: that step's loss is NaN.

  A diverged run (e.g. lr 1e30) is what this stands for; the loop sees the same thing, a
  non-finite loss after a healthy step, and these are the finished run's compiled steps (an lr
  baked into the step is another program: ~35 s of compiling)."""

  batches = 0

  def device_batch(self, local, counters, warn):
    batch = super().device_batch(local, counters, warn)
    self.batches += 1
    if self.batches == 2:
      batch = {**batch, "search_brightness": np.full_like(batch["search_brightness"], np.nan)}
    return batch


def test_nan_stops_before_saving(tracking_root, tmp_path):
  config = kill_config(tracking_root)
  config.ckpt_every = 1
  workdir = str(tmp_path / "nan")
  with pytest.raises(loop.NonFiniteLossError, match="at step 2"):
    loop.train_and_evaluate(config, workdir, task=NaNAtStep2(config, workdir))
  saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  rows = train_rows(workdir)
  assert saved == [1], "the healthy first step should have been saved, and only it"
  assert all(np.isfinite(r["loss"]) for r in rows.values())
  assert sorted(rows) == [1]
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
  # ASAD has no parameters (the checkpoint's tree is the same without it) and makes the
  # pre-training init a much bigger program to compile.
  pre.asad.drop_ratio = 0.0
  from dropmae_jax.pretrain import optim
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
  shardings = sharding.state_shardings(jax.eval_shape(task.create_state), mesh)
  # The loop's own program (jit with the state's shardings): the finished run above compiled it,
  # so this is a compilation-cache hit instead of compiling the tracker's init again (~12 s).
  fresh = jax.jit(task.create_state, out_shardings=shardings)()
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
  from dropmae_jax.config.loading import ConfigError
  config = tiny_config(tracking_root)
  config.model.ce_loc = (5,)
  with pytest.raises(ConfigError, match="ce_loc"):
    loop.train_and_evaluate(config, str(tmp_path / "a"))
  config = tiny_config(str(tmp_path / "nowhere"))
  with pytest.raises(ConfigError):
    loop.train_and_evaluate(config, str(tmp_path / "b"))


def test_epoch_of_step_and_released_configs():
  assert [droptrack.epoch_of_step(s, 468) for s in (1, 468, 469, 936, 937)] == [1, 1, 2, 2, 3]
  from dropmae_jax.config import loading as config_loading
  got10k = config_loading.load_config("configs/droptrack_got10k.py")
  full = config_loading.load_config("configs/droptrack_full.py")
  for c in (got10k, full):
    assert c.task == "droptrack" and c.batch_size == 128 and c.data.samples_per_epoch == 60000
    assert loop.plan_run(c, c.data.samples_per_epoch).steps_per_epoch in (468, 60000 // 128)
  assert (got10k.epochs, got10k.lr_drop_epoch, got10k.ce_warm_epoch) == (100, 80, 50)
  assert (full.epochs, full.lr_drop_epoch, full.ce_warm_epoch) == (300, 240, 80)
  assert tuple(full.data.datasets) == ("lasot", "got10k", "coco", "trackingnet")
  assert tuple(full.data.ratios) == (1, 1, 1, 1)
  demo = config_loading.load_config("configs/droptrack_demo.py")
  assert demo.data.roots.got10k == "synthetic" and demo.model.variant == "micro/16"
