"""The one place that picks attention implementations, checked without a GPU (fake devices)."""
import types

import jax.numpy as jnp
import numpy as np
import pytest

from dropmae_jax.ops import asad
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
