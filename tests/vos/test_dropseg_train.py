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


# ------------------------------------------------------------------ through the one trainer


def run_config(davis_root: str):
  """The tiny model at 64 px on 2 synthetic train videos (16 frames, 96x64), batch 8, 4 steps:
  plain CE at it 0, the warm-up at 1..3 (top_p 1 -> 0.15 at it 3), lr x0.1 from update 2."""
  c = tiny_model_config()
  c.model.img_size = 64
  c.model.pretrain_img_size = 64
  c.data.davis_root = davis_root
  c.data.val_root = davis_root
  c.data.synthetic.train, c.data.synthetic.val = 2, 1
  c.data.synthetic.frames, c.data.synthetic.size = 16, (96, 64)
  c.data.num_workers = 0
  c.batch_size, c.total_steps, c.lr = 8, 4, 1e-3   # 8: one pair on each of the 8 test devices
  c.loss.start_warm, c.loss.end_warm = 1, 3
  c.lr_steps = (2,)
  c.val_every, c.val_sequences = 0, 1
  c.log_every, c.ckpt_every, c.figure_every = 1, 2, 4
  return c


def read_rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """One uninterrupted run on data.davis_root = val_root = 'synthetic' (the set is made in its
  workdir; the resumed runs below read that folder by path)."""
  from dropmae_jax.train import loop
  workdir = str(tmp_path_factory.mktemp("dropseg") / "straight")
  config = run_config("synthetic")
  loop.train_and_evaluate(config, workdir)
  return config, workdir


def test_kill_and_resume_reproduces_metrics(finished_run, tmp_path):
  from dropmae_jax.train import loop
  from dropmae_jax.vos.inputs import pipeline
  _, straight = finished_run
  root = os.path.join(straight, pipeline.SYNTHETIC_DIR)
  first = run_config(root)
  first.max_steps = 3
  first.val_sequences = 0
  resumed = str(tmp_path / "resumed")
  loop.train_and_evaluate(first, resumed)           # "killed" after step 3 (saved at 2 and 3)
  second = run_config(root)
  second.val_sequences = 0
  loop.train_and_evaluate(second, resumed)
  a = {r["step"]: r for r in read_rows(straight) if "loss" in r}
  b = {r["step"]: r for r in read_rows(resumed) if "loss" in r}
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  for s in range(1, 5):
    for k in ("loss", "iou", "sec_iou", "lr", "top_p", "grad_norm"):
      np.testing.assert_allclose(b[s][k], a[s][k], rtol=1e-5, err_msg=f"step {s} {k}")
    assert b[s]["skipped_samples"] == a[s]["skipped_samples"]
  assert [a[s]["lr"] for s in range(1, 5)] == pytest.approx([1e-3] * 2 + [1e-4] * 2, rel=1e-6)
  assert [a[s]["top_p"] for s in range(1, 5)] == pytest.approx([1, 1, .575, .15], rel=1e-6)
  assert all(np.isfinite(a[s]["loss"]) for s in a)


def test_validation_figure_and_segmenter_weights(finished_run):
  """J&F at the end of the schedule, the figure, and the final weights as a segmenter folder:
  'frozen' is still the fresh initialisation's, 'params' are not; it segments a frame."""
  from dropmae_jax.vos.dropseg import inference
  from dropmae_jax.vos.dropseg import weights
  config, workdir = finished_run
  val = [r for r in read_rows(workdir) if "val_jf" in r]
  assert [r["step"] for r in val] == [4]
  assert 0 <= val[0]["val_jf"] <= 1
  assert val[0]["val_jf"] == pytest.approx((val[0]["val_j"] + val[0]["val_f"]) / 2)
  assert os.path.isfile(os.path.join(workdir, "figures", "segmentation_00000004.png"))
  variables, loaded_config = weights.load_segmenter(os.path.join(workdir, "segmenter_weights"))
  model = model_lib.DropSeg.from_config(loaded_config)
  fresh = model_lib.init_variables(model, config.seed)
  jax.tree.map(np.testing.assert_array_equal, variables["frozen"], fresh["frozen"])
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), variables["params"],
                         fresh["params"])
  assert all(jax.tree.leaves(changed))
  frame = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
  mask = np.zeros((64, 96), np.uint8)
  mask[10:30, 20:50] = 1
  result = inference.OneShotSegmenter(model, variables).segment(frame, mask, frame)
  assert result.labels.shape == (64, 96)


