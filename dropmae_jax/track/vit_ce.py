"""The OSTrack-CE backbone: a one-stream ViT with candidate elimination (CE) of search tokens.

As DropTrack's `VisionTransformerCE` after `finetune_track` (jimmy-dq/DropTrack
`lib/models/ostrack/vit_ce.py`, `lib/models/ostrack/base_backbone.py`; CE as
`lib/models/layers/attn_blocks.py` `candidate_elimination` and `lib/utils/ce_utils.py`
`generate_mask_cond`): `[template tokens ; search tokens]` through the blocks, the search tokens the
template attends to least dropped inside blocks `ce_loc`.

Shapes are static: every CE layer keeps a fixed `ceil(keep_ratio · L_s)` search tokens
(576 -> 404 -> 283 -> 199 for a 384 search at 0.7), or masks the eliminated ones on a fixed shape.
"""
from __future__ import annotations

import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dropmae_jax.convert import posemb
from dropmae_jax.models import vit
from dropmae_jax.track import box_head as box_head_lib

# timm's trunc_normal_(std=.02) truncates at the *absolute* bounds ±2, i.e. at ±100σ: in effect
# an untruncated N(0, .02²). Flax's truncated_normal cuts at ±2σ, a different distribution.
timm_trunc_normal = nn.initializers.normal(0.02)
frame_embed_init = nn.initializers.normal(1.0)  # torch.randn for temporal_pos_embed_{x,z}


def torch_default_conv_init(fan_in: int):
  """PyTorch's Conv2d default (kaiming_uniform a=√5): weight and bias U(±1/sqrt(fan_in)).

  The released backbone leaves its patch conv at this default (timm's non-jax init skips convs).
  """
  return (nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=(0, 1, 2),
                                           out_axis=-1),
          box_head_lib.torch_default_bias_init(fan_in))


def ctr_point_index(feat: int) -> int:
  """Flat index of the template's centre token (CE_TEMPLATE_RANGE='CTR_POINT').

  The released `generate_mask_cond` tabulates 7 -> 3, 8 -> 3, 12 -> 5, 14 -> 6 (row = col);
  that is feat//2 - 1 for even and feat//2 for odd sides, extended here to any side.
  """
  c = feat // 2 - 1 if feat % 2 == 0 else feat // 2
  return c * feat + c


def ce_template_rows(mode: str, feat: int) -> np.ndarray | None:
  """Template token indices whose attention scores the search tokens; None = all of them."""
  if mode == "ALL":
    return None
  if mode == "CTR_POINT":
    return np.array([ctr_point_index(feat)])
  if mode == "CTR_REC":
    spans = {8: (3, 5), 12: (5, 7), 7: (3, 4)}  # the released fixed boxes
    if feat not in spans:
      raise ValueError(f"CE_TEMPLATE_RANGE='CTR_REC' is defined for 7/8/12 template tokens per "
                       f"side (released code), not {feat}")
    lo, hi = spans[feat]
    grid = np.arange(feat * feat).reshape(feat, feat)
    return grid[lo:hi, lo:hi].reshape(-1)
  raise ValueError(f"config.model.ce_template_range must be 'CTR_POINT', 'CTR_REC' or 'ALL' "
                   f"('GT_BOX' needs per-sample boxes and is not supported); got {mode!r}")


def ce_keep_counts(num_search: int, num_ce: int, keep_ratio: float) -> list[int]:
  """Search tokens alive after each CE layer: ceil(keep · L) repeatedly (python float maths,
  as the released code)."""
  counts, n = [], num_search
  for _ in range(num_ce):
    if keep_ratio < 1:
      n = math.ceil(keep_ratio * n)
    counts.append(n)
  return counts


def candidate_elimination(tokens: jax.Array, probs: jax.Array, global_index: jax.Array, *,
                          lens_t: int, keep: int, template_rows: np.ndarray | None
                          ) -> tuple[jax.Array, jax.Array]:
  """Keep the `keep` search tokens the template attends to most (released `candidate_elimination`).

  Args:
    tokens: (B, Lt + Ls, D) after the attention residual.
    probs: (B, H, Lt + Ls, Lt + Ls) post-softmax attention of this block.
    global_index: (B, Ls) int32 original search positions of the current search tokens.
    lens_t: Lt, template tokens (always kept, in front).
    keep: static number of search tokens to keep.
    template_rows: template query rows that score (None = all).
  Returns:
    tokens (B, Lt + keep, D) with kept search tokens in descending score order, and their
    original positions (B, keep) int32.
  """
  attn_t = probs[:, :, :lens_t, lens_t:]                       # (B, H, Lt, Ls)
  if template_rows is not None:
    attn_t = attn_t[:, :, template_rows]
  score = attn_t.mean(axis=2).mean(axis=1)                     # (B, Ls)
  _, top = jax.lax.top_k(score, keep)                          # descending, as torch.sort
  kept_index = jnp.take_along_axis(global_index, top, axis=1)
  search = jnp.take_along_axis(tokens[:, lens_t:], top[:, :, None], axis=1)
  return jnp.concatenate([tokens[:, :lens_t], search], axis=1), kept_index


