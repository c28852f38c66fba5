"""The DropSeg network: DropMAE's ViT over [memory frame + its object mask ; query frame], a
ViTDet-style deconvolution pyramid and STCN's mask decoder.

As jimmy-dq/DropSeg `model/models_vit.py` (`VisionTransformer`, modes 'backbone' and
'segmentation_single_onject', `aggregate`), `model/network.py` (`Decoder`) and `model/modules.py`
(`ResBlock`, `UpsampleBlock`); the frozen two-frame position table as `model/model.py`
(`interpolate_pos_embed`) builds it and `inference_core.py` (`interpolate_pos_embed_2D`)
re-interpolates it for other frame sizes. One released forward is one object; here the objects
of a frame are a batch axis of one call (the released code loops over them):

  memory tokens = patch_embed(F0) + mask_patch_embed(M0_k) + temporal_pos_embed_z
  query tokens  = patch_embed(F1) + temporal_pos_embed_x
  tokens = [memory ; query] + the spatial table P (the same P for both frames)
  -> blocks (full joint attention) -> norm -> the query tokens as a stride-16 map f16
  f8 = fpn2(f16) (ConvTranspose 2x2/2); f4 = fpn1(f16) (ConvTranspose, LayerNorm over channels,
  GELU, ConvTranspose); decoder(f16, f8, f4) -> one logit map per object at the input size.

Images are NHWC float32, ImageNet-normalised; sides must be multiples of the patch (16): pad
first (`inference.pad_to_multiple`). Parameter names mirror the released state dict
(`layout.py` maps them). Variables come in two collections:
  * 'params': what the released fine-tuning trains (Adam over requires_grad parameters that
    receive a gradient).
  * 'frozen': what it never changes: `pos_embed_two_frame` / `pos_embed_three_frame`
    (nn.Parameter(requires_grad=False)) and the parameters outside the forward (`cls_token`,
    `pos_embed`, `head`, `fc_norm`: no gradient, so torch's Adam skips them). They exist for
    the strict state dict; `pos_embed_two_frame` is the spatial table the forward adds.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dropmae_jax.convert import posemb
from dropmae_jax.models import vit

FROZEN = "frozen"
CLAMP = 1e-7   # `aggregate`'s clamp of the probabilities before the logit

# timm's trunc_normal_(std=.02) truncates at the absolute bounds ±2 (±100σ): in effect N(0, .02²).
timm_trunc_normal = nn.initializers.normal(0.02)
frame_embed_init = nn.initializers.normal(1.0)   # torch.randn for temporal_pos_embed_{x,z}


def torch_default_init(fan_in: int, in_axis=(0, 1, 2), out_axis=-1) -> tuple[Callable, Callable]:
  """PyTorch's Conv2d / ConvTranspose2d default (kaiming_uniform a=√5): weight and bias
  U(±1/sqrt(fan_in)), fan_in as torch computes it from its weight (Conv2d: in·kh·kw;
  ConvTranspose2d, weight (in, out, kh, kw): out·kh·kw)."""
  bound = 1.0 / math.sqrt(fan_in)

  def bias_init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return (nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=in_axis,
                                           out_axis=out_axis), bias_init)


def conv3x3(features: int, in_features: int, dtype, name: str) -> nn.Conv:
  """nn.Conv2d(in, out, kernel_size=3, padding=1) with torch's default init."""
  kernel_init, bias_init = torch_default_init(in_features * 9)
  return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=kernel_init,
                 bias_init=bias_init, dtype=dtype, name=name)


def upsample_bilinear(x: jax.Array, factor: int) -> jax.Array:
  """F.interpolate(scale_factor=factor, mode='bilinear', align_corners=False) on NHWC."""
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, h * factor, w * factor, c), "linear", antialias=False)


