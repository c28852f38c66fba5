"""ASAD kernels compiled for GPU and TPU without either: does every kernel compile, and how big.

  pip install triton                 # ~290 MB, for --target=gpu (not a project dependency)
  pip install "libtpu==0.0.42.*"     # ~210 MB, for --target=tpu (the libtpu of jax[tpu] 0.10.2)
  python benchmarks/asad_compile.py --target=gpu [--arch 90]
  python benchmarks/asad_compile.py --target=tpu [--tpus v4:2x2x1,v5e:2x2,v5p:2x2x1,v6e:2x2]

GPU: lowers forward + backward of `ops/asad/kernels.py` with Pallas' Triton lowering (no device
needed), captures each kernel's Triton IR, compiles it with the `triton` package for sm_<arch>
and reads the cubin's resource usage with the `cuobjdump` shipped with it: dynamic shared memory
per program (a launch fails above the device's limit: 227 KB on an H100), registers and local
memory per thread (register spills and stack: they cost speed, not correctness). The IR is
captured by wrapping a private jax function
(`jax._src.pallas.triton.lowering.lower_jaxpr_to_triton_module`); the `triton` package is
upstream Triton, not the build inside jaxlib (same dialect, possibly other passes).

TPU: compiles forward and forward + backward ahead of time for abstract TPU devices
(`jax.experimental.topologies`, which libtpu provides without TPU hardware), so Mosaic compiles
every kernel for that generation; prints the compiled program's memory use.

What it proves: our kernels are valid for these compilers and fit the hardware's on-chip memory.
Not speed, not numerics (tests/ops/test_asad_pallas.py checks those in interpret mode).
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
import numpy as np

from dropmae_jax.ops.asad import kernels as asad_pallas
from dropmae_jax.ops.asad import plan as asad_plan

H100_SHARED_LIMIT = 227 * 1024   # bytes per block (opt-in maximum on sm_90)

# (label, (B, L, H, D), dtype): the ViT-B decoder at 224² and 384², and the f32 / d64 corners.
SHAPES = [
    ("224² bf16 d32", (1, 392, 16, 32), jnp.bfloat16),
    ("224² f32 d64", (1, 392, 8, 64), jnp.float32),
    ("384² bf16 d32", (1, 1152, 16, 32), jnp.bfloat16),
    ("384² f32 d64", (1, 1152, 8, 64), jnp.float32),
]


def _loss_fn(shape, backend: str, blocks=None):
  """sum(ASAD attention) at `shape` for `backend`'s kernels: its gradient runs every kernel."""
  plan = asad_pallas.make_plan(shape, drop_ratio=0.1, temporal="max", backend=backend,
                               interpret=False, blocks=blocks)

  def loss(q, k, v, seed):
    return jnp.sum(asad_pallas.asad_attention(q, k, v, seed=seed, plan=plan).astype(jnp.float32))

  return loss


def capture_triton_ir(shape, dtype, blocks=None) -> list[tuple[str, str]]:
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

  args = [jax.ShapeDtypeStruct(shape, dtype)] * 3 + [jax.ShapeDtypeStruct((), jnp.uint32)]
  triton_lowering.lower_jaxpr_to_triton_module = capturing
  try:
    jax.jit(jax.grad(_loss_fn(shape, "gpu", blocks), argnums=(0, 1, 2))).trace(*args).lower(
        lowering_platforms=("cuda",))
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
  parser.add_argument("--target", choices=("gpu", "tpu"), default="gpu")
  parser.add_argument("--arch", type=int, default=90, help="GPU compute capability (90 = H100)")
  parser.add_argument("--tpus", default="v4:2x2x1,v5e:2x2,v5p:2x2x1,v6e:2x2",
                      help="TPU topologies to compile for")
  parser.add_argument("--step", action="store_true",
                      help="TPU: also compile the whole ViT-B/16 DropMAE train step (batch 64, "
                           "bf16, data-parallel over the topology) with the reference and kernels")
  parser.add_argument("--num_warps", type=int, default=4)
  parser.add_argument("--num_stages", type=int, default=2)
  parser.add_argument("--blocks", default=None,
                      help="GPU: BlockSizes as rows,select_rows,key_rows,key_chunk,keys_rows "
                           "(default: the GPU default), e.g. 64,16,64,64,16 for Hopper-sized "
                           "tiles; 'candidates' compiles every set gpu_report.py times")
  args = parser.parse_args()
  failures = compile_for_gpu(args) if args.target == "gpu" else compile_for_tpu(args)
  print(f"RESULT asad_kernels_failing={failures}")
  sys.exit(1 if failures else 0)


def compile_for_gpu(args) -> int:
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
  if args.blocks == "candidates":
    block_sets = list(asad_plan.GPU_BLOCK_CANDIDATES)
  elif args.blocks:
    block_sets = [asad_plan.BlockSizes(*(int(x) for x in args.blocks.split(",")))]
  else:
    block_sets = [asad_plan.DEFAULT_BLOCKS["gpu"]]
  for blocks in block_sets:
    print(f"\n{blocks}")
    failures += _compile_block_set(args, triton, target, cuobjdump, blocks)
  return failures