def test_main_help_lists_the_dropseg_fields():
  """`python -m dropmae_jax.main --help --config=dropseg_demo` documents the task's fields,
  the data ones included (they live in dropseg_data_defaults)."""
  out = subprocess.run([sys.executable, "-m", "dropmae_jax.main", "--help",
                        "--config=dropseg_demo"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"),
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  assert out.returncode == 0, out.stderr[-500:]
  for flag in ("--config.data.davis_root=", "--config.data.val_root=", "--config.loss.top_p=",
               "--config.val_every=", "--config.init_from="):
    line = next((ln for ln in out.stdout.splitlines() if flag in ln), "")
    assert len(line.split(None, 1)) == 2, f"{flag} undocumented in --help"


def test_load_initial_starts_from_dropmae_weights(tmp_path):
  """config.init_from = a DropMAE .pth (released layout): the task's fresh state gets the
  encoder (blocks, temporal embeddings) and the frozen pos_embed from the file, the frozen
  two-frame table from that pos_embed, and keeps the fresh decoder."""
  import types
  from dropmae_jax.convert import io
  from dropmae_jax.convert import layout
  from dropmae_jax.models import mae
  from dropmae_jax.vos import task as task_lib
  pre = configlib.pretrain_defaults()
  pre.model.variant, pre.model.img_size, pre.model.depth = "micro/16", 32, 2
  pre.model.decoder_embed_dim, pre.model.decoder_depth, pre.model.decoder_num_heads = 32, 1, 4
  pre.model.dtype, pre.asad.impl = "float32", "reference"
  mae_model = mae.DropMAE.from_config(pre)
  shapes = jax.eval_shape(lambda f: mae_model.init(
      {k: jax.random.key(0) for k in ("params", "masking", "asad")}, f),
      jax.ShapeDtypeStruct((1, 2, 32, 32, 3), jnp.float32))["params"]
  rng = np.random.default_rng(5)
  mae_params = jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(np.float32), shapes)
  state_dict = layout.params_to_state_dict(mae_params, grid=2)
  pth = str(tmp_path / "dropmae.pth")
  io.write_torch_state_dict(state_dict, pth)

  config = tiny_model_config()
  config.init_from = pth
  task = task_lib.DropSegTask(config, str(tmp_path / "run"))
  task.build(types.SimpleNamespace(steps_per_epoch=1, total_steps=1))
  fresh = jax.jit(task.create_state)()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  loaded = task.load_initial(fresh, types.SimpleNamespace(params=device, frozen=device))
  np.testing.assert_array_equal(loaded.params["blocks_1"]["attn"]["qkv"]["kernel"],
                                state_dict["blocks.1.attn.qkv.weight"].T)
  np.testing.assert_array_equal(loaded.params["temporal_pos_embed_x"],
                                state_dict["temporal_pos_embed_x"])
  np.testing.assert_array_equal(loaded.frozen["pos_embed"], state_dict["pos_embed"])
  np.testing.assert_array_equal(loaded.frozen["pos_embed_two_frame"][0, 1:5],
                                state_dict["pos_embed"][0, 1:])      # 2x2 grid: no resize
  for a, b in zip(jax.tree.leaves(loaded.params["stcn_decoder"]),
                  jax.tree.leaves(fresh.params["stcn_decoder"])):
    np.testing.assert_array_equal(a, b)
