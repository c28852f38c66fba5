"""What the benchmarks share: timers, ASAD per-layer measurements, the train step and its memory.

Imported by benchmarks/asad.py, train_step.py and gpu_report.py (each puts this folder and the
repository root on sys.path first, so the scripts run from a checkout without installing it).
Times are wall-clock over `iters` calls after one warm-up call, ended by block_until_ready.
"""
from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dropmae_jax.config import defaults as configlib
from dropmae_jax.models import mae
from dropmae_jax.ops.asad import attention as asad
from dropmae_jax.ops.asad import kernels as asad_pallas
from dropmae_jax.pretrain import optim
from dropmae_jax.pretrain import step as step_lib

GIB = float(1 << 30)


def time_fn(fn: Callable, *args, iters: int) -> float:
  """Seconds per call of `fn(*args)`, after one untimed call (compilation)."""
  out = fn(*args)
  jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(iters):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / iters


def layer_inputs(shape, dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
  """q, k, v (B, L, H, D) ~ N(0, 1) in `dtype`, fixed keys."""
  return tuple(jax.random.normal(jax.random.key(i), shape, dtype) for i in range(3))


def default_kernel() -> str:
  """The Pallas backend for this JAX backend (a CPU runs the GPU kernels in interpret mode)."""
  return "pallas_tpu" if jax.default_backend() == "tpu" else "pallas_gpu"


def attention_fn(impl: str, ratio: float) -> Callable:
  """(q, k, v) -> out for one attention implementation.

  impl: 'plain' (asad.plain_attention: dispatch.py's choice), 'xla' / 'cudnn' (unmasked
  jax.nn.dot_product_attention forced to that implementation), or an ASAD impl
  ('reference', 'pallas_gpu', 'pallas_tpu', 'auto') at drop ratio `ratio`, with the impl's own
  attention, or with '+cudnn' (e.g. 'pallas_gpu+cudnn'): asad.masked_attention='cudnn'.
  """
  if impl == "plain":
    return asad.plain_attention
  if impl in ("xla", "cudnn"):
    return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation=impl)
  seed = jnp.uint32(1)
  impl, _, masked = impl.partition("+")
  return lambda q, k, v: asad.asad_attention(q, k, v, seed=seed, drop_ratio=ratio, impl=impl,
                                             masked_attention=masked or "fused")


def attention_timings(attention: Callable, q, k, v, iters: int) -> tuple[float, float]:
  """(forward, forward+backward) seconds of `attention(q, k, v)`, each jitted alone."""
  forward = jax.jit(attention)
  loss = lambda q, k, v: jnp.sum(attention(q, k, v).astype(jnp.float32))
  forward_backward = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  return time_fn(forward, q, k, v, iters=iters), time_fn(forward_backward, q, k, v, iters=iters)


def layer_timings(impl: str, q, k, v, ratio: float, iters: int) -> tuple[float, float]:
  """(forward, forward+backward) seconds of one attention layer; impl as in `attention_fn`."""
  return attention_timings(attention_fn(impl, ratio), q, k, v, iters)


def kernel_plan(kernel: str, shape, ratio: float, blocks=None) -> asad_pallas.Plan:
  return asad_pallas.make_plan(shape, drop_ratio=ratio, temporal="max",
                               backend=kernel.removeprefix("pallas_"),
                               interpret=jax.default_backend() == "cpu", blocks=blocks)


def block_timings(kernel: str, q, k, v, ratio: float, iters: int,
                  blocks: asad_pallas.BlockSizes) -> tuple[float, float]:
  """(forward, forward+backward) seconds of the ASAD kernels with these block sizes."""
  plan = kernel_plan(kernel, q.shape, ratio, blocks)
  seed = jnp.uint32(1)
  attention = lambda q, k, v: asad_pallas.asad_attention(q, k, v, seed=seed, plan=plan)
  return attention_timings(attention, q, k, v, iters)


def kernel_mask(kernel: str, q, k, ratio: float, seed=1) -> jax.Array:
  """The kernels' drop mask as a dense (B, H, L, L) bool (kernels 1-2, seed as asad_attention's)."""
  plan = kernel_plan(kernel, q.shape, ratio)
  seed = jnp.uint32(seed)
  keys, tau, cutoff = jax.jit(lambda q, k: asad_pallas.drop_selection(q, k, seed, plan))(q, k)
  return asad_pallas.dense_mask(keys, tau, cutoff, plan)