def _compile_block_set(args, triton, target, cuobjdump, blocks) -> int:
  failures = 0
  print(f"{'shape':<16}{'kernel':<20}{'shared KB':>10}{'regs':>6}{'local B':>9}  status")
  for label, shape, dtype in SHAPES:
    for name, text in capture_triton_ir(shape, dtype, blocks):
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
  return failures


def compile_for_tpu(args) -> int:
  # libtpu asks for these when no TPU VM metadata is around; any value serves for compiling.
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  from jax.experimental import topologies
  from jax.sharding import Mesh, NamedSharding, PartitionSpec
  failures = 0
  print(f"ASAD kernels, Mosaic TPU (libtpu), jax {jax.__version__}: forward and forward+backward")
  print(f"{'TPU':<14}{'shape':<16}{'pass':<18}{'temp MB':>9}  status")
  for topology in args.tpus.split(","):
    try:
      devices = topologies.get_topology_desc(topology_name=topology, platform="tpu").devices
    except Exception as e:  # no libtpu, or a name it does not know
      raise SystemExit(f"cannot describe TPU topology {topology!r} (is libtpu installed?): {e}")
    replicated = NamedSharding(Mesh(np.array(devices[:1]), ("x",)), PartitionSpec())
    kind = devices[0].device_kind
    for label, shape, dtype in SHAPES:
      plan = asad_pallas.make_plan(shape, drop_ratio=0.1, temporal="max", backend="tpu",
                                   interpret=False)
      if asad_pallas.tpu_vmem_problem(plan, kind):   # make_plan refuses it on that chip
        print(f"{kind:<14}{label:<16}{'—':<18}{'':>9}  not supported (too little VMEM; "
              "the op asks for impl='reference')")
        continue
      loss = _loss_fn(shape, "tpu")
      specs = ([jax.ShapeDtypeStruct(shape, dtype, sharding=replicated)] * 3
               + [jax.ShapeDtypeStruct((), jnp.uint32, sharding=replicated)])
      for name, fn in (("forward", loss),
                       ("forward+backward", jax.grad(loss, argnums=(0, 1, 2)))):
        try:
          compiled = jax.jit(fn).trace(*specs).lower().compile()
          temp = getattr(compiled.memory_analysis(), "temp_size_in_bytes", 0) / 2**20
          print(f"{kind:<14}{label:<16}{name:<18}{temp:>9.1f}  ok")
        except Exception as e:
          failures += 1
          print(f"{kind:<14}{label:<16}{name:<18}{'':>9}  FAILED: "
                f"{type(e).__name__}: {str(e)[:300]}")
  if args.step:
    failures += compile_train_steps(args.tpus.split(",")[0])
  return failures


def compile_train_steps(topology: str, batch: int = 64) -> int:
  """Compiles the full DropMAE train step for `topology` with the ASAD reference and kernels."""
  from jax.experimental import topologies
  from jax.sharding import Mesh, NamedSharding, PartitionSpec
  from dropmae_jax.config import defaults as configlib
  from dropmae_jax.models import mae
  from dropmae_jax.ops.asad import attention as asad
  from dropmae_jax.pretrain import optim
  from dropmae_jax.pretrain import step as step_lib
  devices = topologies.get_topology_desc(topology_name=topology, platform="tpu").devices
  mesh = Mesh(np.array(devices).reshape(-1, 1), ("data", "fsdp"))
  replicated = NamedSharding(mesh, PartitionSpec())
  asad._interpret_kernels = lambda: False   # compiling for TPU from a CPU host
  print(f"\nDropMAE ViT-B/16 train step, batch {batch}, bf16, {len(devices)} x "
        f"{devices[0].device_kind}")
  failures = 0
  for impl in ("reference", "pallas_tpu"):
    config = configlib.pretrain_defaults()
    config.asad.impl, config.model.dtype = impl, "bfloat16"
    model = mae.DropMAE.from_config(config)
    tx = optim.make_optimizer(config, steps_per_epoch=100)
    train_step = step_lib.make_train_step(model, tx, optim.make_lr_schedule(config, 100))
    frames = jax.ShapeDtypeStruct((batch, 2, 224, 224, 3), jnp.uint8)
    state = jax.eval_shape(lambda f: step_lib.create_state(model, tx, 0, f), frames)
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                         state)
    frames = jax.ShapeDtypeStruct(frames.shape, frames.dtype,
                                  sharding=NamedSharding(mesh, PartitionSpec("data")))
    try:
      with jax.set_mesh(mesh):
        compiled = jax.jit(lambda s, b: train_step(s, b, step_lib.step_rng(s))).trace(
            state, {"frames": frames}).lower().compile()
      temp = compiled.memory_analysis().temp_size_in_bytes / 2**30
      print(f"  ASAD {impl:<12} compiled, temporaries {temp:.2f} GiB per device")
    except Exception as e:
      failures += 1
      print(f"  ASAD {impl:<12} FAILED: {type(e).__name__}: {str(e)[:300]}")
  return failures


if __name__ == "__main__":
  main()
