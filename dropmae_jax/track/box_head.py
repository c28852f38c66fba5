"""OSTrack's CenterNet-style box head (`CenterPredictor`) and its box decoding (`cal_bbox`).

Released code: OSTrack `lib/models/layers/head.py`.

Submodule names mirror the released state dict (`box_head.conv{k}_{b}.0` Conv2d,
`box_head.conv{k}_{b}.1` BatchNorm2d, `box_head.conv5_{b}`), so the converter is a rename plus
transposes. Feature maps are NHWC here where the released code is NCHW.
"""
from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

BN_MOMENTUM = 0.1   # PyTorch's convention: running = (1 - m) · running + m · batch
BN_EPS = 1e-5
SCORE_CLAMP = 1e-4  # OSTrack's _sigmoid clamps to [1e-4, 1 - 1e-4]
BRANCHES = (("ctr", 1), ("offset", 2), ("size", 2))

# torch.nn.init.xavier_uniform_ on a Conv2d weight (O, I, kh, kw) uses fan_in = I·kh·kw and
# fan_out = O·kh·kw: the same as Flax's xavier_uniform on the (kh, kw, I, O) kernel.
head_kernel_init = nn.initializers.xavier_uniform()


def torch_default_bias_init(fan_in: int):
  """PyTorch's Conv2d/Linear default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  The released head only re-initialises params with dim > 1, so conv biases keep this.
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class TorchBatchNorm(nn.Module):
  """BatchNorm2d with PyTorch's exact semantics over NHWC maps. (B, H, W, C) -> same.

  train=True normalises with the biased batch variance and updates `batch_stats` with the
  *unbiased* one (as torch does; flax.linen.BatchNorm would store the biased variance), momentum
  0.1 in torch's convention. train=False uses the running statistics. Variables: params
  scale/bias (torch weight/bias), batch_stats mean/var (torch running_mean/running_var).
  """
  momentum: float = BN_MOMENTUM
  epsilon: float = BN_EPS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    channels = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (channels,))
    bias = self.param("bias", nn.initializers.zeros, (channels,))
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
    x32 = x.astype(jnp.float32)
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x32, axis=axes)
      var = jnp.mean(jnp.square(x32 - mean), axis=axes)
      if not self.is_initializing():
        n = math.prod(x.shape[:-1])
        unbiased = var * (n / max(n - 1, 1))
        ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * mean
        ra_var.value = (1 - self.momentum) * ra_var.value + self.momentum * unbiased
    else:
      mean, var = ra_mean.value, ra_var.value
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(x.dtype)


class ConvBnRelu(nn.Module):
  """`conv(in, out)` of OSTrack's head: Conv3x3 (pad 1, bias) -> BatchNorm2d -> ReLU. NHWC."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    fan_in = x.shape[-1] * 9
    x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=head_kernel_init,
                bias_init=torch_default_bias_init(fan_in), dtype=self.dtype, name="0")(x)
    x = TorchBatchNorm(name="1")(x, train)
    return nn.relu(x)


def clamped_sigmoid(x: jax.Array) -> jax.Array:
  return jnp.clip(jax.nn.sigmoid(x.astype(jnp.float32)), SCORE_CLAMP, 1 - SCORE_CLAMP)


def cal_bbox(score_map: jax.Array, size_map: jax.Array, offset_map: jax.Array) -> jax.Array:
  """The released `CenterPredictor.cal_bbox`: argmax cell + its offset and size.

  Args:
    score_map: (B, F, F) (possibly Hann-windowed by the tracker).
    size_map: (B, F, F, 2) normalised (w, h).
    offset_map: (B, F, F, 2) sub-cell (dx, dy) in cell units.
  Returns:
    (B, 4) float32 normalised (cx, cy, w, h) = ((ix + dx) / F, (iy + dy) / F, w, h); no +0.5
    cell centre (the offset learns it).
  """
  chex.assert_rank(score_map, 3)
  batch, feat, _ = score_map.shape
  chex.assert_shape([size_map, offset_map], (batch, feat, feat, 2))
  idx = jnp.argmax(score_map.reshape(batch, -1), axis=1)  # first maximum, as torch.max
  idx_y, idx_x = idx // feat, idx % feat
  rows = jnp.arange(batch)
  size = size_map.reshape(batch, -1, 2)[rows, idx].astype(jnp.float32)
  offset = offset_map.reshape(batch, -1, 2)[rows, idx].astype(jnp.float32)
  cx = (idx_x.astype(jnp.float32) + offset[:, 0]) / feat
  cy = (idx_y.astype(jnp.float32) + offset[:, 1]) / feat
  return jnp.stack([cx, cy, size[:, 0], size[:, 1]], axis=1)


class CenterPredictor(nn.Module):
  """Three conv towers (ctr, offset, size), each channel -> /2 -> /4 -> /8, then 1x1 to 1/2/2.

  (B, F, F, D) search feature map -> dict(score_map (B, F, F), size_map (B, F, F, 2),
  offset_map (B, F, F, 2)), all float32; score and size maps are clamped sigmoids.
  """
  channels: int = 256
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, feat: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    chex.assert_rank(feat, 4)
    c = self.channels
    outs = {}
    for branch, out_ch in BRANCHES:
      x = feat
      for k, width in enumerate((c, c // 2, c // 4, c // 8), start=1):
        x = ConvBnRelu(width, self.dtype, name=f"conv{k}_{branch}")(x, train)
      outs[branch] = nn.Conv(out_ch, (1, 1), kernel_init=head_kernel_init,
                             bias_init=torch_default_bias_init(c // 8), dtype=self.dtype,
                             name=f"conv5_{branch}")(x)
    return {"score_map": clamped_sigmoid(outs["ctr"])[..., 0],
            "size_map": clamped_sigmoid(outs["size"]),
            "offset_map": outs["offset"].astype(jnp.float32)}
