"""Pallas ASAD kernels (interpret mode on CPU) against the jnp reference and lax.top_k."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dropmae_jax.ops.asad import attention as asad
from dropmae_jax.ops import dispatch
from dropmae_jax.ops.asad import kernels as asad_pallas
from dropmae_jax.ops.asad import plan as asad_plan
from dropmae_jax.ops.asad import select as asad_select


def frame_blocked_scores(q, k, plan):
  """Raw q·k (B, H, L, L) computed per frame pair at the kernels' padded shapes.

  XLA's CPU matmul rounds differently for different matrix sizes, so the reference gets its
  logits from matmuls of the same shapes as the kernels' blocks; everything after is its own.
  """
  qp = asad_pallas.to_padded(q, plan).reshape(plan.batch, plan.heads, 2, plan.padded, -1)
  kp = asad_pallas.to_padded(k, plan).reshape(plan.batch, plan.heads, 2, plan.padded, -1)
  s = jnp.einsum("bhfqd,bhgkd->bhfqgk", qp, kp, preferred_element_type=jnp.float32)
  n = plan.frame_len
  return s[:, :, :, :n, :, :n].reshape(plan.batch, plan.heads, 2 * n, 2 * n)


def inputs(shape, dtype=jnp.float32, scale=1.5):
  return tuple((scale if i < 2 else 1.0) * jax.random.normal(jax.random.key(i), shape, dtype)
               for i in range(3))


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
@pytest.mark.parametrize("shape,temporal,ratio", [
    ((2, 40, 2, 32), "max", 0.3),
    ((1, 40, 3, 64), "sum", 0.1),
    ((2, 392, 2, 32), "max", 0.1),     # the 224² decoder: n = 196, K = 19 · 392
])
def test_masks_identical_to_reference(backend, shape, temporal, ratio):
  q, k, _ = inputs(shape)
  plan = asad_pallas.make_plan(shape, drop_ratio=ratio, temporal=temporal, backend=backend,
                               interpret=True)
  scores = frame_blocked_scores(q, k, plan)
  for seed in (0, 1, 2 ** 31 + 5):
    seed = jnp.uint32(seed)
    keys, tau, cutoff = asad_pallas.drop_selection(q, k, seed, plan, batch_offset=3)
    mask = np.asarray(asad_pallas.dense_mask(keys, tau, cutoff, plan))
    ref = np.asarray(asad.drop_mask_reference(scores, seed, drop_ratio=ratio, temporal=temporal,
                                              batch_offset=3, scale=plan.scale))
    np.testing.assert_array_equal(mask, ref)
    assert (mask.sum(axis=(2, 3)) == plan.num_drop).all()
    # Keys: same formulas and hash; XLA's CPU fusions may round a few float ops differently
    # (reciprocal-multiplies, FMAs), measured at <= 4 ulp.
    ref_keys = asad.drop_keys_reference(scores, seed, temporal=temporal, batch_offset=3,
                                        scale=plan.scale)
    ulps = np.abs(np.asarray(asad_pallas.dense_keys(keys, plan), np.int64) - np.asarray(ref_keys))
    assert ulps.max() <= 8, ulps.max()
    assert ((np.asarray(ref_keys) > 0) == (np.asarray(asad_pallas.dense_keys(keys, plan)) > 0)).all()


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_select_breaks_ties_like_top_k(backend):
  """Keys from a tiny range tie massively at τ: the cutoff must pick lower flat indices first."""
  shape = (2, 40, 2, 32)
  plan = asad_pallas.make_plan(shape, drop_ratio=0.3, temporal="max", backend=backend,
                               interpret=True)
  n, npad = plan.frame_len, plan.padded
  rng = np.random.default_rng(0)
  slab = np.zeros((2, 2, 2, npad, npad), np.int32)
  slab[:, :, :, :n, :n] = rng.integers(1, 6, size=(2, 2, 2, n, n))
  for i in range(n):
    slab[:, :, :, i, i] = 0                        # the diagonal is never eligible
  keys = jnp.asarray(slab.reshape(2, 2, 2 * npad, npad))
  tau, cutoff = asad_pallas.select_threshold(keys, plan)
  mask = np.asarray(asad_pallas.dense_mask(keys, tau, cutoff, plan))
  expected = top_k_mask(keys, plan)
  np.testing.assert_array_equal(mask.reshape(expected.shape), expected)
  assert (np.asarray(cutoff) < plan.length ** 2 - 1).all()   # the tie search really ran


def top_k_threshold(keys, plan):
  """τ by lax.top_k on the dense keys: the K-th largest per (b, h) (an independent reference)."""
  dense = asad_pallas.dense_keys(keys, plan).reshape(plan.batch, plan.heads, -1)
  return np.asarray(jax.lax.top_k(dense, plan.num_drop)[0][..., -1])


def top_k_mask(keys, plan):
  """The cells lax.top_k keeps (lower flat index first on ties), (B, H, L·L) bool."""
  dense = asad_pallas.dense_keys(keys, plan).reshape(plan.batch, plan.heads, -1)
  _, index = jax.lax.top_k(dense, plan.num_drop)
  expected = np.zeros(dense.shape, bool)
  np.put_along_axis(expected, np.asarray(index), True, axis=-1)
  return expected


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_gpu_select_finds_tau_from_gathered_cells_without_the_full_search(scale):
  """224² decoder keys (flat and peaked attention): the sampled bracket holds τ, the counting
  passes stop at <= 64 bracket cells, the gathered cells hold the K-th key, and no (b, h) needs
  the full search — also where two keys tie at τ (head 2 at scale 1: the gathered flat indices
  give the cutoff)."""
  shape = (1, 392, 3, 32)
  plan = asad_pallas.make_plan(shape, drop_ratio=0.1, temporal="max", backend="gpu",
                               interpret=True)
  q, k, _ = inputs(shape, scale=scale)
  keys = asad_pallas.sampling_keys(asad_pallas.to_padded(q, plan), asad_pallas.to_padded(k, plan),
                                   jnp.uint32(5), 0, plan)
  tau, cutoff, exact_needed, passes = jax.jit(lambda x: asad_select.bracket_select(x, plan))(keys)
  assert not np.asarray(exact_needed).any()
  # The sample's bracket held τ: its checking pass and at most two more (8 without it).
  assert (np.asarray(passes) <= 3).all(), passes
  np.testing.assert_array_equal(np.asarray(tau), top_k_threshold(keys, plan))
  mask = np.asarray(asad_pallas.dense_mask(keys, tau, cutoff, plan))
  np.testing.assert_array_equal(mask.reshape(plan.batch, plan.heads, -1), top_k_mask(keys, plan))
  tau_full, cutoff_full = asad_pallas.exact_select(keys, plan)
  np.testing.assert_array_equal(np.asarray(cutoff), np.asarray(cutoff_full))


def test_gpu_select_sample_spreads_over_rows_and_columns():
  """4 evenly spaced columns of every real slab row (13 blocks of 16 rows a frame at n = 196), at
  hashed offsets that reach nearly every column (a fixed offset would reach 4 of 256)."""
  plan = asad_pallas.make_plan((1, 392, 1, 32), drop_ratio=0.1, temporal="max", backend="gpu",
                               interpret=True)
  cells = asad_select.sample_cells(plan)
  rows, cols = np.divmod(cells, plan.padded)
  real = np.concatenate([np.arange(208), 256 + np.arange(208)])
  np.testing.assert_array_equal(np.unique(rows), real)
  assert (np.bincount(rows)[real] == 4).all()
  assert (np.diff(cols.reshape(-1, 4), axis=1) == 64).all()
  assert len(np.unique(cols)) >= 0.95 * plan.padded


def test_gpu_select_stays_exact_when_the_sample_misleads():
  """Every sampled cell made the largest key: the sample's bracket lies above τ, its checking pass
  finds that, and the search continues below it to lax.top_k's cells."""
  shape = (1, 392, 1, 32)
  plan = asad_pallas.make_plan(shape, drop_ratio=0.1, temporal="max", backend="gpu",
                               interpret=True)
  q, k, _ = inputs(shape)
  keys = asad_pallas.sampling_keys(asad_pallas.to_padded(q, plan), asad_pallas.to_padded(k, plan),
                                   jnp.uint32(8), 0, plan)
  flat = np.asarray(keys).reshape(-1).copy()
  cells = asad_select.sample_cells(plan)
  real = np.asarray(asad_pallas.dense_keys(keys, plan)).max()
  flat[cells] = np.where(flat[cells] > 0, real + 1000 + np.arange(len(cells)), 0)
  keys = jnp.asarray(flat.reshape(keys.shape))
  tau, cutoff, exact_needed, passes = asad_select.bracket_select(keys, plan)
  assert int(passes[0, 0]) > 3
  assert not np.asarray(exact_needed).any()
  mask = np.asarray(asad_pallas.dense_mask(keys, tau, cutoff, plan))
  np.testing.assert_array_equal(mask.reshape(1, 1, -1), top_k_mask(keys, plan))


