"""ViT building blocks with the released (timm) parameter layout.

Submodule names mirror the PyTorch state dict (`patch_embed.proj`, `blocks.{i}.norm1`,
`attn.qkv`, `attn.proj`, `mlp.fc1`, ...) so the converter is a rename plus transposes:
Flax Dense kernels are (in, out) where torch Linear weights are (out, in); Flax conv kernels are
(kh, kw, in, out) where torch's are (out, in, kh, kw).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dropmae_jax.ops.asad import attention as asad

LN_EPS = 1e-6
# torch.nn.init.xavier_uniform_ on a Linear weight == Flax xavier_uniform on the (in, out) kernel.
dense_init = nn.initializers.xavier_uniform()
# The patch conv is initialised as the (out, in*kh*kw) matrix it is: fan_in = 3*p*p, fan_out = D.
patch_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2),
                                              out_axis=-1)


@dataclasses.dataclass(frozen=True)
class VitSize:
  width: int
  depth: int
  heads: int
  mlp_dim: int


# 'micro' is a test/demo size; the rest are the standard ViT sizes (MAE releases B, L, H).
VIT_SIZES = {
    "micro": VitSize(64, 2, 4, 256),
    "Ti": VitSize(192, 12, 3, 768),
    "S": VitSize(384, 12, 6, 1536),
    "B": VitSize(768, 12, 12, 3072),
    "L": VitSize(1024, 24, 16, 4096),
    "H": VitSize(1280, 32, 16, 5120),
}


def decode_variant(variant: str) -> tuple[VitSize, int]:
  """'B/16' -> (VitSize of ViT-B, patch 16)."""
  try:
    name, patch = variant.split("/")
    return VIT_SIZES[name], int(patch)
  except (ValueError, KeyError):
    raise ValueError(f"config.model.variant must look like 'B/16' with size in "
                     f"{sorted(VIT_SIZES)}; got {variant!r}") from None


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
  """(M,) positions -> (M, dim) table [sin | cos] with MAE's frequencies 1 / 10000^(k / (dim/2))."""
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  angles = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid_size: int) -> np.ndarray:
  """Fixed 2-D sin-cos table (grid_size², dim), float32, row-major over (row, col) patches.

  Matches MAE's `get_2d_sincos_pos_embed` without the cls slot: the first half of the channels
  encodes the column index, the second half the row index.
  """
  if dim % 4:
    raise ValueError(f"sin-cos position table needs width % 4 == 0, got {dim}")
  cols, rows = np.meshgrid(np.arange(grid_size), np.arange(grid_size))
  table = np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)
  return table.astype(np.float32)


class PatchEmbed(nn.Module):
  """Non-overlapping p×p patches -> tokens. (B, H, W, 3) -> (B, H/p · W/p, D)."""
  width: int
  patch_size: int
  dtype: jnp.dtype = jnp.float32
  kernel_init: Callable = patch_init
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    p = self.patch_size
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", kernel_init=self.kernel_init,
                bias_init=self.bias_init, dtype=self.dtype, name="proj")(images)
    return x.reshape(x.shape[0], -1, self.width)


class Mlp(nn.Module):
  hidden: int
  dtype: jnp.dtype = jnp.float32
  kernel_init: Callable = dense_init

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    x = nn.Dense(self.hidden, kernel_init=self.kernel_init, dtype=self.dtype, name="fc1")(x)
    x = nn.gelu(x, approximate=False)  # torch nn.GELU default: exact erf
    return nn.Dense(width, kernel_init=self.kernel_init, dtype=self.dtype, name="fc2")(x)


@dataclasses.dataclass(frozen=True)
class AsadSettings:
  """How a block's attention applies ASAD. drop_ratio 0 means plain attention."""
  drop_ratio: float = 0.0
  temporal: str = "max"
  impl: str = "reference"
  masked_attention: str = "fused"   # who applies the chosen cells (asad.asad_attention)


