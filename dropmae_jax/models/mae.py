"""TwinMAE / DropMAE: a masked autoencoder over pairs of video frames (docs/pretraining.md).

Reads top to bottom like the released `models_mae.py`:
  embed both frames -> add frame-identity and sin-cos position embeddings -> concatenate [x; z]
  -> hide 75% of the joint tokens -> encoder on the visible ones -> decoder with mask tokens and
  ASAD in every block -> per-patch pixel prediction -> normalised-pixel MSE on hidden patches.
"""
from __future__ import annotations

from typing import NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from dropmae_jax.data.images import IMAGENET_MEAN, IMAGENET_STD
from dropmae_jax.models import masking
from dropmae_jax.models import vit
from dropmae_jax.ops.asad import attention as asad

NORM_PIX_EPS = 1e-6


class MaeOutput(NamedTuple):
  pred: jax.Array   # (B, 2n, p·p·3) float32: pixels (or per-patch normalised pixels) per patch
  mask: jax.Array   # (B, 2n) float32: 1 = hidden from the encoder (and scored by the loss)


def normalize_frames(frames_uint8: jax.Array) -> jax.Array:
  """uint8 (..., H, W, 3) -> float32 ImageNet-normalised (ToTensor + Normalize)."""
  x = frames_uint8.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """(B, H, W, 3) -> (B, H/p · W/p, p·p·3), pixel order (p, q, c) as the released code."""
  b, h, w, c = images.shape
  p = patch_size
  x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: jax.Array, patch_size: int, height: int, width: int) -> jax.Array:
  """(B, h·w, p·p·3) -> (B, H, W, 3); inverse of `patchify`."""
  b = patches.shape[0]
  p = patch_size
  h, w = height // p, width // p
  x = patches.reshape(b, h, w, p, p, 3).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, height, width, 3)


def pair_targets(frames: jax.Array, patch_size: int, norm_pix_loss: bool) -> jax.Array:
  """(B, 2, H, W, 3) normalised frames -> (B, 2n, p·p·3) float32 regression targets [x; z]."""
  target = jnp.concatenate([patchify(frames[:, 0], patch_size),
                            patchify(frames[:, 1], patch_size)], axis=1).astype(jnp.float32)
  if norm_pix_loss:
    mean = target.mean(axis=-1, keepdims=True)
    var = target.var(axis=-1, keepdims=True, ddof=1)  # torch.Tensor.var is unbiased
    target = (target - mean) / jnp.sqrt(var + NORM_PIX_EPS)
  return target


def reconstruction_loss(frames: jax.Array, out: MaeOutput, patch_size: int,
                        norm_pix_loss: bool = True) -> jax.Array:
  """Mean over hidden patches of the per-patch mean squared error. Scalar float32."""
  target = pair_targets(frames, patch_size, norm_pix_loss)
  per_patch = jnp.mean((out.pred.astype(jnp.float32) - target) ** 2, axis=-1)
  return jnp.sum(per_patch * out.mask) / jnp.sum(out.mask)