def test_gpu_select_falls_back_to_the_full_search_when_a_group_overflows():
  """31 keys around the K-th, one apart, while every other key is 10^4 away: the bracket ends
  holding all 31. Head 0 has them in one row's first 32 columns, a group that gathers 4: the full
  search must take over — for that head only — and still return lax.top_k's cells. Head 1 has
  them one per row: gathered, no full search."""
  shape = (1, 392, 2, 32)
  plan = asad_pallas.make_plan(shape, drop_ratio=0.1, temporal="max", backend="gpu",
                               interpret=True)
  n, npad, kth = plan.frame_len, plan.padded, plan.num_drop

  def slab_with_cluster(cluster):
    slab = np.zeros((2, npad, npad), np.int64)
    eligible = np.zeros((2, npad, npad), bool)
    eligible[:, :n, :n] = ~np.eye(n, dtype=bool)
    for cell in cluster:
      eligible[cell] = False
    others = np.argwhere(eligible)
    others = others[np.random.default_rng(3).permutation(len(others))]
    # Ranks (1 = largest): 1..K-16 far above the cluster, K-15..K+15 the cluster, the rest below.
    above = kth - 16
    base = 10 ** 4 * (len(others) + 10)
    slab[tuple(others[:above].T)] = base + 10 ** 4 * np.arange(above, 0, -1)
    slab[tuple(np.array(cluster).T)] = base - np.arange(1, 32)
    slab[tuple(others[above:].T)] = base - 10 ** 4 * np.arange(1, len(others) - above + 1)
    assert slab.max() < 2 ** 31 and slab[slab > 0].min() > 0
    return slab.reshape(2 * npad, npad), base

  one_group, base = slab_with_cluster([(0, 40, c) for c in range(31)])  # row 40, columns 0..30
  one_a_row, _ = slab_with_cluster([(0, 40 + r, 1) for r in range(31)])  # rows 40..70, column 1
  keys = jnp.asarray(np.stack([one_group, one_a_row])[None].astype(np.int32))
  _, _, exact_needed, _ = asad_select.bracket_select(keys, plan)
  np.testing.assert_array_equal(np.asarray(exact_needed), [[True, False]])
  tau, cutoff = asad_pallas.select_threshold(keys, plan)
  np.testing.assert_array_equal(np.asarray(tau), top_k_threshold(keys, plan))
  assert (np.asarray(tau) == base - 16).all()             # rank K: the cluster's 16th
  mask = np.asarray(asad_pallas.dense_mask(keys, tau, cutoff, plan))
  np.testing.assert_array_equal(mask.reshape(1, 2, -1), top_k_mask(keys, plan))
  # The fallback searches only the heads asked for: head 1's program makes no pass (its τ stays
  # the search's starting bound, 0), head 0's finds the K-th key.
  tau_full, _ = asad_select.exact_select(keys, plan, needed=exact_needed)
  np.testing.assert_array_equal(np.asarray(tau_full), [[base - 16, 0]])


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)])
def test_output_and_gradients_match_reference(backend, dtype, tol):
  shape = (2, 40, 2, 32)
  q, k, v = inputs(shape, dtype)
  seed = jnp.uint32(9)
  plan = asad_pallas.make_plan(shape, drop_ratio=0.3, temporal="max", backend=backend,
                               interpret=True)
  mask = asad.drop_mask_reference(frame_blocked_scores(q, k, plan), seed, drop_ratio=0.3,
                                  scale=plan.scale)
  kernel = lambda q, k, v: asad_pallas.asad_attention(q, k, v, seed=seed, plan=plan)
  reference = lambda q, k, v: asad.attention_reference(q, k, v, mask)
  cotangent = jax.random.normal(jax.random.key(7), shape, dtype)

  def loss(fn):
    return lambda q, k, v: jnp.sum((fn(q, k, v) * cotangent).astype(jnp.float32))

  out, ref = kernel(q, k, v), reference(q, k, v)
  assert out.dtype == dtype
  scale = float(jnp.abs(ref.astype(jnp.float32)).max())
  np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                             rtol=tol, atol=tol * scale)
  grads = jax.grad(loss(kernel), argnums=(0, 1, 2))(q, k, v)
  ref_grads = jax.grad(loss(reference), argnums=(0, 1, 2))(q, k, v)
  for g, r in zip(grads, ref_grads):
    r = np.asarray(r, np.float32)
    np.testing.assert_allclose(np.asarray(g, np.float32), r, rtol=tol,
                               atol=tol * np.abs(r).max())