def select_statistics(kernel: str, q, k, ratio: float, seed=1) -> tuple[dict[int, int], int]:
  """The GPU select on this layer's (b, h): ({slab passes: heads}, heads that need the full
  search) — what benchmarks/asad_select_fallbacks.py estimates, measured on the device."""
  from dropmae_jax.ops.asad import select as asad_select
  plan = kernel_plan(kernel, q.shape, ratio)
  seed = jnp.uint32(seed)

  def statistics(q, k):
    keys = asad_pallas.sampling_keys(asad_pallas.to_padded(q, plan),
                                     asad_pallas.to_padded(k, plan), seed, 0, plan)
    _, _, needed, passes = asad_select.bracket_select(keys, plan)
    return needed, passes

  needed, passes = jax.jit(statistics)(q, k)
  counts = np.bincount(np.asarray(passes).reshape(-1))
  return {p: int(n) for p, n in enumerate(counts) if n}, int(np.asarray(needed).sum())


def mask_disagreement(kernel: str, q, k, ratio: float, mask=None) -> tuple[int, int]:
  """(cells dropped differently, cells dropped) between the kernel and the reference.

  mask: the kernel's dense mask if already computed (`kernel_mask`), to save a compilation.
  """
  plan = kernel_plan(kernel, q.shape, ratio)
  mask = kernel_mask(kernel, q, k, ratio) if mask is None else mask
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  ref = asad.drop_mask_reference(scores, jnp.uint32(1), drop_ratio=ratio, scale=plan.scale)
  return int(jnp.sum(mask != ref)), int(jnp.sum(ref))


def kernel_errors(kernel: str, q, k, v, ratio: float,
                  mask=None) -> dict[str, tuple[float, float, float]]:
  """Output and q/k/v gradient errors of the kernel, each relative to the largest exact value.

  The yardstick is float32 attention (the same bf16/f32 inputs upcast) under the kernel's own
  drop mask, so that mask flips within rounding (`mask_disagreement`) do not count here. Returns
  {'out' | 'dq' | 'dk' | 'dv': (kernel error, kernels + dot_product_attention error, jnp
  reference error in the inputs' dtype)} — the last shows what the inputs' precision alone
  costs. mask: as in `mask_disagreement`.
  """
  mask = kernel_mask(kernel, q, k, ratio) if mask is None else mask
  cotangent = jax.random.normal(jax.random.key(7), q.shape, q.dtype)
  same_dtype = lambda q, k, v: asad.attention_reference(q, k, v, mask)
  exact = lambda q, k, v: asad.attention_reference(
      q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), mask)

  @functools.partial(jax.jit, static_argnums=0)
  def out_and_grads(fn, q, k, v):
    out, pullback = jax.vjp(fn, q, k, v)
    return (out, *pullback(cotangent.astype(out.dtype)))

  def run(fn):
    return [np.asarray(x, np.float32) for x in out_and_grads(fn, q, k, v)]

  truth = run(exact)
  results = {}
  for name, got, library, ref, want in zip(
      ("out", "dq", "dk", "dv"), run(attention_fn(kernel, ratio)),
      run(attention_fn(kernel + "+cudnn", ratio)), run(same_dtype), truth):
    scale = max(float(np.abs(want).max()), 1e-30)
    results[name] = tuple(float(np.abs(x - want).max()) / scale for x in (got, library, ref))
  return results


def kernel_piece_timings(kernel: str, q, k, v, ratio: float, iters: int) -> dict[str, float]:
  """Seconds per layer of each ASAD kernel, each jitted alone on the previous piece's outputs:
  to_padded (q, k, v), keys, select, forward, backward (dq + dk/dv, with its delta); and
  select_full, the full-search select that `select` replaces on GPU (not part of a layer);
  dense_mask and masked_dpa (forward+backward of asad.attention_with_drop_mask), what
  asad.masked_attention='cudnn' runs instead of forward and backward."""
  plan = kernel_plan(kernel, q.shape, ratio)
  seed, offset = jnp.uint32(1), jnp.int32(0)
  pad = jax.jit(lambda q, k, v: tuple(asad_pallas.to_padded(x, plan) for x in (q, k, v)))
  keys_fn = jax.jit(lambda qp, kp: asad_pallas.sampling_keys(qp, kp, seed, offset, plan))
  select_fn = jax.jit(lambda keys: asad_pallas.select_threshold(keys, plan))
  full_select_fn = jax.jit(lambda keys: asad_pallas.exact_select(keys, plan))
  forward_fn = jax.jit(lambda qp, kp, vp, keys, tau, cutoff: asad_pallas.masked_forward(
      qp, kp, vp, keys, tau, cutoff, plan))
  backward_fn = jax.jit(lambda qp, kp, vp, drop, out, lse, dout: asad_pallas.masked_backward(
      qp, kp, vp, drop, out, lse, dout, plan))
  mask_fn = jax.jit(lambda keys, tau, cutoff: asad_pallas.dense_mask(keys, tau, cutoff, plan))
  masked_loss = lambda q, k, v, mask: jnp.sum(
      asad.attention_with_drop_mask(q, k, v, mask).astype(jnp.float32))
  masked_dpa_fn = jax.jit(jax.grad(masked_loss, argnums=(0, 1, 2)))
  qp, kp, vp = pad(q, k, v)
  keys = keys_fn(qp, kp)
  tau, cutoff = select_fn(keys)
  out, lse, drop = forward_fn(qp, kp, vp, keys, tau, cutoff)
  mask = mask_fn(keys, tau, cutoff)
  dout = jax.random.normal(jax.random.key(8), out.shape, out.dtype)
  return {
      "to_padded": time_fn(pad, q, k, v, iters=iters),
      "keys": time_fn(keys_fn, qp, kp, iters=iters),
      "select": time_fn(select_fn, keys, iters=iters),
      "forward": time_fn(forward_fn, qp, kp, vp, keys, tau, cutoff, iters=iters),
      "backward": time_fn(backward_fn, qp, kp, vp, drop, out, lse, dout, iters=iters),
      "select_full": time_fn(full_select_fn, keys, iters=iters),
      "dense_mask": time_fn(mask_fn, keys, tau, cutoff, iters=iters),
      "masked_dpa": time_fn(masked_dpa_fn, q, k, v, mask, iters=iters),
  }


