"""Training utilities: lr schedule, decay mask, AdamW, checkpoints, metric files, figures.

Every expected value is written out independently here (plain math / numpy / explicit loops),
not computed with the code under test.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import flax.linen as nn
import flax.struct
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dropmae_jax.config import defaults as configlib
from dropmae_jax.models import mae
from dropmae_jax.train import checkpoint
from dropmae_jax.pretrain import figures
from dropmae_jax.train import metrics
from dropmae_jax.pretrain import optim

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def config_with(**overrides):
  c = configlib.pretrain_defaults()
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


# --------------------------------------------------------------------------------- schedule

def released_adjust_learning_rate(epoch: float, lr: float, min_lr: float, warmup_epochs: float,
                                  epochs: float) -> float:
  """util/lr_sched.py of MAE/DropMAE, restated in plain Python."""
  if epoch < warmup_epochs:
    return lr * epoch / warmup_epochs
  return min_lr + (lr - min_lr) * 0.5 * (
      1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))


@pytest.mark.parametrize("step, expected", [
    (0, 0.0),                                                      # start of warm-up
    (10, 0.5e-3),                                                  # mid warm-up (epoch 1 of 2)
    (20, 1e-3),                                                    # end of warm-up: the peak
    (60, 1e-5 + (1e-3 - 1e-5) * 0.5),                              # mid cosine: cos(pi/2) = 0
    (100, 1e-5),                                                   # final step: min_lr
    (33, 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 1.3 / 8))),  # fractional epoch
])
def test_schedule_matches_released_formula(step, expected):
  c = config_with(lr=1e-3, min_lr=1e-5, warmup_epochs=2, epochs=10)
  schedule = optim.make_lr_schedule(c, steps_per_epoch=10)
  assert expected == pytest.approx(released_adjust_learning_rate(step / 10, 1e-3, 1e-5, 2, 10))
  assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-10)
  # Jittable, with the step as a traced int32 (as optax's update count is).
  assert float(jax.jit(schedule)(jnp.int32(step))) == pytest.approx(expected, rel=1e-5,
                                                                    abs=1e-10)


def test_schedule_stays_at_min_lr_after_the_end():
  c = config_with(lr=1e-3, min_lr=1e-5, warmup_epochs=2, epochs=10)
  schedule = optim.make_lr_schedule(c, steps_per_epoch=10)
  assert float(schedule(130)) == pytest.approx(1e-5, rel=1e-5)


def test_learning_rate_scaling():
  c = config_with(blr=1.5e-4, batch_size=4096, lr=-1.0)
  assert optim.learning_rate(c) == pytest.approx(2.4e-3)
  assert optim.learning_rate(config_with(lr=3e-4)) == 3e-4


# ------------------------------------------------------------------------------- decay mask

class SmallNet(nn.Module):
  """Dense, Conv, LayerNorm and (1, 1, D) parameters, like the model's kinds of leaves."""

  @nn.compact
  def __call__(self, x):                                   # x: (B, 8, 8, 3)
    token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, 4))
    frame = self.param("temporal_pos_embed_x", nn.initializers.normal(1.0), (1, 1, 4))
    x = nn.Conv(4, (4, 4), strides=(4, 4), name="patch_embed")(x)       # (B, 2, 2, 4)
    x = x.reshape(x.shape[0], -1, 4) + token + frame                    # (B, 4, 4)
    x = nn.LayerNorm(name="norm")(x)
    x = nn.Dense(6, name="head")(x)
    return nn.Dense(2, use_bias=False, name="proj")(x)