@pytest.mark.parametrize("rows", [8, 32])
def test_bit_packed_mask_gives_the_reference_gradients_for_every_word_size(rows):
  """GPU query blocks of 8 / 32 rows keep the drop mask as int8 / int32 words (bit 31 is the
  sign bit); 16 is covered above. Gradients equal the reference's through either word."""
  shape = (1, 40, 2, 32)
  q, k, v = inputs(shape)
  seed = jnp.uint32(2)
  plan = asad_pallas.make_plan(shape, drop_ratio=0.3, temporal="max", backend="gpu",
                               interpret=True, blocks=asad_pallas.BlockSizes(rows=rows))
  assert asad_pallas.packs_mask(plan)
  mask = asad.drop_mask_reference(frame_blocked_scores(q, k, plan), seed, drop_ratio=0.3,
                                  scale=plan.scale)
  cotangent = jax.random.normal(jax.random.key(3), shape)
  loss = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v) * cotangent)
  grads = jax.grad(loss(lambda q, k, v: asad_pallas.asad_attention(q, k, v, seed=seed, plan=plan)),
                   argnums=(0, 1, 2))(q, k, v)
  ref_grads = jax.grad(loss(lambda q, k, v: asad.attention_reference(q, k, v, mask)),
                       argnums=(0, 1, 2))(q, k, v)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5,
                               atol=1e-5 * float(np.abs(r).max()))
  # The stored words hold exactly the dropped cells: unpack them on the host.
  qp, kp, vp = (asad_pallas.to_padded(x, plan) for x in (q, k, v))
  keys, tau, cutoff = asad_pallas.drop_selection(q, k, seed, plan)
  _, _, words = asad_pallas.masked_forward(qp, kp, vp, keys, tau, cutoff, plan)
  words = np.asarray(words).astype(np.int64) & ((1 << rows) - 1)
  bits = (words[:, :, :, None, :] >> np.arange(rows)[:, None]) & 1     # (B, H, blocks, rows, n_pad)
  n, npad = plan.frame_len, plan.padded
  per_frame = bits.reshape(1, 2, 2, npad, npad)[:, :, :, :n, :n].astype(bool)
  dense = np.asarray(asad_pallas.dense_mask(keys, tau, cutoff, plan))
  np.testing.assert_array_equal(per_frame[:, :, 0], dense[:, :, :n, :n])
  np.testing.assert_array_equal(per_frame[:, :, 1], dense[:, :, n:, n:])


