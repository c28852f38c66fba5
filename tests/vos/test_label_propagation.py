"""Frame features and DINO's label propagation: DropMAE.encode_all for the features, torch's
F.interpolate, DINO's propagation written with loops in numpy, a known shift recovered."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dropmae_jax.vos import features
from dropmae_jax.vos import metrics
from dropmae_jax.vos import propagate

from vos_cases import micro_config, micro_params, released_file  # noqa: F401,I100  (fixtures)


def test_fresh_encoder_params_are_converts_fresh_params_minus_the_decoder():
  from dropmae_jax.convert.__main__ import fresh_params
  config = micro_config(img_size=32)
  config.asad.drop_ratio = 0.0   # ASAD has no parameters; without it the full init compiles fast
  full, enc = fresh_params(config), features.fresh_encoder_params(config)
  assert set(full) - set(enc) == {"decoder_embed", "decoder_blocks_0", "decoder_norm",
                                  "decoder_pred"}
  jax.tree.map(np.testing.assert_array_equal, enc, {k: full[k] for k in enc})


# ------------------------------------------------------------------------------------------
# features

def test_input_size_is_dinos_rule():
  assert features.input_size(480, 854) == (480, 832)
  assert features.input_size(854, 480) == (832, 480)
  assert features.input_size(160, 224, short_side=-1, size_multiple=16) == (160, 224)
  assert features.input_size(160, 230, short_side=-1, size_multiple=16) == (160, 224)


def test_resize_frame_equals_opencv():
  cv2 = pytest.importorskip("cv2")
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
  for h, w in ((96, 128), (32, 48), (50, 64)):
    np.testing.assert_array_equal(features.resize_frame(image, h, w),
                                  cv2.resize(image, (w, h)))


@pytest.mark.parametrize("mode,half", [("x", 0), ("z", 1)])
def test_features_equal_encode_all_at_training_resolution(micro_params, mode, half):
  """With both frame embeddings set equal, encode_all([f, f]) is the single-frame encoder twice
  (attention over duplicated keys is attention over one copy)."""
  from dropmae_jax.models import mae
  params, config = micro_params
  params = jax.tree.map(np.array, params)
  source = "temporal_pos_embed_" + ("x" if mode == "x" else "z")
  for name in ("temporal_pos_embed_x", "temporal_pos_embed_z"):
    params[name] = params[source].copy()
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
  model = mae.DropMAE.from_config(config)
  pairs = mae.normalize_frames(jnp.asarray(np.stack([frames, frames], axis=1)))
  want = model.apply({"params": params}, pairs, method=mae.DropMAE.encode_all)
  n = model.tokens_per_frame
  encoder = features.FrameEncoder(params, config, frame_embed=mode, batch_size=2)
  got = encoder(frames)
  assert got.shape == (3, n, 64)
  np.testing.assert_allclose(got, want[:, half * n:(half + 1) * n], atol=2e-5, rtol=1e-5)


def test_frame_embed_modes_differ_only_by_the_embedding(micro_params):
  params, config = micro_params
  frames = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  encoder = features.FrameEncoder(params, config)
  out = {}
  for mode in features.FRAME_EMBEDS:   # host-side weights: one compiled function serves all
    encoder.frame_embed = mode
    out[mode] = np.asarray(encoder(frames))
  np.testing.assert_allclose(out["z_first"][0], out["z"][0], atol=1e-6)
  np.testing.assert_allclose(out["z_first"][1], out["x"][1], atol=1e-6)
  assert np.abs(out["x"] - out["none"]).max() > 1e-3
  assert np.abs(out["x"] - out["z"]).max() > 1e-3
  # A non-square grid other than the training one runs (pos table resized bicubically).
  wide = np.random.default_rng(3).integers(0, 256, (1, 48, 80, 3), dtype=np.uint8)
  assert encoder(wide).shape == (1, 15, 64)


def test_load_weights_from_a_released_file(micro_params, released_file):
  params, _ = micro_params
  loaded, cfg, _ = features.load_weights(released_file)
  assert cfg.model.variant == "micro/16" and cfg.model.img_size == 64
  for name in ("temporal_pos_embed_x", "temporal_pos_embed_z", "patch_embed", "blocks_1", "norm"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), loaded[name],
                 params[name])

# ------------------------------------------------------------------------------------------
# label propagation

def dino_label_propagation(target, sources, segs, size, topk, temperature, h, w):
  """DINO's label_propagation, straightforwardly in numpy (loops for the neighbourhood)."""
  mask = np.zeros((h, w, h, w))
  for i in range(h):
    for j in range(w):
      for p in range(2 * size + 1):
        for q in range(2 * size + 1):
          ii, jj = i - size + p, j - size + q
          if 0 <= ii < h and 0 <= jj < w:
            mask[i, j, ii, jj] = 1
  mask = mask.reshape(h * w, h * w)
  norm = lambda f: f / np.linalg.norm(f, axis=-1, keepdims=True)
  target, sources = norm(target), norm(sources)
  aff = np.exp(np.einsum("qd,nkd->nqk", target, sources) / temperature) * mask[None]
  aff = aff.transpose(0, 2, 1).reshape(-1, h * w)     # (n·keys, queries)
  kth = np.sort(aff, axis=0)[-topk]
  aff[aff < kth] = 0
  aff = aff / aff.sum(axis=0, keepdims=True)
  labels = segs.reshape(-1, segs.shape[-1]).T           # (C, n·keys)
  return (labels @ aff).T                               # (queries, C)


