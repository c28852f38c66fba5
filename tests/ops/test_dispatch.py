"""The one place that picks attention implementations, checked without a GPU (fake devices)."""
import types

import jax.numpy as jnp
import numpy as np
import pytest

from dropmae_jax.ops.asad import attention as asad
from dropmae_jax.ops import dispatch

H200 = dispatch.Device("gpu", (9, 0))
A100 = dispatch.Device("gpu", (8, 0))
T4 = dispatch.Device("gpu", (7, 5))
ROCM = dispatch.Device("gpu", None)
TPU = dispatch.Device("tpu")
CPU = dispatch.Device("cpu")


@pytest.mark.parametrize("fake, expected", [
    (types.SimpleNamespace(platform="gpu", compute_capability="9.0"), H200),
    (types.SimpleNamespace(platform="gpu", compute_capability="8.6"), dispatch.Device("gpu", (8, 6))),
    (types.SimpleNamespace(platform="gpu", compute_capability="gfx90a"), ROCM),
    (types.SimpleNamespace(platform="tpu"), TPU),
    (types.SimpleNamespace(platform="cpu"), CPU),
])
def test_describe(fake, expected):
  assert dispatch.describe(fake) == expected


@pytest.mark.parametrize("device, expected", [
    (H200, "pallas_gpu"), (dispatch.Device("gpu", (10, 0)), "pallas_gpu"),  # measured: Hopper+
    (A100, "reference"), (T4, "reference"), (ROCM, "reference"),            # not measured there
    (TPU, "reference"), (CPU, "reference")])
def test_auto_asad_kernel_only_where_measured(device, expected):
  assert asad.resolve_impl("auto", device) == expected
  assert asad.resolve_impl("reference", device) == "reference"       # a name is always obeyed
  assert asad.resolve_impl("pallas_tpu", device) == "pallas_tpu"


@pytest.mark.parametrize("dtype, head_dim, device, expected", [
    (jnp.bfloat16, 32, H200, "cudnn"), (jnp.float16, 64, A100, "cudnn"),
    (jnp.bfloat16, 128, H200, "cudnn"),
    (jnp.float32, 32, H200, None),            # float32 runs keep XLA
    (jnp.bfloat16, 36, H200, None),           # head dim not a multiple of 8
    (jnp.bfloat16, 256, H200, None),          # beyond cuDNN's fused kernel
    (jnp.bfloat16, 32, T4, None),             # before Ampere
    (jnp.bfloat16, 32, ROCM, None), (jnp.bfloat16, 32, TPU, None), (jnp.bfloat16, 32, CPU, None)])
def test_attention_implementation(dtype, head_dim, device, expected):
  assert dispatch.attention_implementation(dtype, head_dim, device) == expected