def masked_candidate_elimination(probs: jax.Array, alive: jax.Array, keep: jax.Array, *,
                                 lens_t: int, template_rows: np.ndarray | None) -> jax.Array:
  """`candidate_elimination` on a fixed shape: which search tokens stay alive, not a gather.

  The same scores as the released function, ranked among the tokens still alive; the `keep`
  best stay. Eliminated tokens remain in the sequence, hidden from every query as keys
  (`Attention(key_mask=...)`), so the kept tokens see exactly what they see after a gather
  (ties in the score may break differently: the gather ranks them in the previous layer's
  order, this in original order).

  Args:
    probs: (B, H, Lt + Ls, Lt + Ls) post-softmax attention of this block (hidden keys 0).
    alive: (B, Ls) bool, search tokens alive before this layer.
    keep: int32 scalar, how many stay alive (may be traced: one compiled step for every ratio).
    lens_t: Lt, template tokens (always kept).
    template_rows: template query rows that score (None = all).
  Returns:
    (B, Ls) bool, alive after this layer.
  """
  attn_t = probs[:, :, :lens_t, lens_t:]
  if template_rows is not None:
    attn_t = attn_t[:, :, template_rows]
  score = jnp.where(alive, attn_t.mean(axis=2).mean(axis=1), -jnp.inf)   # (B, Ls)
  batch, lens_s = score.shape
  _, order = jax.lax.top_k(score, lens_s)                                   # all, descending
  rank = jnp.zeros_like(order).at[jnp.arange(batch)[:, None], order].set(
      jnp.broadcast_to(jnp.arange(lens_s, dtype=order.dtype), order.shape))
  return rank < keep