def test_propagate_labels_equals_dino_loops():
  rng = np.random.default_rng(0)
  h, w, d, c, n = 4, 5, 8, 3, 3
  target = rng.normal(size=(h * w, d))
  sources = rng.normal(size=(n, h * w, d))
  segs = rng.random((n, h * w, c))
  want = dino_label_propagation(target, sources, segs, 1, 5, 0.1, h, w)
  norm = lambda f: f / np.linalg.norm(f, axis=-1, keepdims=True)
  # Two extra invalid context slots with garbage must change nothing.
  feats = np.concatenate([norm(sources), rng.normal(size=(2, h * w, d))])
  labels = np.concatenate([segs, rng.random((2, h * w, c))])
  valid = np.array([1, 1, 1, 0, 0], np.float32)
  got = propagate.propagate_labels(
      jnp.asarray(norm(target), jnp.float32), jnp.asarray(feats, jnp.float32),
      jnp.asarray(labels, jnp.float32), jnp.asarray(valid),
      jnp.asarray(propagate.neighborhood_mask(h, w, 1)), topk=5, temperature=0.1)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_labels_to_ids_equals_torch_upsample_norm_argmax():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  h, w, c, p = 3, 5, 4, 8
  soft = rng.random((h, w, c)).astype(np.float32)
  soft[..., 3] = 0            # an all-zero channel is left alone by norm_mask
  up = torch.nn.functional.interpolate(torch.from_numpy(soft.transpose(2, 0, 1))[None],
                                       scale_factor=p, mode="bilinear", align_corners=False,
                                       recompute_scale_factor=False)[0]
  for k in range(c):          # DINO's norm_mask
    if up[k].max() > 0:
      up[k] = (up[k] - up[k].min()) / (up[k] - up[k].min()).max()
  want = torch.argmax(up, dim=0).numpy()
  got = propagate.labels_to_ids(jnp.asarray(soft), jnp.asarray(propagate.upsample_matrix(h, p)),
                                jnp.asarray(propagate.upsample_matrix(w, p)))
  np.testing.assert_array_equal(np.asarray(got), want)


class TableEncoder:
  """Toy encoder: frame t's features are a fixed table (T, h·w, D); reads pixel [0, 0, 0] as t."""

  def __init__(self, table, patch_size):
    self.table, self.patch_size = jnp.asarray(table, jnp.float32), patch_size

  def __call__(self, frames):
    return self.table[np.asarray(frames)[:, 0, 0, 0].astype(int)]


