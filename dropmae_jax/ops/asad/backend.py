"""The one backend-specific layer of the ASAD kernels: how a shared kernel body becomes a
`pallas_call` on GPU (Triton lowering) or TPU (Mosaic).

Scalars travel as 0-d blocks on GPU and through scalar prefetch (SMEM) on TPU; everything else
(block specs, grids, the bodies) is common. A Mosaic GPU variant would be a third branch here.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from dropmae_jax.ops.asad.plan import Plan


def pallas_call(body, plan: Plan, *, grid, scalars=(), inputs=(), outputs=(),
                scalar_outputs: int = 0, parallel: bool = True, vmem_bytes: int | None = None,
                name: str):
  """Runs `body(*scalar_values, *input_refs, *output_refs)` on plan.backend.

  Args:
    scalars: (array, per_head) pairs: a 0-d array, or with per_head a (B, H) array read at the
      program's first two grid indices.
    inputs / outputs: (array or ShapeDtypeStruct, block_shape, index_map) triples.
    scalar_outputs: the body returns this many int32 scalars, stored as (B, H) arrays.
    vmem_bytes: TPU only: scoped VMEM for this kernel when its blocks need more than Mosaic's
      default (16 MiB).
  """
  out_shape = [o[0] for o in outputs]
  out_shape += [jax.ShapeDtypeStruct((plan.batch, plan.heads), jnp.int32)] * scalar_outputs
  n_in, n_out = len(scalars) + len(inputs), len(outputs)

  def store_results(refs, results, write):
    results = results if isinstance(results, tuple) else (results,)
    for ref, value in zip(refs[n_in + n_out:], results):
      write(ref, value)

  if plan.backend == "gpu":
    from jax.experimental.pallas import triton as pltriton

    def kernel(*refs):
      values = [ref[...] for ref in refs[:len(scalars)]]
      results = body(*values, *refs[len(scalars):n_in + n_out])
      store_results(refs, results, lambda ref, value: ref.__setitem__(..., value))

    def scalar_spec(per_head):
      return (pl.BlockSpec((None, None), lambda b, h, *_: (b, h)) if per_head
              else pl.BlockSpec((), lambda *_: ()))

    in_specs = [scalar_spec(p) for _, p in scalars]
    in_specs += [pl.BlockSpec(block, index) for _, block, index in inputs]
    out_specs = [pl.BlockSpec(block, index) for _, block, index in outputs]
    out_specs += [scalar_spec(True)] * scalar_outputs
    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        compiler_params=pltriton.CompilerParams(num_warps=4, num_stages=2),
        interpret=plan.interpret, name=name,
    )(*[a for a, _ in scalars], *[a for a, _, _ in inputs])

  from jax.experimental.pallas import tpu as pltpu

  def kernel(*refs):  # noqa: F811 - the TPU variant
    b, h = pl.program_id(0), pl.program_id(1)
    values = [ref[b, h] if per_head else ref[0]
              for ref, (_, per_head) in zip(refs[:len(scalars)], scalars)]
    results = body(*values, *refs[len(scalars):n_in + n_out])
    store_results(refs, results, lambda ref, value: ref.__setitem__((b, h), value))

  def drop_scalar_args(index):
    return lambda *args: index(*args[:len(grid)])

  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=len(scalars), grid=grid,
      in_specs=[pl.BlockSpec(block, drop_scalar_args(index)) for _, block, index in inputs],
      out_specs=([pl.BlockSpec(block, drop_scalar_args(index)) for _, block, index in outputs]
                 + [pl.BlockSpec(memory_space=pltpu.SMEM)] * scalar_outputs))
  semantics = ("parallel" if parallel else "arbitrary",) * len(grid)
  return pl.pallas_call(
      kernel, grid_spec=grid_spec, out_shape=out_shape,
      compiler_params=pltpu.CompilerParams(dimension_semantics=semantics,
                                           vmem_limit_bytes=vmem_bytes),
      interpret=pltpu.InterpretParams() if plan.interpret else False, name=name,
  )(*[a.reshape(-1) if not per_head else a for a, per_head in scalars],
    *[a for a, _, _ in inputs])
