"""ASAD GPU kernels compiled to an H100 cubin without a GPU: shared memory, registers, spills.

  pip install triton            # ~290 MB, not a project dependency
  python benchmarks/asad_triton_compile.py [--arch 90]

Lowers forward + backward of `ops/asad_pallas` for the GPU (Pallas' Triton lowering of the
installed jax, no device needed), captures each kernel's Triton IR, compiles it with the `triton`
package for sm_<arch> and reads the cubin's resource usage with the `cuobjdump` that ships with
it. Prints a table per shape: dynamic shared memory per program (a launch fails above the
device's limit: 227 KB on an H100), registers per thread and local memory per thread (register
spills and stack: they cost speed, not correctness).

What it proves and what not: that the IR our kernels lower to is valid Triton that compiles to
PTX and SASS for the architecture, and how big each program is. Not speed, not numerics, and
the `triton` package is upstream Triton, not the build inside jaxlib (same dialect, possibly
other passes). The IR is captured by wrapping a private jax function
(`jax._src.pallas.triton.lowering.lower_jaxpr_to_triton_module`); if a jax release renames
it, this script says so.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp

from dropmae_jax.ops import asad_pallas

H100_SHARED_LIMIT = 227 * 1024   # bytes per block (opt-in maximum on sm_90)

# (label, (B, L, H, D), dtype): the ViT-B decoder at 224² and 384², and the f32 / d64 corners.
SHAPES = [
    ("224² bf16 d32", (1, 392, 16, 32), jnp.bfloat16),
    ("224² f32 d64", (1, 392, 8, 64), jnp.float32),
    ("384² bf16 d32", (1, 1152, 16, 32), jnp.bfloat16),
    ("384² f32 d64", (1, 1152, 8, 64), jnp.float32),
]


def capture_triton_ir(shape, dtype) -> list[tuple[str, str]]:
  """(kernel name, Triton IR text) for every kernel of ASAD forward + backward at `shape`."""
  try:
    from jax._src.pallas.triton import lowering as triton_lowering
    original = triton_lowering.lower_jaxpr_to_triton_module
  except (ImportError, AttributeError) as e:
    raise SystemExit(f"this jax ({jax.__version__}) has no Pallas Triton lowering hook to wrap: {e}")
  captured = []

  def capturing(*args, **kwargs):
    result = original(*args, **kwargs)
    text = result.module.operation.get_asm()
    name = re.search(r"tt\.func public @(\w+)", text).group(1)
    captured.append((name, text))
    return result

  plan = asad_pallas.make_plan(shape, drop_ratio=0.1, temporal="max", backend="gpu",
                               interpret=False)

  def loss(q, k, v, seed):
    return jnp.sum(asad_pallas.asad_attention(q, k, v, seed=seed, plan=plan).astype(jnp.float32))

  args = [jax.ShapeDtypeStruct(shape, dtype)] * 3 + [jax.ShapeDtypeStruct((), jnp.uint32)]
  triton_lowering.lower_jaxpr_to_triton_module = capturing
  try:
    jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(*args).lower(lowering_platforms=("cuda",))
  finally:
    triton_lowering.lower_jaxpr_to_triton_module = original
  return captured


def resource_usage(cuobjdump: str, cubin: bytes) -> tuple[int, int]:
  """(registers per thread, local-memory bytes per thread, i.e. spills) of a compiled kernel."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "kernel.cubin")
    with open(path, "wb") as f:
      f.write(cubin)
    text = subprocess.run([cuobjdump, "--dump-resource-usage", path], capture_output=True,
                          text=True, check=True).stdout
  usage = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", text)
  return int(usage.group(1)), int(usage.group(2)) + int(usage.group(3))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", type=int, default=90, help="compute capability (90 = H100)")
  parser.add_argument("--num_warps", type=int, default=4)
  parser.add_argument("--num_stages", type=int, default=2)
  args = parser.parse_args()
  try:
    import triton
    from triton.backends.compiler import GPUTarget
  except ImportError:
    raise SystemExit("needs the triton package: pip install triton")
  cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                           "cuobjdump")
  target = GPUTarget("cuda", args.arch, 32)
  failures = 0
  print(f"ASAD kernels, Triton {triton.__version__} -> sm_{args.arch}, jax {jax.__version__}, "
        f"num_warps {args.num_warps}, num_stages {args.num_stages}")
  print(f"{'shape':<16}{'kernel':<20}{'shared KB':>10}{'regs':>6}{'local B':>9}  status")
  for label, shape, dtype in SHAPES:
    for name, text in capture_triton_ir(shape, dtype):
      with tempfile.NamedTemporaryFile("w", suffix=".ttir", delete=False) as f:
        f.write(text)
      try:
        kernel = triton.compile(f.name, target=target, options={
            "num_warps": args.num_warps, "num_stages": args.num_stages})
        shared = kernel.metadata.shared
        registers, spills = resource_usage(cuobjdump, kernel.asm["cubin"])
        fits = shared <= H100_SHARED_LIMIT
        failures += not fits
        print(f"{label:<16}{name:<20}{shared / 1024:>10.1f}{registers:>6}{spills:>9}  "
              f"{'ok' if fits else 'TOO MUCH SHARED MEMORY'}")
      except Exception as e:  # report every kernel, then fail
        failures += 1
        print(f"{label:<16}{name:<20}{'':>25}  FAILED: {type(e).__name__}: {str(e)[:300]}")
      finally:
        os.remove(f.name)
  print(f"RESULT asad_kernels_failing={failures}")
  sys.exit(1 if failures else 0)


if __name__ == "__main__":
  main()