def test_propagate_sequence_equals_dino_queue_loop():
  """Whole sequence vs DINO's loop: first frame + queue of the last n soft labels."""
  rng = np.random.default_rng(2)
  T, h, w, d, p, n_last, k = 9, 3, 4, 6, 4, 3, 2
  table = rng.normal(size=(T, h * w, d))
  frames = np.zeros((T, h * p, w * p, 3), np.uint8)
  frames[:, 0, 0, 0] = np.arange(T)
  first = np.zeros((h * p, w * p), np.uint8)
  first[:p * 2, :p * 2] = 1
  first[p * 2:, p * 3:] = 2
  proto = propagate.Protocol(n_last_frames=n_last, size_mask_neighborhood=1, topk=k,
                             temperature=0.1, short_side=-1, size_multiple=p)
  got = dict(propagate.propagate_sequence(TableEncoder(table, p), frames, first, 2, proto))
  # Reference.
  small = np.asarray(Image.fromarray(first).resize((w, h), Image.NEAREST)).reshape(-1)
  first_seg = np.eye(3)[small]
  queue = []
  up_h, up_w = propagate.upsample_matrix(h, p), propagate.upsample_matrix(w, p)
  for t in range(1, T):
    sources = np.stack([table[0]] + [f for f, _ in queue])
    segs = np.stack([first_seg] + [s for _, s in queue])
    soft = dino_label_propagation(table[t], sources, segs, 1, k, 0.1, h, w)
    if len(queue) == n_last:
      queue.pop(0)
    queue.append((table[t], soft))
    up = np.einsum("Hh,hwc,Ww->cHW", up_h, soft.reshape(h, w, 3), up_w)
    for c in range(3):
      if up[c].max() > 0:
        up[c] = (up[c] - up[c].min()) / (up[c] - up[c].min()).max()
    np.testing.assert_array_equal(got[t], up.argmax(0), err_msg=f"frame {t}")
  np.testing.assert_array_equal(got[0], first)


def test_propagation_recovers_a_known_shift():
  """Features = one-hot codes of the scene position under each patch; frame t is frame 0 rolled
  by t·(1, 2) patches, so the labels must roll with it."""
  h, w, p, T = 6, 8, 4, 5
  codes = np.arange(h * w).reshape(h, w)
  shift = (1, 2)
  grids = [np.roll(codes, (t * shift[0], t * shift[1]), axis=(0, 1)) for t in range(T)]
  table = np.stack([np.eye(h * w)[g.reshape(-1)] for g in grids])
  frames = np.zeros((T, h * p, w * p, 3), np.uint8)
  frames[:, 0, 0, 0] = np.arange(T)
  first = np.zeros((h * p, w * p), np.uint8)
  first[1 * p:3 * p, 1 * p:4 * p] = 1
  first[3 * p:5 * p, 5 * p:7 * p] = 2
  proto = propagate.Protocol(size_mask_neighborhood=0, short_side=-1, size_multiple=p)
  out = dict(propagate.propagate_sequence(TableEncoder(table, p), frames, first, 2, proto))
  small = first[p // 2::p, p // 2::p]   # the label of each patch
  for t in range(1, T):
    want = np.roll(first, (t * shift[0] * p, t * shift[1] * p), axis=(0, 1))
    # Every patch centre carries the shifted label; bilinear upsampling only rounds the
    # objects' corners (DINO's output does the same), so the masks overlap almost fully.
    np.testing.assert_array_equal(out[t][p // 2::p, p // 2::p],
                                  np.roll(small, (t * shift[0], t * shift[1]), axis=(0, 1)),
                                  err_msg=f"frame {t}")
    for k in (1, 2):
      assert metrics.db_eval_iou(want == k, out[t] == k) > 0.9, (t, k)