class DropMAE(nn.Module):
  """Frame-pair MAE with ASAD in the decoder. `asad.drop_ratio = 0` gives TwinMAE.

  Attributes mirror `config.model` and `config.asad`; build with `DropMAE.from_config`.
  """
  variant: str = "B/16"
  img_size: int = 224
  decoder_embed_dim: int = 512
  decoder_depth: int = 8
  decoder_num_heads: int = 16
  decoder_mlp_ratio: float = 4.0
  mask_ratio: float = 0.75
  masking: str = "random"
  drop_ratio: float = 0.1
  temporal: str = "max"
  asad_in_encoder: bool = False
  asad_impl: str = "reference"
  asad_masked_attention: str = "fused"
  dtype: str = "float32"
  remat: bool = False

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "DropMAE":
    m, a = config.model, config.asad
    if a.in_encoder and asad.resolve_impl(a.impl) != "reference":
      raise ValueError(f"config.asad.impl={a.impl!r} is a kernel, which supports the decoder's "
                       "two-frame layout only; asad.in_encoder=True needs impl='reference'")
    # Configs saved before the field existed (a workdir's config.json) mean today's default.
    masked_attention = a.get("masked_attention", "auto")
    asad.resolve_masked_attention(masked_attention)   # a bad name fails here, not in a trace
    return cls(variant=m.variant, img_size=m.img_size, decoder_embed_dim=m.decoder_embed_dim,
               decoder_depth=m.decoder_depth, decoder_num_heads=m.decoder_num_heads,
               decoder_mlp_ratio=m.decoder_mlp_ratio, mask_ratio=m.mask_ratio,
               masking=m.masking, drop_ratio=a.drop_ratio, temporal=a.temporal,
               asad_in_encoder=a.in_encoder, asad_impl=a.impl,
               asad_masked_attention=masked_attention, dtype=m.dtype, remat=m.remat)

  @property
  def patch_size(self) -> int:
    return vit.decode_variant(self.variant)[1]

  @property
  def tokens_per_frame(self) -> int:
    return (self.img_size // self.patch_size) ** 2

  def setup(self):
    size, p = vit.decode_variant(self.variant)
    if self.img_size % p:
      raise ValueError(f"config.model.img_size {self.img_size} is not a multiple of patch {p}")
    dtype = jnp.dtype(self.dtype)
    grid = self.img_size // p
    asad_settings = vit.AsadSettings(self.drop_ratio, self.temporal, self.asad_impl,
                                     self.asad_masked_attention)
    no_asad = vit.AsadSettings()
    # --- encoder ---
    self.patch_embed = vit.PatchEmbed(size.width, p, dtype)
    frame_embed_init = nn.initializers.normal(1.0)  # torch.randn
    self.temporal_pos_embed_x = self.param("temporal_pos_embed_x", frame_embed_init,
                                           (1, 1, size.width))
    self.temporal_pos_embed_z = self.param("temporal_pos_embed_z", frame_embed_init,
                                           (1, 1, size.width))
    self.pos_embed = vit.sincos_2d(size.width, grid)  # constant, not a parameter
    self.blocks = vit.block_stack("blocks", size.depth, size.heads, size.mlp_dim,
                                  asad_settings if self.asad_in_encoder else no_asad, dtype,
                                  self.remat)
    self.norm = nn.LayerNorm(epsilon=vit.LN_EPS, dtype=dtype)
    # --- decoder ---
    d = self.decoder_embed_dim
    self.decoder_embed = nn.Dense(d, kernel_init=vit.dense_init, dtype=dtype)
    self.mask_token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, d))
    self.decoder_temporal_pos_embed_x = self.param("decoder_temporal_pos_embed_x",
                                                   frame_embed_init, (1, 1, d))
    self.decoder_temporal_pos_embed_z = self.param("decoder_temporal_pos_embed_z",
                                                   frame_embed_init, (1, 1, d))
    self.decoder_pos_embed = vit.sincos_2d(d, grid)
    self.decoder_blocks = vit.block_stack("decoder_blocks", self.decoder_depth,
                                          self.decoder_num_heads,
                                          int(d * self.decoder_mlp_ratio), asad_settings, dtype,
                                          self.remat)
    self.decoder_norm = nn.LayerNorm(epsilon=vit.LN_EPS, dtype=dtype)
    self.decoder_pred = nn.Dense(p * p * 3, kernel_init=vit.dense_init, dtype=jnp.float32)

  def embed_pair(self, frames: jax.Array) -> jax.Array:
    """(B, 2, H, W, 3) -> (B, 2n, D): patch tokens with frame-identity and position embeddings."""
    x = self.patch_embed(frames[:, 0]) + self.temporal_pos_embed_x + self.pos_embed
    z = self.patch_embed(frames[:, 1]) + self.temporal_pos_embed_z + self.pos_embed
    return jnp.concatenate([x, z], axis=1)

  def encode(self, tokens: jax.Array, plan: masking.MaskPlan) -> jax.Array:
    """(B, 2n, D) all tokens -> (B, n_keep, D) encoded visible tokens."""
    visible = jnp.take_along_axis(tokens, plan.ids_keep[..., None], axis=1)
    frame_ids = (plan.ids_keep >= self.tokens_per_frame).astype(jnp.int32)
    for block in self.blocks:
      visible = block(visible, frame_ids if self.asad_in_encoder else None)
    return self.norm(visible)

  def decode(self, latent: jax.Array, plan: masking.MaskPlan) -> jax.Array:
    """(B, n_keep, D) -> (B, 2n, p·p·3) float32 predictions for every patch of both frames."""
    x = self.decoder_embed(latent)
    batch, n_keep, d = x.shape
    length = 2 * self.tokens_per_frame
    mask_tokens = jnp.broadcast_to(self.mask_token, (batch, length - n_keep, d))
    # The residual stream stays float32 (as under torch autocast); matmuls run in `dtype`.
    x = jnp.concatenate([x.astype(jnp.float32), mask_tokens], axis=1)
    x = jnp.take_along_axis(x, plan.ids_restore[..., None], axis=1)  # back to [x; z] order
    frame_embed = jnp.concatenate([
        jnp.broadcast_to(self.decoder_temporal_pos_embed_x, (1, length // 2, d)),
        jnp.broadcast_to(self.decoder_temporal_pos_embed_z, (1, length // 2, d))], axis=1)
    pos = jnp.concatenate([self.decoder_pos_embed, self.decoder_pos_embed], axis=0)
    x = x + frame_embed + pos
    for block in self.decoder_blocks:
      x = block(x)  # frame ids default to the halves [x; z]
    x = self.decoder_norm(x)
    return self.decoder_pred(x).astype(jnp.float32)

  def __call__(self, frames: jax.Array, plan: masking.MaskPlan | None = None) -> MaeOutput:
    """frames: (B, 2, H, W, 3) ImageNet-normalised float -> predictions and mask.

    Draws the mask from the 'masking' RNG unless `plan` is given (parity tests, visualisation);
    ASAD needs the 'asad' RNG.
    """
    chex.assert_rank(frames, 5)
    chex.assert_axis_dimension(frames, 1, 2)
    tokens = self.embed_pair(frames)
    if plan is None:
      plan = masking.make_plan(self.make_rng("masking"), tokens.shape[0], self.tokens_per_frame,
                               self.mask_ratio, self.masking)
    latent = self.encode(tokens, plan)
    return MaeOutput(pred=self.decode(latent, plan), mask=plan.mask)

  def encode_all(self, frames: jax.Array) -> jax.Array:
    """Unmasked encoder features of both frames, (B, 2n, D): what downstream trackers consume."""
    tokens = self.embed_pair(frames)
    plan = masking.keep_all(tokens.shape[0], 2 * self.tokens_per_frame)
    return self.encode(tokens, plan)

