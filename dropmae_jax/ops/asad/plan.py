"""The static plan of one ASAD kernel call: shapes, block sizes, validation, on-chip memory.

`make_plan` checks a (B, L, H, D) call at the boundary (odd L, head dims, block sizes, frames too
long for exact sums, TPUs without VMEM for the select kernel's key slab) so that errors name the
problem before anything is traced into a kernel.
"""
from __future__ import annotations

import dataclasses
import math

import jax
from jax.experimental import pallas as pl

from dropmae_jax.ops.asad import arithmetic as asad_math

BACKENDS = ("gpu", "tpu")
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Rows per program. All must divide n_pad (a power of two >= 128)."""
  rows: int = 16          # query rows in the forward and dq kernels (and the dk/dv kernel's
                          # query steps); 8, 16 or 32 keep the GPU drop mask at 1 bit a cell
  select_rows: int = 16   # slab rows counted per step in the select kernel
  key_rows: int = 32      # key rows in the dk/dv kernel
  key_chunk: int = 64     # key columns per step of the forward and dq kernels (bounds the
                          # K/V tiles held at once: a whole 384² frame of f32 keys and values
                          # would need 576 KB of GPU shared memory)
  keys_rows: int = 16     # query rows in the keys kernel, which holds two rows × n_pad float32
                          # logit tiles at once (so it stays small where the others may grow)


DEFAULT_BLOCKS = {"gpu": BlockSizes(16, 16, 32, 64, 16),
                  "tpu": BlockSizes(128, 128, 128, 128, 128)}
# Block sets `benchmarks/gpu_report.py` times side by side on a GPU. 16-row tiles make Triton
# use Ampere-style mma.sync even on Hopper, whose wgmma wants 64-row tiles per warpgroup; which
# is faster for these small (d = 32) heads is for the measurement to say.
GPU_BLOCK_CANDIDATES = (BlockSizes(16, 16, 32, 64, 16), BlockSizes(32, 16, 32, 64, 16),
                        BlockSizes(64, 16, 64, 64, 16), BlockSizes(64, 16, 64, 128, 16))


@dataclasses.dataclass(frozen=True)
class Plan:
  """Static description of one ASAD attention call (hashable: a custom_vjp static argument)."""
  batch: int
  heads: int
  frame_len: int          # n tokens per frame; L = 2n
  head_dim: int
  num_drop: int           # K cells dropped per (b, h)
  temporal: str
  backend: str
  interpret: bool
  blocks: BlockSizes

  @property
  def length(self) -> int:
    return 2 * self.frame_len

  @property
  def padded(self) -> int:
    return max(128, pl.next_power_of_2(self.frame_len))

  @property
  def scale(self) -> float:
    return 1.0 / math.sqrt(self.head_dim)


def make_plan(q_shape, *, drop_ratio: float, temporal: str, backend: str, interpret: bool,
              blocks: BlockSizes | None = None) -> Plan:
  """Validates a (B, L, H, D) call for the kernels; errors name the unsupported dimension."""
  if backend not in BACKENDS:
    raise ValueError(f"ASAD kernel backend must be one of {BACKENDS}, got {backend!r}")
  if temporal not in ("max", "sum"):
    raise ValueError(f"asad temporal must be 'max' or 'sum', got {temporal!r}")
  batch, length, heads, head_dim = q_shape
  if length % 2 or length < 4:
    raise ValueError(f"ASAD kernels need two equal frames of >= 2 tokens: sequence length {length}")
  if head_dim not in SUPPORTED_HEAD_DIMS:
    raise ValueError(f"ASAD kernels support head dims {SUPPORTED_HEAD_DIMS}, got {head_dim} "
                     "(use config.asad.impl='reference')")
  plan = Plan(batch, heads, length // 2, head_dim, asad_math.num_dropped_cells(length, drop_ratio),
              temporal, backend, interpret, blocks or DEFAULT_BLOCKS[backend])
  if 2 * plan.padded > asad_math.MAX_EXACT_TERMS or length * length >= 2 ** 31:
    raise ValueError(f"ASAD kernels support frames of up to {asad_math.MAX_EXACT_TERMS // 2} "
                     f"tokens, got {plan.frame_len}")
  if backend == "tpu" and not interpret and jax.default_backend() == "tpu":
    problem = tpu_vmem_problem(plan, jax.devices()[0].device_kind)
    if problem:
      raise ValueError(problem)
  for name in ("rows", "select_rows", "key_rows", "key_chunk", "keys_rows"):
    size = getattr(plan.blocks, name)
    if plan.padded % size or size & (size - 1):
      raise ValueError(f"BlockSizes.{name}={size} must be a power of two dividing {plan.padded}")
  return plan


# --------------------------------------------------------------------------- TPU VMEM budget

_TPU_DEFAULT_SCOPED_VMEM = 16 << 20
_TPU_SMALL_VMEM_KINDS = ("v2", "v3", "v4")   # 16 MiB of VMEM per core in all


def _select_slab_is_large(plan: Plan) -> bool:
  """True when the double-buffered key slab alone takes half of Mosaic's default VMEM scope."""
  return 2 * slab_bytes(plan) > _TPU_DEFAULT_SCOPED_VMEM // 2


def select_vmem_bytes(plan: Plan) -> int | None:
  """On TPU the select kernel holds its (b, h) key slab in VMEM, double-buffered: 8 MiB a slab
  at 384² (n_pad 1024), more than Mosaic's default scope; v5e, v5p and v6e have room for it."""
  if plan.backend != "tpu" or not _select_slab_is_large(plan):
    return None
  return 2 * slab_bytes(plan) + (16 << 20)   # slabs + the count passes' working set


def tpu_vmem_problem(plan: Plan, device_kind: str) -> str | None:
  """Why `plan`'s kernels cannot run on a TPU of `device_kind` (e.g. 'TPU v4'), or None."""
  if plan.backend == "tpu" and _select_slab_is_large(plan) and any(
      v in device_kind.lower() for v in _TPU_SMALL_VMEM_KINDS):
    return (f"ASAD TPU kernels at {plan.frame_len} tokens per frame hold a "
            f"{slab_bytes(plan) >> 20} MiB key slab in VMEM, more than a {device_kind} has; use "
            "config.asad.impl='reference' there (v5e, v5p and v6e have room)")
  return None


def slab_bytes(plan: Plan) -> int:
  return 4 * 2 * plan.padded * plan.padded