def test_public_op_dispatches_and_validates():
  shape = (1, 40, 2, 32)
  q, k, v = inputs(shape)
  seed = jnp.uint32(4)
  ref = asad.asad_attention(q, k, v, seed=seed, drop_ratio=0.2, impl="reference")
  for impl in ("pallas_gpu", "pallas_tpu"):
    out = asad.asad_attention(q, k, v, seed=seed, drop_ratio=0.2, impl=impl)
    # Logit rounding differs between the reference's (L, L) matmul and the kernels' blocks, so a
    # cell at the threshold may flip: compare with a tolerance that one flip would not exceed.
    assert float(jnp.mean(jnp.abs(out - ref))) < 1e-3
  assert asad.resolve_impl("auto", dispatch.Device("cpu")) == "reference"
  assert asad.resolve_impl("auto", dispatch.Device("gpu", (9, 0))) == "pallas_gpu"
  with pytest.raises(ValueError, match="odd"):
    asad.asad_attention(q[:, :39], k[:, :39], v[:, :39], seed=seed, drop_ratio=0.2,
                        impl="pallas_gpu")
  with pytest.raises(ValueError, match="head dims"):
    asad_pallas.make_plan((1, 40, 2, 48), drop_ratio=0.2, temporal="max", backend="gpu",
                          interpret=True)
  with pytest.raises(ValueError, match="two-halves"):
    asad.asad_attention(q, k, v, seed=seed, drop_ratio=0.2, impl="pallas_tpu",
                        frame_ids=asad.halves_frame_ids(1, 40))
  with pytest.raises(ValueError, match="config.asad.impl"):
    asad.asad_attention(q, k, v, seed=seed, drop_ratio=0.2, impl="triton")
  with pytest.raises(ValueError, match="BlockSizes.rows"):
    asad_pallas.make_plan(shape, drop_ratio=0.2, temporal="max", backend="gpu", interpret=True,
                          blocks=asad_pallas.BlockSizes(rows=24))


