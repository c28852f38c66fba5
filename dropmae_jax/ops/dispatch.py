"""Which attention implementation runs where: the one place that decides.

Three choices, all by the device JAX computes on:
  * `asad_impl_for(device)`: what `config.asad.impl='auto'` means. A kernel is listed only where its
    masks and speed were measured on that hardware (`MEASURED_ASAD_KERNELS`); elsewhere the jnp
    reference runs.
  * `masked_attention_for(device)`: what `config.asad.masked_attention='auto'` means — whether the
    chosen cells are applied by the ASAD implementation's own attention ('fused': the Pallas
    forward/backward kernels, or the reference's softmax) or by `jax.nn.dot_product_attention`
    with the drop mask ('cudnn'). Listed only where measured (`MEASURED_MASKED_ATTENTION`).
And `dot_product_attention(q, k, v, mask)`, the call both unmasked attention and ASAD's 'cudnn'
choice make: cuDNN where `attention_implementation` says, XLA's if cuDNN refuses it at trace time.
  * `attention_implementation(dtype, head_dim, device)`: unmasked attention (encoder, TwinMAE decoder,
    ASAD with P = 0) through cuDNN's fused flash attention on NVIDIA GPUs where cuDNN supports the
    shape and dtype, else XLA's. Measured on an H200 (shared/measurements/2026-11-27-h200.md): one
    decoder layer 0.22 / 0.77 ms forward / forward+backward with cuDNN vs 0.66 / 2.12 ms with XLA;
    TwinMAE ViT-B/16 at batch 64 2082 vs 1439 pairs/s. float32 runs and CPUs / TPUs keep XLA.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from absl import logging


@dataclasses.dataclass(frozen=True)
class Device:
  """What the choices depend on: JAX's platform and, on NVIDIA GPUs, the compute capability."""
  platform: str                                  # 'cpu' | 'gpu' | 'tpu'
  compute_capability: tuple[int, int] | None = None


def describe(device: jax.Device) -> Device:
  """A jax.Device -> Device; compute_capability only for CUDA devices (ROCm reports none)."""
  cc = getattr(device, "compute_capability", None)
  parsed = None
  if isinstance(cc, str):
    try:
      major, minor = cc.split(".")[:2]
      parsed = (int(major), int(minor))
    except ValueError:
      parsed = None
  return Device(device.platform, parsed)


@functools.lru_cache(maxsize=None)
def current_device() -> Device:
  return describe(jax.devices()[0])


# (platform, minimum compute capability, kernel, evidence). Read top to bottom; first match wins.
MEASURED_ASAD_KERNELS: tuple[tuple[str, tuple[int, int] | None, str, str], ...] = (
    ("gpu", (9, 0), "pallas_gpu",
     "H200, jax 0.11.2, 2026-11-27: DropMAE ViT-B/16 batch 64 609 pairs/s vs 450 (reference); "
     "8 of 7.6M dropped cells differ from the reference (logit rounding)"),
)


def _first_measured(table, device: Device, default: str) -> str:
  """The choice of the first row of `table` that matches `device`, else `default`."""
  for platform, min_cc, choice, _ in table:
    if device.platform != platform:
      continue
    if min_cc is not None and (device.compute_capability is None
                               or device.compute_capability < min_cc):
      continue
    return choice
  return default


def asad_impl_for(device: Device) -> str:
  return _first_measured(MEASURED_ASAD_KERNELS, device, "reference")


# (platform, minimum compute capability, choice, evidence), as MEASURED_ASAD_KERNELS. Empty until
# `benchmarks/gpu_report.py` has timed 'cudnn' against 'fused' on a GPU (rows "ASAD kernels +
# cuDNN attention" and "DropMAE, ... + cuDNN attention"); 'cudnn' is reasoned to be faster on
# Hopper (README: "The masked attention through cuDNN"), but reasoning is not a measurement.
MEASURED_MASKED_ATTENTION: tuple[tuple[str, tuple[int, int] | None, str, str], ...] = ()


def masked_attention_for(device: Device) -> str:
  return _first_measured(MEASURED_MASKED_ATTENTION, device, "fused")


# cuDNN's fused attention (flash) needs Ampere or newer, fp16/bf16 and head dims that are
# multiples of 8 up to 128 (the cuDNN frontend's limits for the fused kernel).
CUDNN_MIN_COMPUTE_CAPABILITY = (8, 0)
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
CUDNN_MAX_HEAD_DIM = 128


def attention_implementation(dtype, head_dim: int, device: Device) -> str | None:
  """'cudnn' where cuDNN's flash attention supports this call, else None (XLA decides)."""
  if (device.platform == "gpu" and device.compute_capability is not None
      and device.compute_capability >= CUDNN_MIN_COMPUTE_CAPABILITY
      and jnp.dtype(dtype) in [jnp.dtype(d) for d in CUDNN_DTYPES]
      and head_dim % 8 == 0 and head_dim <= CUDNN_MAX_HEAD_DIM):
    return "cudnn"
  return None


@functools.lru_cache(maxsize=None)
def _warn_cudnn_refused(call: str, reason: str) -> None:
  logging.warning("cuDNN attention refused %s (%s); using XLA's attention for it", call, reason)


def dot_product_attention(q, k, v, mask=None):
  """`jax.nn.dot_product_attention` (q, k, v: (B, L, H, D); mask: (B, H, L, L) bool, True =
  keep) through cuDNN where `attention_implementation` chooses it, else XLA's. JAX's cuDNN
  binding checks the call when it is traced (cuDNN version, head dim, lengths with a bias); a
  refusal there falls back to XLA with one warning per kind of call instead of stopping a run."""
  impl = attention_implementation(q.dtype, q.shape[-1], current_device())
  if impl is not None:
    try:
      return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)
    except (NotImplementedError, RuntimeError) as e:
      call = f"q {tuple(q.shape)} {jnp.dtype(q.dtype).name}" + (" with a mask" if mask is not None
                                                                  else "")
      _warn_cudnn_refused(call, f"{type(e).__name__}: {str(e).strip()[:200]}")
  return jax.nn.dot_product_attention(q, k, v, mask=mask)