# --------------------------------------------------------------------------- train step


def step_config(*, variant: str = "B/16", img_size: int = 224, dtype: str = "bfloat16",
                decoder: tuple[int, int, int] = (512, 8, 16), drop_ratio: float = 0.1,
                impl: str = "auto", batch: int = 64, remat: bool = False,
                masked_attention: str = "auto"):
  """pretrain_defaults() with the fields a benchmark varies. decoder: (width, depth, heads)."""
  c = configlib.pretrain_defaults()
  c.model.variant, c.model.img_size, c.model.dtype = variant, img_size, dtype
  c.model.decoder_embed_dim, c.model.decoder_depth, c.model.decoder_num_heads = decoder
  c.model.remat = remat
  c.asad.drop_ratio, c.asad.impl, c.asad.masked_attention = drop_ratio, impl, masked_attention
  c.batch_size = batch
  return c


def initial_state(config) -> step_lib.TrainState:
  """A fresh TrainState on the host (numpy leaves). Its shapes depend on the architecture only,
  not on the batch, ASAD or remat, so one serves every row of a table; each row puts a copy on
  the device (the step donates it)."""
  model = mae.DropMAE.from_config(config)
  tx = optim.make_optimizer(config, steps_per_epoch=1000)
  size = config.model.img_size
  state = jax.jit(lambda: step_lib.create_state(model, tx, 0, jnp.zeros((1, 2, size, size, 3))))()
  return jax.device_get(state)


def compile_step(config, batch: int):
  """The jitted train step for `config`, compiled for `batch` pairs: (compiled, example batch)."""
  model = mae.DropMAE.from_config(config)
  tx = optim.make_optimizer(config, steps_per_epoch=1000)
  schedule = optim.make_lr_schedule(config, steps_per_epoch=1000)
  fn = step_lib.make_train_step(model, tx, schedule)
  step = jax.jit(lambda s, b: fn(s, b, step_lib.step_rng(s)), donate_argnums=(0,))
  size = config.model.img_size
  state_shapes = jax.eval_shape(lambda: step_lib.create_state(
      model, tx, 0, jnp.zeros((1, 2, size, size, 3))))
  frames = jax.random.randint(jax.random.key(0), (batch, 2, size, size, 3), 0, 256)
  frames = frames.astype(jnp.uint8)
  return step.lower(state_shapes, {"frames": frames}).compile(), {"frames": frames}


def compiled_bytes(compiled) -> int | None:
  """Device bytes the compiled step needs at its peak by XLA's buffer assignment: arguments +
  outputs + temporaries − outputs aliased onto donated arguments. None where not reported."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - some backends do not implement it
    return None
  if m is None:
    return None
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


def memory_stats() -> dict[str, Any]:
  """jax.Device.memory_stats() of the first device, {} where the backend has none (CPU)."""
  try:
    return jax.devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001
    return {}


def run_step(compiled, state, batch: dict, iters: int) -> float:
  """Seconds per step of a compiled step on a device copy of the host `state`."""
  state = jax.device_put(state)
  state, metrics = compiled(state, batch)   # warm-up (first-run autotuning, allocation)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(iters):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / iters
  if not math.isfinite(float(metrics["loss"])):
    raise FloatingPointError(f"train step loss is {float(metrics['loss'])}")
  del state, metrics
  return seconds


def time_step(config, batch: int, iters: int) -> float:
  """Seconds per train step of `config` at `batch` pairs (synthetic uint8 frames)."""
  compiled, example = compile_step(config, batch)
  return run_step(compiled, initial_state(config), example, iters)


def is_out_of_memory(error: BaseException) -> bool:
  text = f"{type(error).__name__}: {error}"
  return any(s in text for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM"))