@pytest.mark.parametrize("backend,platform", [("gpu", "cuda"), ("tpu", "tpu")])
@pytest.mark.parametrize("shape,dtype", [((2, 392, 16, 32), jnp.bfloat16),     # 224², ViT-B dec.
                                         ((1, 1152, 2, 64), jnp.float32)])    # 384², n_pad 1024
def test_kernels_lower_for_their_hardware(backend, platform, shape, dtype):
  """Forward and backward lower through Pallas' Triton / Mosaic TPU rules (no device needed)."""
  plan = asad_pallas.make_plan(shape, drop_ratio=0.1, temporal="max", backend=backend,
                               interpret=False)

  def loss(q, k, v, seed):
    return jnp.sum(asad_pallas.asad_attention(q, k, v, seed=seed, plan=plan).astype(jnp.float32))

  args = [jax.ShapeDtypeStruct(shape, dtype)] * 3 + [jax.ShapeDtypeStruct((), jnp.uint32)]
  lowered = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(*args).lower(
      lowering_platforms=(platform,))
  text = lowered.as_text()
  names = ["asad_keys", "asad_select", "asad_forward", "asad_backward_dq", "asad_backward_dkv"]
  if backend == "gpu":
    names.append("asad_select_bracket")
  for name in names:
    assert name in text, name


def test_tpu_generations_without_room_for_the_384_slab_are_refused_by_name():
  """The 384² key slab (8 MiB, double-buffered) compiles for v5e/v5p/v6e but not in a v4's
  16 MiB of VMEM (benchmarks/asad_compile.py --target=tpu); 224² fits everywhere."""
  big = asad_pallas.make_plan((1, 1152, 2, 64), drop_ratio=0.1, temporal="max", backend="tpu",
                              interpret=False)
  small = asad_pallas.make_plan((1, 392, 2, 64), drop_ratio=0.1, temporal="max", backend="tpu",
                                interpret=False)
  assert "impl='reference'" in asad_pallas.tpu_vmem_problem(big, "TPU v4")
  assert asad_pallas.tpu_vmem_problem(big, "TPU v5 lite") is None
  assert asad_pallas.tpu_vmem_problem(small, "TPU v4") is None
  assert asad_plan.select_vmem_bytes(big) == 32 << 20
  assert asad_plan.select_vmem_bytes(small) is None


def test_sharded_kernel_drops_the_same_cells_as_one_device():
  """Under a 4 x 2 mesh the kernel runs per shard (shard_map) and hashes global batch rows."""
  from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
  shape = (8, 40, 2, 32)
  q, k, v = inputs(shape)
  seed = jnp.uint32(21)
  attention = lambda q, k, v: asad.asad_attention(q, k, v, seed=seed, drop_ratio=0.3,
                                                  impl="pallas_gpu")
  loss = lambda q, k, v: jnp.sum(jnp.sin(attention(q, k, v)))
  single = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "fsdp"),
              axis_types=(AxisType.Auto,) * 2)
  sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  with jax.set_mesh(mesh):
    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    sharded = fn(*(jax.device_put(x, sharding) for x in (q, k, v)))
    assert "shard_map" in str(jax.make_jaxpr(fn)(q, k, v))
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
