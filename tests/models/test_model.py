"""Model shapes, parameter layout, embeddings, masking and the loss, against closed forms."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dropmae_jax.models import mae
from dropmae_jax.models import masking
from dropmae_jax.models import vit

RNGS = {"params": jax.random.key(0), "masking": jax.random.key(1), "asad": jax.random.key(2)}


def tiny_model(**kw):
  args = dict(variant="micro/16", img_size=64, decoder_embed_dim=32, decoder_depth=2,
              decoder_num_heads=4, drop_ratio=0.1)
  args.update(kw)
  return mae.DropMAE(**args)


def released_param_count(width, depth, mlp, patch, dec_width, dec_depth, dec_mlp):
  """Trainable parameters of the released MaskedAutoencoderViT (no cls token, no pos tables)."""
  block = lambda d, m: 2 * (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
  encoder = (3 * patch * patch * width + width) + 2 * width + depth * block(width, mlp) + 2 * width
  decoder = ((width * dec_width + dec_width) + dec_width + 2 * dec_width
             + dec_depth * block(dec_width, dec_mlp) + 2 * dec_width
             + (dec_width * patch * patch * 3 + patch * patch * 3))
  return encoder + decoder


def test_vit_b_parameter_count_and_layout():
  model = mae.DropMAE(variant="B/16")
  shapes = jax.eval_shape(model.init, RNGS, jnp.zeros((1, 2, 224, 224, 3)))["params"]
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  assert count == released_param_count(768, 12, 3072, 16, 512, 8, 2048)
  # MAE's published ViT-B total (111,907,840) includes a cls token and the two fixed 197-row
  # tables and lacks our four frame embeddings.
  assert count - 2 * (768 + 512) + 768 + 197 * (768 + 512) == 111_907_840
  assert shapes["patch_embed"]["proj"]["kernel"].shape == (16, 16, 3, 768)
  assert shapes["blocks_0"]["attn"]["qkv"]["kernel"].shape == (768, 2304)
  assert shapes["blocks_11"]["mlp"]["fc2"]["kernel"].shape == (3072, 768)
  assert shapes["decoder_blocks_7"]["norm2"]["scale"].shape == (512,)
  assert shapes["mask_token"].shape == (1, 1, 512)
  assert shapes["temporal_pos_embed_z"].shape == (1, 1, 768)
  assert shapes["decoder_pred"]["kernel"].shape == (512, 768)


@pytest.mark.parametrize("variant,width,depth", [("S/16", 384, 12), ("L/16", 1024, 24),
                                                 ("H/14", 1280, 32)])
def test_other_sizes(variant, width, depth):
  size, patch = vit.decode_variant(variant)
  assert (size.width, size.depth, size.mlp_dim) == (width, depth, 4 * width)
  model = mae.DropMAE(variant=variant)
  shapes = jax.eval_shape(model.init, RNGS, jnp.zeros((1, 2, 224, 224, 3)))["params"]
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  assert count == released_param_count(width, depth, 4 * width, patch, 512, 8, 2048)


def test_bad_variant_names_the_field():
  with pytest.raises(ValueError, match="config.model.variant"):
    vit.decode_variant("B16")


def mae_sincos_table(dim, grid):
  """MAE util/pos_embed.py, restated: 'grid = meshgrid(w, h)', emb_h from grid[0], cls-free."""
  def one_d(d, pos):
    omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2.0))
    out = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
  rows = []
  for r in range(grid):
    for c in range(grid):
      rows.append(np.concatenate([one_d(dim // 2, np.array([c]))[0], one_d(dim // 2, np.array([r]))[0]]))
  return np.array(rows)


def test_sincos_table_matches_mae():
  np.testing.assert_allclose(vit.sincos_2d(768, 14), mae_sincos_table(768, 14), atol=1e-6)


def test_init_statistics():
  # The released widths (ViT-B encoder, 512-wide decoder); one decoder block, small frames and no
  # ASAD (no parameters) only make the program to compile smaller: the tensors checked are the same.
  model = mae.DropMAE(variant="B/16", img_size=32, decoder_depth=1, drop_ratio=0.0)
  params = jax.jit(model.init)(RNGS, jnp.zeros((1, 2, 32, 32, 3)))["params"]
  qkv = np.asarray(params["blocks_0"]["attn"]["qkv"]["kernel"])
  bound = math.sqrt(6 / (768 + 2304))
  assert np.abs(qkv).max() <= bound and np.abs(qkv).max() > 0.99 * bound
  conv = np.asarray(params["patch_embed"]["proj"]["kernel"])
  conv_bound = math.sqrt(6 / (3 * 16 * 16 + 768))  # xavier on the (768, 768) matrix view
  assert np.abs(conv).max() <= conv_bound and np.abs(conv).max() > 0.99 * conv_bound
  assert not np.asarray(params["blocks_0"]["attn"]["qkv"]["bias"]).any()
  np.testing.assert_array_equal(params["norm"]["scale"], 1.0)
  assert abs(float(np.std(params["mask_token"])) - 0.02) < 0.003
  assert abs(float(np.std(params["temporal_pos_embed_x"])) - 1.0) < 0.1


def test_random_masking_counts():
  plan = masking.random_plan(jax.random.key(0), 64, 196, 0.75)
  mask = np.asarray(plan.mask)
  np.testing.assert_array_equal(mask.sum(axis=1), 392 - 98)
  keep = np.asarray(plan.ids_keep)
  assert keep.shape == (64, 98)
  assert all(len(set(row)) == 98 for row in keep)
  np.testing.assert_array_equal(mask[np.arange(64)[:, None], keep], 0)
  # Joint masking: the split between frames varies from sample to sample (mean 49 each).
  in_x = (keep < 196).sum(axis=1)
  assert in_x.min() < 49 < in_x.max()
  assert abs(in_x.mean() - 49) < 2


def test_tube_masking_hides_the_same_positions():
  plan = masking.tube_plan(jax.random.key(1), 8, 196, 0.75)
  mask = np.asarray(plan.mask)
  np.testing.assert_array_equal(mask[:, :196], mask[:, 196:])
  np.testing.assert_array_equal(mask.sum(axis=1), 2 * (196 - 49))


def test_restore_puts_tokens_back():
  plan = masking.random_plan(jax.random.key(2), 3, 8, 0.5)
  order = np.concatenate([np.asarray(plan.ids_keep),
                          np.argsort(np.asarray(plan.mask), axis=1, kind="stable")[:, 8:]], axis=1)
  restored = np.take_along_axis(order, np.asarray(plan.ids_restore), axis=1)
  # Hidden slots come back in some order; visible ones must land at their own index.
  visible = np.asarray(plan.mask) == 0
  np.testing.assert_array_equal(restored[visible], np.broadcast_to(np.arange(16), (3, 16))[visible])


def numpy_targets(frames, p):
  """Per patch: flatten (p, q, c), subtract the mean, divide by sqrt(unbiased var + 1e-6)."""
  out = []
  for b in range(frames.shape[0]):
    rows = []
    for f in range(2):
      img = frames[b, f]
      for r in range(img.shape[0] // p):
        for c in range(img.shape[1] // p):
          patch = img[r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(-1).astype(np.float64)
          mean = patch.sum() / patch.size
          var = ((patch - mean) ** 2).sum() / (patch.size - 1)
          rows.append((patch - mean) / math.sqrt(var + 1e-6))
    out.append(rows)
  return np.array(out)


def test_norm_pix_target_uses_unbiased_variance():
  frames = np.asarray(jax.random.normal(jax.random.key(3), (2, 2, 32, 32, 3)))
  target = np.asarray(mae.pair_targets(jnp.asarray(frames), 16, True))
  np.testing.assert_allclose(target, numpy_targets(frames, 16), rtol=1e-4, atol=1e-5)


def test_loss_scores_hidden_patches_only():
  model = tiny_model()
  frames = jax.random.normal(jax.random.key(4), (2, 2, 64, 64, 3))
  # init and apply under jit here and below: one program each (op by op, the first model call
  # in a process compiles every op).
  variables = jax.jit(model.init)(RNGS, frames)
  rngs = {"masking": jax.random.key(5), "asad": jax.random.key(6)}
  out = jax.jit(model.apply)(variables, frames, rngs=rngs)
  assert out.pred.shape == (2, 32, 16 * 16 * 3) and out.mask.shape == (2, 32)
  loss = mae.reconstruction_loss(frames, out, 16)
  visible = (out.mask == 0)[..., None]
  nudged = out._replace(pred=jnp.where(visible, out.pred + 100.0, out.pred))
  np.testing.assert_allclose(mae.reconstruction_loss(frames, nudged, 16), loss, rtol=1e-6)
  target = mae.pair_targets(frames, 16, True)
  np.testing.assert_allclose(
      mae.reconstruction_loss(frames, out._replace(pred=target), 16), 0.0, atol=1e-6)
  # By hand: mean over hidden patches of the per-patch MSE.
  per_patch = np.mean((np.asarray(out.pred) - np.asarray(target)) ** 2, axis=-1)
  m = np.asarray(out.mask)
  np.testing.assert_allclose(loss, (per_patch * m).sum() / m.sum(), rtol=1e-5)


def test_patchify_roundtrip():
  x = jax.random.normal(jax.random.key(7), (2, 48, 32, 3))
  np.testing.assert_array_equal(mae.unpatchify(mae.patchify(x, 16), 16, 48, 32), x)


def test_bf16_and_tube_and_encoder_asad_run():
  frames = jax.random.normal(jax.random.key(8), (2, 2, 64, 64, 3))
  for model in (tiny_model(dtype="bfloat16"), tiny_model(masking="tube"),
                tiny_model(asad_in_encoder=True, mask_ratio=0.5)):
    variables = jax.jit(model.init)(RNGS, frames)
    out = jax.jit(model.apply)(variables, frames, rngs={"masking": jax.random.key(1),
                                                         "asad": jax.random.key(2)})
    assert jnp.isfinite(mae.reconstruction_loss(frames, out, 16))
    assert jax.tree.leaves(variables)[0].dtype == jnp.float32


def test_twinmae_has_no_asad_randomness():
  """drop_ratio 0 ignores the 'asad' stream; with it, different asad keys change the output."""
  frames = jax.random.normal(jax.random.key(9), (2, 2, 64, 64, 3))
  for ratio, should_differ in ((0.0, False), (0.3, True)):
    model = tiny_model(drop_ratio=ratio)
    variables = jax.jit(model.init)(RNGS, frames)
    apply = jax.jit(model.apply)
    run = lambda k: apply(variables, frames, rngs={"masking": jax.random.key(1),
                                                   "asad": jax.random.key(k)}).pred
    assert bool(jnp.any(run(1) != run(2))) == should_differ
