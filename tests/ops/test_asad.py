"""ASAD reference against the released algorithm (jimmy-dq/DropMAE `models_mae.py`; its steps are
restated in docs/pretraining.md) written independently in numpy."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dropmae_jax.ops.asad import attention as asad
from dropmae_jax.ops.asad import hashing


def numpy_drop_weights(logits: np.ndarray, temporal: str = "max") -> np.ndarray:
  """ASAD steps 1-3 (docs/pretraining.md) query by query, one (b, h): logits (L, L) -> W (L, L)."""
  length = logits.shape[0]
  n = length // 2
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs = e / e.sum(axis=1, keepdims=True)
  weights = np.zeros_like(probs)
  for i in range(length):
    own = range(0, n) if i < n else range(n, length)
    other = range(n, length) if i < n else range(0, n)
    t = (max(probs[i, j] for j in other) if temporal == "max"
         else sum(probs[i, j] for j in other)) + 1e-6
    a = {j: (probs[i, j] + 1e-6 if j != i else 0.0) for j in own}
    total = sum(a.values())
    for j in own:
      weights[i, j] = a[j] / total * t
  return weights


def sequential_sample(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  """torch.multinomial(replacement=False) semantics: k successive draws ∝ remaining weight."""
  w = weights.ravel().astype(np.float64).copy()
  chosen = np.zeros(w.shape, bool)
  for _ in range(k):
    idx = rng.choice(w.size, p=w / w.sum())
    chosen[idx] = True
    w[idx] = 0.0
  return chosen.reshape(weights.shape)


def random_logits(key, shape, scale=2.0):
  return scale * jax.random.normal(key, shape, jnp.float32)


def test_hash_matches_numpy_twin_and_is_uniform():
  b, h, i, j = np.meshgrid(np.arange(3), np.arange(2), np.arange(16), np.arange(16), indexing="ij")
  bits_jax = np.asarray(hashing.cell_bits(jnp.uint32(1234), *(jnp.asarray(x, jnp.uint32)
                                                             for x in (b, h, i, j))))
  bits_np = hashing.cell_bits_numpy(1234, b, h, i, j)
  np.testing.assert_array_equal(bits_jax, bits_np)
  u = np.asarray(hashing.bits_to_open_unit(jnp.asarray(bits_np)))
  assert 0 < u.min() and u.max() < 1
  assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / u.size)
  # Gumbel variates: mean = Euler-Mascheroni constant, variance = pi^2 / 6.
  g = np.asarray(hashing.cell_gumbel(jnp.uint32(7), 8, 4, 64))
  assert abs(g.mean() - 0.5772) < 4 * math.sqrt(math.pi ** 2 / 6 / g.size)
  assert abs(g.var() - math.pi ** 2 / 6) < 0.05


@pytest.mark.parametrize("temporal", ["max", "sum"])
def test_weights_match_design(temporal):
  logits = random_logits(jax.random.key(0), (2, 3, 10, 10))
  w = np.asarray(asad.drop_weights(logits, asad.halves_frame_ids(2, 10), temporal))
  for b in range(2):
    for h in range(3):
      np.testing.assert_allclose(w[b, h], numpy_drop_weights(np.asarray(logits[b, h]), temporal),
                                 rtol=2e-5, atol=1e-9)


@pytest.mark.parametrize("length,ratio", [(392, 0.1), (16, 0.3), (8, 0.5)])
def test_exactly_k_same_frame_off_diagonal(length, ratio):
  batch, heads = 2, 3
  logits = random_logits(jax.random.key(1), (batch, heads, length, length))
  mask = np.asarray(asad.drop_mask_reference(logits, jnp.uint32(5), drop_ratio=ratio))
  k = asad.num_dropped_cells(length, ratio)
  n = length // 2
  assert k == int(ratio * (n - 1)) * length
  np.testing.assert_array_equal(mask.sum(axis=(2, 3)), np.full((batch, heads), k))
  frame = np.arange(length) >= n
  cross = frame[:, None] != frame[None, :]
  assert not mask[..., cross].any(), "dropped a cell in the other frame"
  assert not mask[..., np.arange(length), np.arange(length)].any(), "dropped the diagonal"


def test_released_sample_num_for_224():
  assert asad.num_dropped_cells(392, 0.1) == 7448  # floor(0.1 * 195) * 392, as models_mae.py


def test_mask_is_the_k_largest_int_keys_lower_index_first():
  """The float-ranked top-k in `drop_mask_reference` picks what a stable numpy sort of the int32
  keys picks, also when logits (and so keys) tie: coarse integer logits, temporal 'max'."""
  rng = np.random.default_rng(3)
  logits = jnp.asarray(rng.integers(-2, 3, (2, 3, 24, 24)), jnp.float32)
  for seed in (0, 7):
    keys = np.asarray(asad.drop_keys_reference(logits, jnp.uint32(seed))).reshape(2, 3, -1)
    mask = np.asarray(asad.drop_mask_reference(logits, jnp.uint32(seed), drop_ratio=0.25))
    k = asad.num_dropped_cells(24, 0.25)
    for b in range(2):
      for h in range(3):
        flat = np.arange(keys.shape[-1])
        order = np.lexsort((flat, -keys[b, h].astype(np.int64)))   # key desc, then index asc
        expected = np.zeros(keys.shape[-1], bool)
        expected[order[:k]] = keys[b, h, order[:k]] > 0
        np.testing.assert_array_equal(mask[b, h].reshape(-1), expected)


def test_seed_determinism_and_variation():
  logits = random_logits(jax.random.key(2), (1, 2, 16, 16))
  m1 = asad.drop_mask_reference(logits, jnp.uint32(3), drop_ratio=0.3)
  m2 = asad.drop_mask_reference(logits, jnp.uint32(3), drop_ratio=0.3)
  m3 = asad.drop_mask_reference(logits, jnp.uint32(4), drop_ratio=0.3)
  np.testing.assert_array_equal(m1, m2)
  assert (np.asarray(m1) != np.asarray(m3)).any()


def test_batch_offset_reproduces_rows_of_the_full_batch():
  logits = random_logits(jax.random.key(9), (4, 2, 16, 16))
  full = asad.drop_mask_reference(logits, jnp.uint32(11), drop_ratio=0.3)
  tail = asad.drop_mask_reference(logits[2:], jnp.uint32(11), drop_ratio=0.3, batch_offset=2)
  np.testing.assert_array_equal(full[2:], tail)


@pytest.mark.parametrize("temporal", ["max", "sum"])
def test_inclusion_frequencies_match_sequential_sampler(temporal):
  """Gumbel-top-K over hashed keys vs torch.multinomial-style sequential draws, in numpy."""
  length, ratio = 8, 0.5                     # n = 4, K = floor(0.5 * 3) * 8 = 8 of 24 cells
  trials = 6000
  logits = random_logits(jax.random.key(3), (1, 1, length, length), scale=1.5)
  weights = numpy_drop_weights(np.asarray(logits[0, 0]), temporal)
  k = asad.num_dropped_cells(length, ratio)
  # Independent trials = batch rows (each row hashes its own b index).
  tiled = jnp.broadcast_to(logits, (trials, 1, length, length))
  masks = np.asarray(asad.drop_mask_reference(tiled, jnp.uint32(17), drop_ratio=ratio,
                                              temporal=temporal))
  freq_jax = masks[:, 0].mean(axis=0)
  rng = np.random.default_rng(0)
  freq_np = np.mean([sequential_sample(weights, k, rng) for _ in range(trials)], axis=0)
  eligible = weights > 0
  p = (freq_jax[eligible] + freq_np[eligible]) / 2
  sigma = np.sqrt(2 * p * (1 - p) / trials) + 1e-3
  z = np.abs(freq_jax[eligible] - freq_np[eligible]) / sigma
  assert z.max() < 4.5, f"max z-score {z.max():.2f}"
  assert freq_jax[~eligible].max() == 0
  # The sampler is not uniform: heavier cells are dropped more often.
  assert np.corrcoef(weights[eligible], freq_jax[eligible])[0, 1] > 0.5


def test_zero_ratio_is_plain_attention():
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 12, 3, 8)) for i in range(3))
  out = asad.asad_attention(q, k, v, seed=jnp.uint32(0), drop_ratio=0.0)
  np.testing.assert_allclose(out, asad.attention_reference(q, k, v), rtol=1e-5, atol=1e-5)


def _naive_attention(q, k, v, drop_mask):
  """Per (b, h) loops with -inf, as the released Attention_Dec does."""
  q, k, v, drop_mask = map(np.asarray, (q, k, v, drop_mask))
  out = np.zeros_like(q)
  for b in range(q.shape[0]):
    for h in range(q.shape[2]):
      s = q[b, :, h] @ k[b, :, h].T / math.sqrt(q.shape[-1])
      s[drop_mask[b, h]] = -np.inf
      p = np.exp(s - s.max(axis=1, keepdims=True))
      out[b, :, h] = (p / p.sum(axis=1, keepdims=True)) @ v[b, :, h]
  return out


def test_masked_output_and_no_gradient_through_sampling():
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 16, 2, 8)) for i in range(3))
  seed = jnp.uint32(21)
  out = asad.asad_attention(q, k, v, seed=seed, drop_ratio=0.3)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(8)
  fixed_mask = asad.drop_mask_reference(logits, seed, drop_ratio=0.3)
  np.testing.assert_allclose(out, _naive_attention(q, k, v, fixed_mask), rtol=1e-5, atol=1e-5)
  # Gradients equal those of attention with the mask held constant: nothing flows through
  # the weights W or the selection.
  loss = lambda fn: (lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v))))
  g_asad = jax.grad(loss(lambda q, k, v: asad.asad_attention(q, k, v, seed=seed, drop_ratio=0.3)),
                    argnums=(0, 1, 2))(q, k, v)
  g_fixed = jax.grad(loss(lambda q, k, v: asad.attention_reference(q, k, v, fixed_mask)),
                     argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(g_asad, g_fixed):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["reference", "pallas_gpu"])
def test_masked_attention_by_dot_product_attention(impl):
  """asad.masked_attention='cudnn': the impl selects the cells, jax.nn.dot_product_attention hides
  them (XLA's on a CPU, cuDNN's on a GPU). Same cells as the reference draw, the output of the
  released per-(b, h) loop, and the gradients of attention with that mask held constant."""
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 32, 2, 16)) for i in range(3))
  seed = jnp.uint32(33)
  attention = lambda q, k, v: asad.asad_attention(q, k, v, seed=seed, drop_ratio=0.3, impl=impl,
                                                  masked_attention="cudnn")
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)
  fixed_mask = asad.drop_mask_reference(scores, seed, drop_ratio=0.3, scale=1 / math.sqrt(16))
  assert int(fixed_mask.sum()) == 2 * 2 * asad.num_dropped_cells(32, 0.3)
  np.testing.assert_allclose(jax.jit(attention)(q, k, v), _naive_attention(q, k, v, fixed_mask),
                             rtol=1e-5, atol=1e-5)
  loss = lambda fn: (lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v))))
  got = jax.jit(jax.grad(loss(attention), argnums=(0, 1, 2)))(q, k, v)
  want = jax.grad(loss(lambda q, k, v: asad.attention_reference(q, k, v, fixed_mask)),
                  argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_masked_attention_by_dot_product_attention_sharded():
  """Under a 4 x 2 mesh the kernels select per shard (global batch rows) and the library
  attention runs on the shard: the same values and gradients as on one device."""
  from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
  q, k, v = (jax.random.normal(jax.random.key(i), (8, 32, 2, 16)) for i in range(3))
  seed = jnp.uint32(4)
  loss = lambda q, k, v: jnp.sum(jnp.sin(asad.asad_attention(
      q, k, v, seed=seed, drop_ratio=0.3, impl="pallas_gpu", masked_attention="cudnn")))
  single = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "fsdp"),
              axis_types=(AxisType.Auto,) * 2)
  sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  with jax.set_mesh(mesh):
    sharded = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(
        *(jax.device_put(x, sharding) for x in (q, k, v)))
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_frame_ids_for_unequal_frames():
  """Encoder ablation: visible tokens split unevenly between frames."""
  frame_ids = jnp.asarray([[0] * 10 + [1] * 4])
  logits = random_logits(jax.random.key(5), (1, 2, 14, 14))
  mask = np.asarray(asad.drop_mask_reference(logits, jnp.uint32(1), drop_ratio=0.5,
                                             frame_ids=frame_ids))
  fid = np.asarray(frame_ids[0])
  assert not mask[..., fid[:, None] != fid[None, :]].any()
  assert not mask[..., np.arange(14), np.arange(14)].any()
  np.testing.assert_array_equal(mask.sum(axis=(2, 3)), asad.num_dropped_cells(14, 0.5))


def test_bad_arguments_are_named():
  x = jnp.zeros((1, 7, 2, 4))
  with pytest.raises(ValueError, match="odd"):
    asad.asad_attention(x, x, x, seed=jnp.uint32(0), drop_ratio=0.1)
  y = jnp.zeros((1, 8, 2, 4))
  with pytest.raises(ValueError, match="drop_ratio"):
    asad.asad_attention(y, y, y, seed=jnp.uint32(0), drop_ratio=1.5)
  with pytest.raises(ValueError, match="impl"):
    asad.asad_attention(y, y, y, seed=jnp.uint32(0), drop_ratio=0.1, impl="nope")
  with pytest.raises(ValueError, match="config.asad.masked_attention 'flash'"):
    asad.asad_attention(y, y, y, seed=jnp.uint32(0), drop_ratio=0.1, masked_attention="flash")