class VisionTransformerCE(nn.Module):
  """The released `VisionTransformerCE` after `finetune_track` (the `backbone` of OSTrack).

  (B, Hz, Wz, 3), (B, Hx, Wx, 3) -> tokens (B, Lz + Lx, D) after the final LayerNorm, with the
  search part in original order and eliminated positions exactly zero, and the kept global
  indices (one (B, n_l) int32 array per CE layer).

  With `keep_counts` ((n_ce,) int32, may be traced) the elimination is masked instead
  (`masked_candidate_elimination`): the shapes do not depend on the counts, so one compiled
  step serves every keep ratio of the CE warm-up, at the cost of computing the eliminated
  tokens too. The outputs are the same; the second result is then one (B, Ls) bool alive-mask
  per CE layer.
  """
  width: int
  depth: int
  heads: int
  mlp_dim: int
  patch_size: int
  template_size: int
  search_size: int
  ce_loc: tuple[int, ...] = (3, 6, 9)
  ce_keep_ratio: float = 0.7
  ce_template_range: str = "CTR_POINT"
  drop_path_rate: float = 0.1
  pretrain_img_size: int = 224
  dtype: Any = jnp.float32

  @property
  def feat_z(self) -> int:
    return self.template_size // self.patch_size

  @property
  def feat_x(self) -> int:
    return self.search_size // self.patch_size

  def setup(self):
    d, p = self.width, self.patch_size
    self.patch_embed = vit.PatchEmbed(d, p, self.dtype, *torch_default_conv_init(3 * p * p))
    legacy_grid = self.pretrain_img_size // p
    # Unused by the forward (ADD_CLS_TOKEN False; the search/template tables replace pos_embed)
    # but part of the released state dict, so strict loads need them.
    self.cls_token = self.param("cls_token", timm_trunc_normal, (1, 1, d))
    self.pos_embed = self.param("pos_embed", timm_trunc_normal, (1, 1 + legacy_grid ** 2, d))
    # finetune_track: the new tables start as the bicubic resize of pos_embed's patch slots.
    pos = self.pos_embed
    self.pos_embed_z = self.param("pos_embed_z", lambda _: _resize_table(pos, self.feat_z))
    self.pos_embed_x = self.param("pos_embed_x", lambda _: _resize_table(pos, self.feat_x))
    self.temporal_pos_embed_x = self.param("temporal_pos_embed_x", frame_embed_init, (1, 1, d))
    self.temporal_pos_embed_z = self.param("temporal_pos_embed_z", frame_embed_init, (1, 1, d))
    rates = np.linspace(0.0, self.drop_path_rate, self.depth)  # torch.linspace(0, rate, depth)
    self.blocks = [vit.Block(self.heads, self.mlp_dim, vit.AsadSettings(), self.dtype,
                             timm_trunc_normal, float(rates[i]), name=f"blocks_{i}")
                   for i in range(self.depth)]
    self.norm = nn.LayerNorm(epsilon=vit.LN_EPS, dtype=self.dtype)

  def __call__(self, template: jax.Array, search: jax.Array, *, keep_ratio: float | None = None,
               keep_counts: jax.Array | None = None, train: bool = False
               ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    batch = template.shape[0]
    chex.assert_shape(template, (batch, self.template_size, self.template_size, 3))
    chex.assert_shape(search, (batch, self.search_size, self.search_size, 3))
    z = self.patch_embed(template) + self.pos_embed_z + self.temporal_pos_embed_z
    x = self.patch_embed(search) + self.pos_embed_x + self.temporal_pos_embed_x
    lens_t, lens_s = z.shape[1], x.shape[1]
    tokens = jnp.concatenate([z, x], axis=1).astype(self.dtype)
    global_index = jnp.broadcast_to(jnp.arange(lens_s, dtype=jnp.int32), (batch, lens_s))
    rows = ce_template_rows(self.ce_template_range, self.feat_z)
    if keep_counts is not None:
      return self._masked(tokens, lens_t, rows, keep_counts, train)
    kept = []
    for i, block in enumerate(self.blocks):
      if i not in self.ce_loc:
        tokens = block(tokens, deterministic=not train)
        continue
      # Released CEBlock: its own ratio unless the call passes one; >= 1 (or a count that rounds
      # back up to L_s) eliminates nothing.
      ratio = self.ce_keep_ratio if keep_ratio is None else keep_ratio
      n_now = tokens.shape[1] - lens_t
      keep = math.ceil(ratio * n_now) if ratio < 1 else n_now
      if keep == n_now:
        tokens = block(tokens, deterministic=not train)
      else:
        def hook(t, probs, keep=keep, gi=global_index):
          return candidate_elimination(t, probs, gi, lens_t=lens_t, keep=keep,
                                       template_rows=rows)
        tokens, global_index = block(tokens, mid_hook=hook, deterministic=not train)
      kept.append(global_index)
    tokens = self.norm(tokens)
    z_out, x_kept = tokens[:, :lens_t], tokens[:, lens_t:]
    # Scatter the surviving search tokens back to their places; eliminated ones are exact zeros.
    x_full = jnp.zeros((batch, lens_s, tokens.shape[-1]), tokens.dtype)
    x_full = x_full.at[jnp.arange(batch)[:, None], global_index].set(x_kept)
    return jnp.concatenate([z_out, x_full], axis=1), tuple(kept)

  def _masked(self, tokens: jax.Array, lens_t: int, rows: np.ndarray | None,
              keep_counts: jax.Array, train: bool) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """The forward with masked candidate elimination (see the class docstring)."""
    batch, length, _ = tokens.shape
    ce_layers = [i for i in range(self.depth) if i in self.ce_loc]
    chex.assert_shape(keep_counts, (len(ce_layers),))
    alive = jnp.ones((batch, length - lens_t), bool)
    key_mask = None  # nothing hidden before the first CE layer: the plain attention path
    kept = []
    for i, block in enumerate(self.blocks):
      if i not in self.ce_loc:
        tokens = block(tokens, deterministic=not train, key_mask=key_mask)
        continue
      keep = keep_counts[ce_layers.index(i)]

      def hook(t, probs, keep=keep, alive=alive):
        return t, masked_candidate_elimination(probs, alive, keep, lens_t=lens_t,
                                               template_rows=rows)
      tokens, alive = block(tokens, mid_hook=hook, deterministic=not train, key_mask=key_mask)
      key_mask = jnp.concatenate([jnp.ones((batch, lens_t), bool), alive], axis=1)
      kept.append(alive)
    tokens = self.norm(tokens)
    search = jnp.where(alive[..., None], tokens[:, lens_t:], jnp.zeros((), tokens.dtype))
    return jnp.concatenate([tokens[:, :lens_t], search], axis=1), tuple(kept)


def _resize_table(pos_embed: jax.Array, grid: int) -> jax.Array:
  """(1, 1 + g², D) table -> (1, grid², D): PyTorch-exact bicubic of its patch slots.

  The (static) interpolation matrices come from `posemb`, so this also runs on traced values.
  """
  old = int(round(math.sqrt(pos_embed.shape[1] - 1)))
  m = jnp.asarray(posemb._interp_matrix(old, grid), jnp.float32)
  table = pos_embed[0, 1:].reshape(old, old, -1)
  out = jnp.einsum("hi,wj,ijd->hwd", m, m, table, precision=jax.lax.Precision.HIGHEST)
  return out.reshape(1, grid * grid, -1)
