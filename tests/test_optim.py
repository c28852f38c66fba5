"""Optimiser against the released recipe: lr scaling, schedule, decay mask, AdamW update."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dropmae_jax import configlib
from dropmae_jax.models import mae
from dropmae_jax.train import optim


def released_lr(epoch, lr, min_lr, warmup, epochs):
  """MAE/DropMAE util/lr_sched.adjust_learning_rate, restated."""
  if epoch < warmup:
    return lr * epoch / warmup
  return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) /
                                                          (epochs - warmup)))


def small_config(**kw):
  c = configlib.pretrain_defaults()
  c.lr, c.min_lr, c.warmup_epochs, c.epochs = 1e-3, 1e-5, 2, 10
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def test_lr_scaling_rule():
  c = configlib.pretrain_defaults()
  assert optim.learning_rate(c) == pytest.approx(1.5e-4 * 4096 / 256)  # 2.4e-3, released K700
  c.lr = 5e-4
  assert optim.learning_rate(c) == 5e-4


@pytest.mark.parametrize("step", [0, 1, 7, 20, 21, 55, 99, 100])
def test_schedule_matches_released_function(step):
  c = small_config()
  schedule = optim.make_lr_schedule(c, steps_per_epoch=10)
  expected = released_lr(step / 10, 1e-3, 1e-5, 2, 10)
  assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_schedule_rejects_warmup_longer_than_run():
  with pytest.raises(ValueError, match="warmup_epochs"):
    optim.make_lr_schedule(small_config(warmup_epochs=10, epochs=10), 5)


def test_decay_mask_on_the_model():
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


def test_adamw_step_matches_numpy():
  """Two steps of our AdamW on a Dense layer vs AdamW written out in numpy."""
  c = small_config(lr=0.1, warmup_epochs=0, epochs=10**9, weight_decay=0.05)
  tx = optim.make_optimizer(c, steps_per_epoch=1)
  params = {"dense": {"kernel": jnp.asarray([[1.0, -2.0], [0.5, 3.0]]),
                      "bias": jnp.asarray([0.3, -0.1])}}
  grads = [{"dense": {"kernel": jnp.asarray([[0.1, 0.2], [-0.3, 0.4]]),
                      "bias": jnp.asarray([1.0, -1.0])}},
           {"dense": {"kernel": jnp.asarray([[0.0, -0.2], [0.3, 0.1]]),
                      "bias": jnp.asarray([0.5, 0.5])}}]
  state = tx.init(params)
  p = params
  for g in grads:
    updates, state = tx.update(g, state, p)
    p = jax.tree.map(lambda a, u: a + u, p, updates)

  ref = {k: np.asarray(v, np.float64) for k, v in params["dense"].items()}
  m = {k: np.zeros_like(v) for k, v in ref.items()}
  v = {k: np.zeros_like(x) for k, x in ref.items()}
  for t, g in enumerate(grads, start=1):
    lr = released_lr(t - 1, 0.1, 0.0, 0.0, 1e9)  # cosine at ~0 progress: ~0.1
    for k in ref:
      gk = np.asarray(g["dense"][k], np.float64)
      m[k] = 0.9 * m[k] + 0.1 * gk
      v[k] = 0.95 * v[k] + 0.05 * gk ** 2
      m_hat, v_hat = m[k] / (1 - 0.9 ** t), v[k] / (1 - 0.95 ** t)
      decay = 0.05 if k == "kernel" else 0.0
      ref[k] = ref[k] - lr * (m_hat / (np.sqrt(v_hat) + 1e-8) + decay * ref[k])
  for k in ref:
    np.testing.assert_allclose(p["dense"][k], ref[k], rtol=1e-5)


def test_gradient_clipping_clips_what_adam_sees():
  params = {"w": jnp.ones((3, 3))}
  grads = {"w": jnp.full((3, 3), 1e3)}  # global norm 3000
  for clip, expected_mu in ((1.0, 0.1 * 1.0 / 3.0), (0.0, 0.1 * 1e3)):
    tx = optim.make_optimizer(small_config(grad_clip_norm=clip), steps_per_epoch=1)
    _, state = tx.update(grads, tx.init(params), params)
    mus = [leaf for leaf in jax.tree.leaves(state) if getattr(leaf, "shape", ()) == (3, 3)]
    # The first (3, 3) leaf is Adam's first moment: 0.1 x the (clipped) gradient.
    np.testing.assert_allclose(mus[0], expected_mu, rtol=1e-5)