def _flat(tree) -> dict[str, Any]:
  return {"/".join(str(getattr(k, "key", k)) for k in path): v
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_weight_decay_mask_exact_leaves():
  params = jax.jit(SmallNet().init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
  mask = _flat(optim.weight_decay_mask(params))
  assert mask == {
      "mask_token": True,                  # (1, 1, D): decayed in the released code
      "temporal_pos_embed_x": True,
      "patch_embed/kernel": True,          # 4-D conv kernel
      "patch_embed/bias": False,
      "norm/scale": False,                 # 1-D
      "norm/bias": False,
      "head/kernel": True,
      "head/bias": False,
      "proj/kernel": True,
  }
  # The same on shapes only (what the loop has before materialising the state).
  abstract = jax.eval_shape(SmallNet().init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  assert _flat(optim.weight_decay_mask(abstract["params"])) == mask


# ------------------------------------------------------------------------------------ AdamW

@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_adamw_matches_numpy(clip):
  """Three updates on a toy regression vs AdamW written out in numpy (float64)."""
  steps, lr, wd, b1, b2, eps = 3, 0.1, 0.05, 0.9, 0.95, 1e-8
  # warmup 0, one step per epoch, 3 epochs: lr(k) = lr * 0.5 * (1 + cos(pi * k / 3)).
  c = config_with(lr=lr, min_lr=0.0, warmup_epochs=0, epochs=steps, weight_decay=wd, b1=b1, b2=b2,
                  grad_clip_norm=clip)
  tx = optim.make_optimizer(c, steps_per_epoch=1)
  model = SmallNet()
  x = jax.random.normal(jax.random.key(1), (5, 8, 8, 3))
  y = jax.random.normal(jax.random.key(2), (5, 4, 2))
  params = jax.jit(model.init)(jax.random.key(0), x)["params"]
  loss = lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2)
  # Compiled once each (op by op, a first run compiles every op of the model and of AdamW).
  grad_fn, update_fn = jax.jit(jax.grad(loss)), jax.jit(tx.update)

  ref = {k: np.asarray(v, np.float64) for k, v in _flat(params).items()}
  m = {k: np.zeros_like(v) for k, v in ref.items()}
  v = {k: np.zeros_like(w) for k, w in ref.items()}
  decayed = {"mask_token", "temporal_pos_embed_x", "patch_embed/kernel", "head/kernel",
             "proj/kernel"}
  opt_state = tx.init(params)
  for t in range(1, steps + 1):
    grads = grad_fn(params)
    g = {k: np.asarray(a, np.float64) for k, a in _flat(grads).items()}
    if clip > 0:
      norm = math.sqrt(sum(float(np.sum(a ** 2)) for a in g.values()))
      assert norm > clip  # the toy problem must actually exercise clipping
      g = {k: a * clip / norm for k, a in g.items()}
    step_lr = lr * 0.5 * (1 + math.cos(math.pi * (t - 1) / steps))
    for k in ref:
      m[k] = b1 * m[k] + (1 - b1) * g[k]
      v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
      m_hat, v_hat = m[k] / (1 - b1 ** t), v[k] / (1 - b2 ** t)
      decay = wd * ref[k] if k in decayed else 0.0
      ref[k] = ref[k] - step_lr * (m_hat / (np.sqrt(v_hat) + eps) + decay)
    updates, opt_state = update_fn(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    # Parameters are compared each step, so the numpy grads above use the same point.
    for k, got in _flat(params).items():
      np.testing.assert_allclose(got, ref[k], rtol=2e-5, atol=1e-6, err_msg=f"{k} step {t}")
      ref[k] = np.asarray(got, np.float64)  # keep float32 rounding from compounding


# ------------------------------------------------------------------------------- checkpoints

class TinyState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def _mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ("data",))


def _tiny_state(width: int = 3) -> TinyState:
  """A train state whose kernel is split row-wise over all devices."""
  n = len(jax.devices())
  mesh = _mesh()
  params = {"w": jnp.arange(2 * n * width, dtype=jnp.float32).reshape(2 * n, width),
            "b": jnp.linspace(-1.0, 1.0, width)}
  params = {"w": jax.device_put(params["w"], NamedSharding(mesh, P("data"))),
            "b": jax.device_put(params["b"], NamedSharding(mesh, P()))}
  tx = optim.make_optimizer(config_with(lr=1e-3, warmup_epochs=1, epochs=5), steps_per_epoch=4)
  return TinyState(step=jnp.asarray(7, jnp.int32), params=params, opt_state=tx.init(params),
                   rng=jax.random.key_data(jax.random.key(42)))


def _assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_checkpoint_roundtrip_sharded_state_and_meta(tmp_path):
  state = _tiny_state()
  state = state.replace(opt_state=jax.tree.map(lambda x: x + 1, state.opt_state))
  with checkpoint.Checkpointer(str(tmp_path), keep=3) as ckpt:
    assert ckpt.latest_step() is None
    ckpt.save(7, state, meta={"counters": {"skipped_videos": 4}, "config": "{}"})
    ckpt.wait_until_finished()
  # A new Checkpointer (as after a restart) finds and restores it.
  with checkpoint.Checkpointer(str(tmp_path), keep=3) as ckpt:
    assert ckpt.latest_step() == 7
    shardings = jax.tree.map(lambda x: x.sharding, state)
    target = checkpoint.abstract_like(jax.eval_shape(lambda: state), shardings)
    restored, meta = ckpt.restore(7, target)
  _assert_trees_equal(restored, state)
  assert isinstance(restored, TinyState)
  assert restored.params["w"].sharding == NamedSharding(_mesh(), P("data"))
  assert restored.rng.dtype == jnp.uint32 and restored.step.dtype == jnp.int32
  assert meta == {"counters": {"skipped_videos": 4}, "config": "{}"}


def test_checkpoint_restores_onto_another_sharding(tmp_path):
  state = _tiny_state()
  with checkpoint.Checkpointer(str(tmp_path), keep=1, async_save=False) as ckpt:
    ckpt.save(1, state)
    # Another mesh (devices in reverse order), fully replicated.
    other = Mesh(np.asarray(jax.devices()[::-1]), ("replica",))
    target = checkpoint.abstract_like(state, NamedSharding(other, P()))
    restored, meta = ckpt.restore(1, target)
  assert meta == {}
  assert restored.params["w"].sharding == NamedSharding(other, P())
  _assert_trees_equal(restored, state)


def test_checkpoint_keeps_last_n(tmp_path):
  state = _tiny_state()
  with checkpoint.Checkpointer(str(tmp_path), keep=2) as ckpt:
    for step in (10, 20, 30, 40):
      ckpt.save(step, state.replace(step=jnp.asarray(step, jnp.int32)))
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [30, 40]
    assert ckpt.latest_step() == 40
    target = checkpoint.abstract_like(state, NamedSharding(_mesh(), P()))
    restored, _ = ckpt.restore(40, target)
    assert int(restored.step) == 40
  on_disk = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert on_disk == [30, 40]


def test_checkpoint_mismatch_errors_name_step_and_key(tmp_path):
  state = _tiny_state(width=3)
  with checkpoint.Checkpointer(str(tmp_path), keep=1) as ckpt:
    ckpt.save(5, state)
    ckpt.wait_until_finished()
    repl = NamedSharding(_mesh(), P())
    target = checkpoint.abstract_like(state, repl)
    rows = 2 * len(jax.devices())
    wider = target.replace(params={
        **target.params, "w": jax.ShapeDtypeStruct((rows, 4), jnp.float32, sharding=repl)})
    with pytest.raises(checkpoint.CheckpointError,
                       match=rf"(?s)step 5.*params/w: \({rows}, 3\) vs \({rows}, 4\)"):
      ckpt.restore(5, wider)
    extra = checkpoint.abstract_like(
        state.replace(params={**state.params, "extra": jnp.zeros(2)}), repl)
    with pytest.raises(checkpoint.CheckpointError, match=r"(?s)step 5.*params/extra"):
      ckpt.restore(5, extra)
    with pytest.raises(checkpoint.CheckpointError, match=r"step 6.*available: \[5\]"):
      ckpt.restore(6, checkpoint.abstract_like(state, repl))


def test_checkpoint_data_iterator_resumes_exactly(tmp_path):
  dataset = grain.MapDataset.range(64).shuffle(seed=3).batch(4).to_iter_dataset()
  it = iter(dataset)
  next(it), next(it)
  state = _tiny_state()
  with checkpoint.Checkpointer(str(tmp_path), keep=2) as ckpt:  # async
    ckpt.save(2, state, data_iterator=it, meta={"k": 1})
    expected = next(it)  # advancing right after an async save must not change what was saved
    next(it)
    ckpt.wait_until_finished()
    fresh = iter(dataset)
    target = checkpoint.abstract_like(state, NamedSharding(_mesh(), P()))
    _, meta = ckpt.restore(2, target, data_iterator=fresh)
  np.testing.assert_array_equal(next(fresh), expected)
  assert meta == {"k": 1}


def test_checkpoint_with_another_pipeline_blames_the_pipeline(tmp_path):
  """A run saved with worker processes cannot resume without them: the error names the data
  settings, not the model (the state itself is fine)."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()   # grain's mp_prefetch reads an absl flag
  dataset = grain.MapDataset.range(64).batch(4).to_iter_dataset()
  with_workers = iter(dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=1)))
  state = _tiny_state()
  try:
    with checkpoint.Checkpointer(str(tmp_path), keep=1, async_save=False) as ckpt:
      ckpt.save(3, state, data_iterator=with_workers)
      target = checkpoint.abstract_like(state, NamedSharding(_mesh(), P()))
      with pytest.raises(checkpoint.CheckpointError,
                         match=r"(?s)step 3.*input-pipeline position.*config.data.num_workers"):
        ckpt.restore(3, target, data_iterator=iter(dataset))
      restored, _ = ckpt.restore(3, target)   # the weights alone still restore
      _assert_trees_equal(restored, state)
  finally:
    with_workers.close()


# ------------------------------------------------------------------------------------ metrics

def test_metric_writer_jsonl_append_and_tensorboard(tmp_path):
  with metrics.MetricWriter(str(tmp_path)) as w:
    w.write(50, {"loss": 0.75, "lr": np.float32(1e-4), "skipped_videos": np.int64(2)})
    w.write(100, {"loss": jnp.asarray(0.5)})
  with metrics.MetricWriter(str(tmp_path)) as w:  # a resumed run appends
    w.write(150, {"loss": float("nan"), "grad_norm": float("inf")})
    w.flush()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  rows = [json.loads(line) for line in lines]
  assert [r["step"] for r in rows] == [50, 100, 150]
  assert rows[0]["loss"] == 0.75 and rows[0]["skipped_videos"] == 2
  assert isinstance(rows[0]["skipped_videos"], int)
  assert rows[0]["lr"] == pytest.approx(1e-4)
  assert rows[2] == {"step": 150, "loss": None, "grad_norm": None}  # non-finite -> null
  events = os.listdir(tmp_path / "tensorboard")
  assert events and all(e.startswith("events.out.tfevents") for e in events)
  assert sum(os.path.getsize(tmp_path / "tensorboard" / e) for e in events) > 100


def test_metric_writer_silent_on_other_processes(tmp_path):
  w = metrics.MetricWriter(str(tmp_path / "run"), is_main_process=False)
  w.write(1, {"loss": 1.0})
  w.flush()
  w.close()
  assert not (tmp_path / "run").exists()


def test_progress_bar_runs_with_and_without_total():
  bar = metrics.ProgressBar(total=100, initial=10)
  bar.update(20, loss=0.5, pairs_per_sec=1234.5)
  bar.update(30, loss=float("nan"), pairs_per_sec=float("nan"))
  bar.close()
  quiet = metrics.ProgressBar(total=None)
  quiet.update(5, loss=1.0)
  quiet.close()


# ------------------------------------------------------------------------------------ figures

def _patches_by_loops(img: np.ndarray, p: int) -> np.ndarray:
  """(H, W, 3) -> (h·w, p·p·3), patches row-major, pixels (p, q, c): spelled out with loops."""
  rows = []
  for i in range(img.shape[0] // p):
    for j in range(img.shape[1] // p):
      rows.append(img[i * p:(i + 1) * p, j * p:(j + 1) * p, :].reshape(-1))
  return np.stack(rows)


def _figure_inputs(seed: int = 0, height: int = 32, width: int = 48, p: int = 8):
  rng = np.random.default_rng(seed)
  rgb = rng.random((2, height, width, 3))                                 # in [0, 1]
  frames = ((rgb - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)).astype(np.float32)
  n = (height // p) * (width // p)
  mask = np.zeros(2 * n, np.float32)
  mask[rng.permutation(2 * n)[:int(0.75 * 2 * n)]] = 1.0
  return rgb, frames, mask


def _hidden_pixels(mask_frame: np.ndarray, height: int, width: int, p: int) -> np.ndarray:
  """(n,) patch mask -> (H, W) boolean pixel mask."""
  out = np.zeros((height, width), bool)
  w = width // p
  for k, m in enumerate(mask_frame):
    i, j = divmod(k, w)
    out[i * p:(i + 1) * p, j * p:(j + 1) * p] = bool(m)
  return out


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_reconstruction_panels_with_a_perfect_prediction(norm_pix_loss):
  p, height, width = 8, 32, 48
  rgb, frames, mask = _figure_inputs(p=p, height=height, width=width)
  targets = []
  for f in range(2):
    t = _patches_by_loops(frames[f].astype(np.float64), p)
    if norm_pix_loss:  # the loss's target: per-patch mean, unbiased variance, eps 1e-6
      mu = t.mean(-1, keepdims=True)
      var = ((t - mu) ** 2).sum(-1, keepdims=True) / (t.shape[-1] - 1)
      t = (t - mu) / np.sqrt(var + 1e-6)
    targets.append(t)
  pred = np.concatenate(targets).astype(np.float32)
  panels = figures.reconstruction_panels(frames, mask, pred, patch_size=p,
                                         norm_pix_loss=norm_pix_loss, mean=IMAGENET_MEAN,
                                         std=IMAGENET_STD)
  assert panels.shape == (2, 4, height, width, 3)
  n = (height // p) * (width // p)
  for f in range(2):
    hidden = _hidden_pixels(mask[f * n:(f + 1) * n], height, width, p)
    assert 0 < hidden.sum() < hidden.size
    np.testing.assert_allclose(panels[f, 0], rgb[f], atol=1e-5)            # original
    np.testing.assert_allclose(panels[f, 3], rgb[f], atol=1e-4)            # recon + visible
    np.testing.assert_allclose(panels[f, 2][hidden], rgb[f][hidden], atol=1e-4)
    np.testing.assert_allclose(panels[f, 1][~hidden], rgb[f][~hidden], atol=1e-5)
    # What is not shown is one flat grey.
    assert np.ptp(panels[f, 1][hidden]) == 0 and np.ptp(panels[f, 2][~hidden]) == 0


def test_reconstruction_figure_writes_png(tmp_path):
  _, frames, mask = _figure_inputs()
  rng = np.random.default_rng(1)
  pred = rng.normal(size=(mask.size, 8 * 8 * 3)).astype(np.float32)
  path = tmp_path / "figures" / "nested" / "recon.png"
  out = figures.reconstruction_figure(frames, mask, pred, patch_size=8, norm_pix_loss=True,
                                      mean=IMAGENET_MEAN, std=IMAGENET_STD, path=str(path))
  assert out == str(path)
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_reconstruction_figure_rejects_mismatched_shapes(tmp_path):
  _, frames, mask = _figure_inputs()
  with pytest.raises(ValueError, match="pred"):
    figures.reconstruction_figure(frames, mask, np.zeros((mask.size, 16 * 16 * 3)), patch_size=8,
                                  norm_pix_loss=False, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                  path=str(tmp_path / "x.png"))


def test_decay_mask_on_the_dropmae_model():
  model = mae.DropMAE(variant="micro/16", img_size=32, decoder_embed_dim=32, decoder_depth=1,
                      decoder_num_heads=4)
  rngs = {k: jax.random.key(i) for i, k in enumerate(("params", "masking", "asad"))}
  params = jax.eval_shape(model.init, rngs, jnp.zeros((1, 2, 32, 32, 3)))["params"]
  mask = optim.weight_decay_mask(params)
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
          for path, v in jax.tree_util.tree_leaves_with_path(mask)}
  decayed = {k for k, v in flat.items() if v}
  # Released rule: skip 1-D parameters and biases; decay the rest (incl. the (1,1,D) tokens).
  assert "mask_token" in decayed and "temporal_pos_embed_x" in decayed
  assert "decoder_temporal_pos_embed_z" in decayed
  assert "patch_embed/proj/kernel" in decayed
  assert "blocks_0/attn/qkv/kernel" in decayed
  assert "blocks_0/attn/qkv/bias" not in decayed
  assert "blocks_0/norm1/scale" not in decayed and "norm/bias" not in decayed
  assert all(k.endswith("kernel") or "embed" in k or k == "mask_token" for k in decayed)