class ConvTranspose2x2(nn.Module):
  """nn.ConvTranspose2d(in, out, kernel_size=2, stride=2) on NHWC: no overlap between taps, so
  out[2i+a, 2j+c, o] = Σ_ch x[i, j, ch] · W[ch, o, a, c] + b[o] (torch weight W (in, out, kh,
  kw); no kernel flip). `kernel` is stored (kh, kw, out, in), the layout of
  flax.linen.ConvTranspose(transpose_kernel=True), so the generic conv rule of
  convert/layout.py (Flax (kh, kw, a, b) <-> torch (b, a, kh, kw)) converts it."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, cin = x.shape
    kernel_init, bias_init = torch_default_init(self.features * 4, in_axis=(0, 1, 2), out_axis=3)
    kernel = self.param("kernel", kernel_init, (2, 2, self.features, cin))
    bias = self.param("bias", bias_init, (self.features,))
    y = jnp.einsum("bhwi,acoi->bhawco", x.astype(self.dtype), kernel.astype(self.dtype))
    return y.reshape(b, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)


class Norm2d(nn.Module):
  """ViTDet's Norm2d: nn.LayerNorm(eps=1e-6) over the channels of each pixel (module `ln`)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.LayerNorm(epsilon=vit.LN_EPS, dtype=self.dtype, name="ln")(x)


class ResBlock(nn.Module):
  """STCN's ResBlock(in, out): r = conv2(relu(conv1(relu(x)))); out = downsample(x) + r, the
  3x3 `downsample` conv only when in != out."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cin = x.shape[-1]
    r = conv3x3(self.features, cin, self.dtype, "conv1")(nn.relu(x))
    r = conv3x3(self.features, self.features, self.dtype, "conv2")(nn.relu(r))
    if cin != self.features:
      x = conv3x3(self.features, cin, self.dtype, "downsample")(x)
    return x + r


class UpsampleBlock(nn.Module):
  """STCN's UpsampleBlock(skip_c, up_c, out_c): ResBlock(skip_conv(skip) + bilinear×2(up))."""
  up_features: int
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, skip: jax.Array, up: jax.Array) -> jax.Array:
    x = conv3x3(self.up_features, skip.shape[-1], self.dtype, "skip_conv")(skip)
    x = x + upsample_bilinear(up, 2)
    return ResBlock(self.features, self.dtype, name="out_conv")(x)


class Decoder(nn.Module):
  """STCN's Decoder as DropSeg sets it: compress ResBlock(D -> 512), up_16_8
  UpsampleBlock(512, 512, 256), up_8_4 UpsampleBlock(256, 256, 256), pred conv3 (256 -> 1) on
  relu(x), bilinear ×4. (f16, f8, f4) NHWC -> (N, 4·H4, 4·W4, 1) logits."""
  compress_channels: int = 512
  decoder_channels: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, f16: jax.Array, f8: jax.Array, f4: jax.Array) -> jax.Array:
    x = ResBlock(self.compress_channels, self.dtype, name="compress")(f16)
    x = UpsampleBlock(self.compress_channels, self.decoder_channels, self.dtype,
                      name="up_16_8")(f8, x)
    x = UpsampleBlock(self.decoder_channels, self.decoder_channels, self.dtype,
                      name="up_8_4")(f4, x)
    x = conv3x3(1, self.decoder_channels, self.dtype, "pred")(nn.relu(x))
    return upsample_bilinear(x, 4)


def two_frame_table(pos_embed: jax.Array, grid: int) -> tuple[jax.Array, jax.Array]:
  """`interpolate_pos_embed` (jimmy-dq/DropSeg `model/model.py`): (1, 1 + g², D) ->
  pos_embed_two_frame (1, 1 + 2·grid², D) = [cls ; P ; P] and pos_embed_three_frame
  [cls ; P ; P ; P], P the PyTorch-exact bicubic resize of the patch slots to grid x grid
  (the slots themselves when grid == g). Runs on traced values (static matrices)."""
  old = int(round(math.sqrt(pos_embed.shape[1] - 1)))
  cls, slots = pos_embed[:, :1], pos_embed[:, 1:]
  p = slots if grid == old else resize_table(slots, old, (grid, grid))
  return (jnp.concatenate([cls, p, p], axis=1), jnp.concatenate([cls, p, p, p], axis=1))