def test_plain_attention_on_this_machine_is_softmax_attention():
  rng = np.random.default_rng(0)
  q, k, v = (rng.normal(size=(2, 10, 3, 8)).astype(np.float32) for _ in range(3))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = np.einsum("bhqk,bkhd->bqhd", p, v)
  np.testing.assert_allclose(asad.plain_attention(q, k, v), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", [H200, A100, T4, ROCM, TPU, CPU])
def test_auto_masked_attention_only_where_measured(device, monkeypatch):
  # Nothing measured yet: every device keeps the impl's own (fused) attention.
  assert asad.resolve_masked_attention("auto", device) == "fused"
  assert asad.resolve_masked_attention("cudnn", device) == "cudnn"   # a name is always obeyed
  monkeypatch.setattr(dispatch, "MEASURED_MASKED_ATTENTION",
                      (("gpu", (9, 0), "cudnn", "a GPU run"),))
  hopper = device.compute_capability is not None and device.compute_capability >= (9, 0)
  assert asad.resolve_masked_attention("auto", device) == ("cudnn" if hopper else "fused")


@pytest.mark.parametrize("dtype, device, expected", [
    (jnp.bfloat16, H200, "cudnn"), (jnp.float32, H200, None), (jnp.bfloat16, CPU, None)])
def test_attention_with_drop_mask_asks_for_cudnn_where_supported(dtype, device, expected,
                                                                  monkeypatch):
  """The drop mask goes to jax.nn.dot_product_attention as its keep-mask, with cuDNN requested
  exactly where dispatch.attention_implementation supports the call."""
  calls = []
  monkeypatch.setattr(dispatch, "current_device", lambda: device)
  monkeypatch.setattr(asad.jax.nn, "dot_product_attention",
                      lambda q, k, v, mask=None, implementation=None: calls.append(
                          (mask, implementation)) or q)
  q = jnp.zeros((1, 4, 2, 32), dtype)
  drop = jnp.zeros((1, 2, 4, 4), bool).at[0, 1, 2, 3].set(True)
  asad.attention_with_drop_mask(q, q, q, drop)
  (mask, implementation), = calls
  assert implementation == expected
  np.testing.assert_array_equal(np.asarray(mask), ~np.asarray(drop))


def test_a_cudnn_refusal_at_trace_time_falls_back_to_xla(monkeypatch, caplog):
  """JAX's cuDNN binding may refuse a call when it is traced (old cuDNN, unsupported lengths):
  the attention then runs through XLA, with one warning, instead of stopping the run."""
  calls = []

  def fake(q, k, v, mask=None, implementation=None):
    calls.append(implementation)
    if implementation == "cudnn":
      raise NotImplementedError("Unsupported sequence length Q 391, KV 391.")
    return q

  monkeypatch.setattr(dispatch, "current_device", lambda: H200)
  monkeypatch.setattr(dispatch.jax.nn, "dot_product_attention", fake)
  dispatch._warn_cudnn_refused.cache_clear()
  q = jnp.zeros((1, 4, 2, 32), jnp.bfloat16)
  with caplog.at_level("WARNING"):
    for _ in range(2):
      assert asad.plain_attention(q, q, q) is q
  assert calls == ["cudnn", None, "cudnn", None]
  warnings = [r.getMessage() for r in caplog.records if "cuDNN attention refused" in r.getMessage()]
  assert len(warnings) == 1 and "Unsupported sequence length" in warnings[0], warnings


def test_model_masked_attention_field():
  """config.asad.masked_attention reaches the decoder's attention: 'cudnn' gives the 'fused'
  output (same cells, XLA's attention here) and both differ from attention without ASAD; a bad
  name fails in from_config, before anything is traced; a config saved before the field existed
  means 'auto'."""
  import jax
  from dropmae_jax.config import defaults as configlib
  from dropmae_jax.models import mae
  from dropmae_jax.models import vit
  config = configlib.pretrain_defaults()
  config.asad.impl = "reference"
  for choice in ("fused", "cudnn"):
    config.asad.masked_attention = choice
    model = mae.DropMAE.from_config(config)
    assert model.asad_masked_attention == choice
  x = jax.random.normal(jax.random.key(3), (2, 32, 32))
  rngs = {"asad": jax.random.key(2)}
  outputs = {}
  for name, settings in (("fused", vit.AsadSettings(0.3, "max", "reference", "fused")),
                         ("cudnn", vit.AsadSettings(0.3, "max", "reference", "cudnn")),
                         ("plain", vit.AsadSettings())):
    layer = vit.Attention(2, settings)
    params = jax.jit(layer.init)({"params": jax.random.key(0), **rngs}, x)
    outputs[name] = np.asarray(jax.jit(lambda p: layer.apply(p, x, rngs=rngs))(params))
  np.testing.assert_allclose(outputs["cudnn"], outputs["fused"], rtol=1e-5, atol=1e-6)
  assert np.abs(outputs["plain"] - outputs["fused"]).max() > 1e-3
  config.asad.masked_attention = "flash"
  with pytest.raises(ValueError, match="masked_attention"):
    mae.DropMAE.from_config(config)
  del config.asad["masked_attention"]
  assert mae.DropMAE.from_config(config).asad_masked_attention == "auto"