def split_qkv(qkv: jax.Array, heads: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Fused projection (B, L, 3·D) -> q, k, v, each (B, L, H, D/H).

  torch reshapes qkv to (B, L, 3, H, Dh): the same channel order here.
  """
  batch, length, three_width = qkv.shape
  q, k, v = jnp.moveaxis(qkv.reshape(batch, length, 3, heads, three_width // 3 // heads), 2, 0)
  return q, k, v


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv projection (timm layout). (B, L, D) -> (B, L, D).

  With `return_attention=True` it returns `(out, probs)`, probs the post-softmax map
  (B, H, L, L) float32 (what OSTrack's candidate elimination scores). `key_mask` (B, L) bool
  hides the False keys from every query (OSTrack's masked candidate elimination; every row
  must keep at least one key). Both paths compute the attention explicitly and do not combine
  with ASAD.
  """
  heads: int
  asad: AsadSettings = AsadSettings()
  dtype: jnp.dtype = jnp.float32
  kernel_init: Callable = dense_init

  @nn.compact
  def __call__(self, x: jax.Array, frame_ids: jax.Array | None = None,
               return_attention: bool = False, key_mask: jax.Array | None = None):
    batch, length, width = x.shape
    qkv = nn.Dense(3 * width, kernel_init=self.kernel_init, dtype=self.dtype, name="qkv")(x)
    q, k, v = split_qkv(qkv, self.heads)
    proj = nn.Dense(width, kernel_init=self.kernel_init, dtype=self.dtype, name="proj")
    if return_attention or key_mask is not None:
      if self.asad.drop_ratio > 0:
        raise ValueError("Attention(return_attention=True or key_mask) does not support ASAD")
      scale = (width // self.heads) ** -0.5
      logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
      if key_mask is not None:
        chex.assert_shape(key_mask, (batch, length))
        # A hidden key gets weight exactly 0 (exp(-inf)); unhidden keys renormalise among
        # themselves, as if the hidden tokens had been removed.
        logits = jnp.where(key_mask[:, None, None, :], logits, -jnp.inf)
      probs = jax.nn.softmax(logits, axis=-1)
      out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)
      out = proj(out.reshape(batch, length, width))
      return (out, probs) if return_attention else out
    if self.asad.drop_ratio > 0:
      # One uint32 seed per layer and step, from the 'asad' RNG stream.
      seed = jax.random.bits(self.make_rng("asad"), (), jnp.uint32)
      out = asad.asad_attention(q, k, v, seed=seed, drop_ratio=self.asad.drop_ratio,
                                frame_ids=frame_ids, temporal=self.asad.temporal,
                                impl=self.asad.impl, masked_attention=self.asad.masked_attention)
    else:
      out = asad.plain_attention(q, k, v)
    out = out.reshape(batch, length, width)
    return proj(out)


class DropPath(nn.Module):
  """Stochastic depth (timm DropPath): zero a whole sample's residual branch with probability
  `rate`, scale survivors by 1 / (1 - rate). Identity when deterministic. RNG stream 'dropout'."""
  rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


# A hook run between the attention residual and the MLP (OSTrack's candidate elimination):
# (tokens (B, L, D), attention probs (B, H, L, L)) -> (new tokens (B, L', D), anything).
MidHook = Callable[[jax.Array, jax.Array], tuple]


class Block(nn.Module):
  """Pre-LN transformer block: x + attn(norm1(x)); x + mlp(norm2(x)).

  `drop_path` > 0 adds stochastic depth on both residual branches (active when
  deterministic=False). With `mid_hook` the block returns `(x, hook_aux)`: the hook sees the
  tokens after the attention residual and that layer's attention probabilities, and may drop
  tokens before the MLP. `key_mask` (B, L) bool: see `Attention`.
  """
  heads: int
  mlp_dim: int
  asad: AsadSettings = AsadSettings()
  dtype: jnp.dtype = jnp.float32
  kernel_init: Callable = dense_init
  drop_path: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, frame_ids: jax.Array | None = None, *,
               mid_hook: MidHook | None = None, deterministic: bool = True,
               key_mask: jax.Array | None = None):
    chex.assert_rank(x, 3)
    drop = DropPath(self.drop_path)
    attn = Attention(self.heads, self.asad, self.dtype, self.kernel_init, name="attn")
    y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm1")(x)
    aux = None
    if mid_hook is None:
      x = x + drop(attn(y, frame_ids, key_mask=key_mask), deterministic)
    else:
      out, probs = attn(y, frame_ids, return_attention=True, key_mask=key_mask)
      x = x + drop(out, deterministic)
      x, aux = mid_hook(x, probs)
    y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="norm2")(x)
    x = x + drop(Mlp(self.mlp_dim, self.dtype, self.kernel_init, name="mlp")(y), deterministic)
    return x if mid_hook is None else (x, aux)


def block_stack(prefix: str, depth: int, heads: int, mlp_dim: int, asad_settings: AsadSettings,
                dtype, remat: bool) -> list[nn.Module]:
  """`depth` Blocks named `{prefix}_{i}` (-> `{prefix}.{i}` in the torch state dict)."""
  block_cls: Callable = nn.remat(Block) if remat else Block
  return [block_cls(heads, mlp_dim, asad_settings, dtype, name=f"{prefix}_{i}")
          for i in range(depth)]