def resize_table(table: jax.Array, old: int, new: tuple[int, int]) -> jax.Array:
  """(1, old², D) row-major table -> (1, h·w, D): torch's F.interpolate(mode='bicubic',
  align_corners=False) (Keys a = -0.75, clamped taps, no antialias even when shrinking)."""
  h, w = new
  mh = jnp.asarray(posemb._interp_matrix(old, h), jnp.float32)   # pylint: disable=protected-access
  mw = jnp.asarray(posemb._interp_matrix(old, w), jnp.float32)   # pylint: disable=protected-access
  image = table[0].reshape(old, old, -1)
  out = jnp.einsum("hi,wj,ijd->hwd", mh, mw, image, precision=jax.lax.Precision.HIGHEST)
  return out.reshape(1, h * w, -1)


class DropSeg(nn.Module):
  """DropSeg's `VisionTransformer` (vit_base_patch16, global_pool=True, single_object=False).

  Build with `DropSeg.from_config(config)` (config = `configlib.dropseg_defaults()` or a file
  under configs/). Attributes mirror `config.model`.
  """
  variant: str = "B/16"
  depth: int = -1                  # < 0: the variant's depth
  img_size: int = 384              # training frame side: pos_embed_two_frame's grid
  pretrain_img_size: int = 224     # timm's img_size: pos_embed's grid
  num_classes: int = 1000          # the unused classification head
  fpn1_channels: int = 256         # fpn1's output (up_8_4's skip)
  fpn2_channels: int = 512         # fpn2's output (up_16_8's skip)
  compress_channels: int = 512     # stcn_decoder.compress's output
  decoder_channels: int = 256      # up_16_8 / up_8_4 outputs
  drop_path_rate: float = 0.1
  dtype: str = "float32"

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "DropSeg":
    m = config.model
    return cls(variant=m.variant, depth=m.get("depth", -1), img_size=m.img_size,
               pretrain_img_size=m.pretrain_img_size, num_classes=m.num_classes,
               fpn1_channels=m.fpn1_channels, fpn2_channels=m.fpn2_channels,
               compress_channels=m.compress_channels, decoder_channels=m.decoder_channels,
               drop_path_rate=float(m.drop_path_rate), dtype=m.dtype)

  @property
  def patch_size(self) -> int:
    return vit.decode_variant(self.variant)[1]

  @property
  def width(self) -> int:
    return vit.decode_variant(self.variant)[0].width

  @property
  def grid(self) -> int:
    """Patches per side of the training frame (24 at 384)."""
    return self.img_size // self.patch_size

  def num_blocks(self) -> int:
    size, _ = vit.decode_variant(self.variant)
    return size.depth if self.depth < 0 else self.depth

  def setup(self):
    size, p = vit.decode_variant(self.variant)
    for name, side in (("img_size", self.img_size), ("pretrain_img_size", self.pretrain_img_size)):
      if side <= 0 or side % p:
        raise ValueError(f"config.model.{name} {side} is not a positive multiple of patch {p}")
    d, dtype = size.width, jnp.dtype(self.dtype)
    legacy_grid = self.pretrain_img_size // p
    # timm VisionTransformer.__init__: patch_embed (its conv left at torch's default init),
    # cls_token, pos_embed, blocks, norm, head; then DropSeg's fc_norm, mask_patch_embed, fpn1,
    # fpn2, stcn_decoder, temporal_pos_embed_x / _z.
    self.patch_embed = vit.PatchEmbed(d, p, dtype, *torch_default_init(3 * p * p))
    self.cls_token = self.variable(FROZEN, "cls_token", self._trunc_normal, (1, 1, d))
    self.pos_embed = self.variable(FROZEN, "pos_embed", self._trunc_normal,
                                   (1, 1 + legacy_grid ** 2, d))
    rates = np.linspace(0.0, self.drop_path_rate, self.num_blocks())   # torch.linspace
    self.blocks = [vit.Block(size.heads, size.mlp_dim, vit.AsadSettings(), dtype,
                             timm_trunc_normal, float(rates[i]), name=f"blocks_{i}")
                   for i in range(self.num_blocks())]
    self.norm = nn.LayerNorm(epsilon=vit.LN_EPS, dtype=dtype)
    self.head = self.variable(FROZEN, "head", lambda: {
        "kernel": self._trunc_normal((d, self.num_classes)),
        "bias": jnp.zeros((self.num_classes,))})
    self.fc_norm = self.variable(FROZEN, "fc_norm", lambda: {"scale": jnp.ones((d,)),
                                                             "bias": jnp.zeros((d,))})
    self.mask_patch_embed = vit.PatchEmbed(d, p, dtype, *torch_default_init(p * p))
    self.fpn1_0 = ConvTranspose2x2(d, dtype)
    self.fpn1_1 = Norm2d(dtype)
    self.fpn1_3 = ConvTranspose2x2(self.fpn1_channels, dtype)
    self.fpn2_0 = ConvTranspose2x2(self.fpn2_channels, dtype)
    self.stcn_decoder = Decoder(self.compress_channels, self.decoder_channels, dtype)
    self.temporal_pos_embed_x = self.param("temporal_pos_embed_x", frame_embed_init, (1, 1, d))
    self.temporal_pos_embed_z = self.param("temporal_pos_embed_z", frame_embed_init, (1, 1, d))
    # model/model.py, after loading the DropMAE weights: the frozen tables from pos_embed.
    pos = self.pos_embed
    self.pos_embed_two_frame = self.variable(
        FROZEN, "pos_embed_two_frame", lambda: two_frame_table(pos.value, self.grid)[0])
    self.pos_embed_three_frame = self.variable(
        FROZEN, "pos_embed_three_frame", lambda: two_frame_table(pos.value, self.grid)[1])

  def _trunc_normal(self, shape: tuple[int, ...]) -> jax.Array:
    return timm_trunc_normal(self.make_rng("params"), shape)

  def spatial_table(self, grid_h: int, grid_w: int) -> jax.Array:
    """The table added to [memory ; query] tokens, (1, 2·grid_h·grid_w, D).

    At the training grid: `pos_embed_two_frame[:, 1:]` as the released forward adds it. At any
    other grid: its first block bicubic-resized to (grid_h, grid_w), used for both frames
    (`interpolate_pos_embed_2D` in jimmy-dq/DropSeg `inference_core.py`).
    """
    table = self.pos_embed_two_frame.value
    g = self.grid
    if (grid_h, grid_w) == (g, g):
      return table[:, 1:]
    p = resize_table(table[:, 1:1 + g * g], g, (grid_h, grid_w))
    return jnp.concatenate([p, p], axis=1)

  def features(self, memory_frame: jax.Array, memory_masks: jax.Array, query_frame: jax.Array,
               *, train: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The released mode 'backbone', every object at once.

    Args:
      memory_frame: (B, H, W, 3) normalised frame whose masks are given.
      memory_masks: (B, K, H, W) in {0, 1}: one binary mask per object.
      query_frame: (B, H, W, 3) normalised frame to segment.
      train: drop-path on (rng 'dropout').
    Returns:
      (f16, f8, f4): (B·K, H/16, W/16, D), (B·K, H/8, W/8, fpn2_channels),
      (B·K, H/4, W/4, fpn1_channels), object-major within each frame (row b·K + k).
    """
    b, h, w, _ = memory_frame.shape
    k = memory_masks.shape[1]
    p = self.patch_size
    chex.assert_shape(memory_masks, (b, k, h, w))
    chex.assert_shape(query_frame, (b, h, w, 3))
    if h % p or w % p:
      raise ValueError(f"DropSeg frames must have sides that are multiples of {p}; got {h}x{w} "
                       "(pad them: inference.pad_to_multiple)")
    dtype = jnp.dtype(self.dtype)
    gh, gw = h // p, w // p
    frame_tokens = self.patch_embed(memory_frame.astype(dtype))                    # (B, L, D)
    mask_tokens = self.mask_patch_embed(
        memory_masks.reshape(b * k, h, w, 1).astype(dtype))                         # (B·K, L, D)
    memory = jnp.repeat(frame_tokens, k, axis=0) + mask_tokens
    memory = memory + self.temporal_pos_embed_z.astype(dtype)
    query = self.patch_embed(query_frame.astype(dtype)) + self.temporal_pos_embed_x.astype(dtype)
    query = jnp.repeat(query, k, axis=0)
    tokens = jnp.concatenate([memory, query], axis=1)
    tokens = tokens + self.spatial_table(gh, gw).astype(dtype)
    for block in self.blocks:
      tokens = block(tokens, deterministic=not train)
    tokens = self.norm(tokens)
    f16 = tokens[:, -gh * gw:].reshape(b * k, gh, gw, -1)
    f8 = self.fpn2_0(f16)
    f4 = self.fpn1_3(nn.gelu(self.fpn1_1(self.fpn1_0(f16)), approximate=False))
    return f16, f8, f4

  def __call__(self, memory_frame: jax.Array, memory_masks: jax.Array, query_frame: jax.Array,
               *, train: bool = False) -> jax.Array:
    """Per-object logits (B, K, H, W) float32 of the query frame (see `features`): the released
    'backbone' then the decoder of 'segmentation_single_onject' before its sigmoid."""
    b, h, w, _ = memory_frame.shape
    k = memory_masks.shape[1]
    f16, f8, f4 = self.features(memory_frame, memory_masks, query_frame, train=train)
    logits = self.stcn_decoder(f16, f8, f4)                              # (B·K, H, W, 1)
    return logits.reshape(b, k, h, w).astype(jnp.float32)


def soft_aggregate(prob: jax.Array, axis: int = 1, selector: jax.Array | None = None
                   ) -> jax.Array:
  """STM's soft aggregation as DropSeg's `aggregate`: per-object probabilities (K along `axis`)
  -> logits with the background first (K + 1 along `axis`).

  p_bg = Π_k (1 - p_k); every channel clamped to [1e-7, 1 - 1e-7]; logit = log(p / (1 - p)).
  softmax over `axis` gives the final probabilities. `selector` (broadcastable to prob, e.g.
  (B, K, 1, 1)) zeroes absent objects first, as the released training does. In float32 the
  logits of probabilities at the clamp are noisy (log of 1 - p near 1): compare them only away
  from it.
  """
  if selector is not None:
    prob = prob * selector
  prob = jnp.asarray(prob, jnp.float32)
  background = jnp.prod(1 - prob, axis=axis, keepdims=True)
  p = jnp.clip(jnp.concatenate([background, prob], axis=axis), CLAMP, 1 - CLAMP)
  return jnp.log(p / (1 - p))


def aggregate_probabilities(object_logits: jax.Array, axis: int = 1) -> jax.Array:
  """Per-object logits (K along `axis`) -> probabilities over {background, objects}
  (K + 1 along `axis`): sigmoid, `soft_aggregate`, softmax (jimmy-dq/DropSeg
  `model/aggregate.py` with keep_bg=True)."""
  return jax.nn.softmax(soft_aggregate(jax.nn.sigmoid(object_logits), axis), axis=axis)


def _dummy_inputs(model: DropSeg, objects: int = 1, batch: int = 1):
  side = model.img_size
  return (jnp.zeros((batch, side, side, 3), jnp.float32),
          jnp.zeros((batch, objects, side, side), jnp.float32),
          jnp.zeros((batch, side, side, 3), jnp.float32))


def init_variables(model: DropSeg, seed: int = 0) -> dict:
  """Freshly initialised {'params', 'frozen'} (numpy) of `model`: timm's init for the ViT, torch's
  defaults for the modules DropSeg adds, the frozen tables from the initial pos_embed."""
  variables = jax.jit(model.init)({"params": jax.random.key(seed)}, *_dummy_inputs(model))
  return jax.tree.map(np.asarray, dict(variables))


def variable_shapes(model: DropSeg) -> dict:
  """{'params', 'frozen'} as jax.ShapeDtypeStruct, without computing anything."""
  return dict(jax.eval_shape(lambda f, m, q: model.init(jax.random.key(0), f, m, q),
                             *_dummy_inputs(model)))


def count_params(tree) -> int:
  return int(sum(np.size(v) for v in jax.tree.leaves(tree)))
