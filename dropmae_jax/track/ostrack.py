"""OSTrack with candidate elimination (OSTrack-CE), the DropTrack tracker (downstream.md §1.3).

One-stream ViT over `[template tokens ; search tokens]`, candidate elimination (CE) of search
tokens inside blocks `ce_loc`, and the CenterNet-style box head. Param names mirror the released
`checkpoint['net']` keys (`backbone.pos_embed_z`, `backbone.blocks.{i}.attn.qkv.*`,
`box_head.conv1_ctr.0.*`, ...); `track/layout.py` maps them both ways.

Images are NHWC float32, ImageNet-normalised. Shapes are static: every CE layer keeps a fixed
`ceil(keep_ratio · L_s)` search tokens (576 -> 404 -> 283 -> 199 for a 384 search at 0.7).
"""
from __future__ import annotations

import math
import os
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dropmae_jax.convert import posemb
from dropmae_jax.track import box_head as box_head_lib
from dropmae_jax.models import vit

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


class OSTrackCE(nn.Module):
  """DropTrack / OSTrack-CE: `backbone` (ViT with CE) + `box_head` (CenterPredictor).

  Build with `OSTrackCE.from_config(config)` (config = `configlib.droptrack_defaults()` or a file
  under configs/). Attributes mirror `config.model`.
  """
  variant: str = "B/16"
  template_size: int = 192
  search_size: int = 384
  ce_loc: tuple[int, ...] = (3, 6, 9)
  ce_keep_ratio: float = 0.7
  ce_template_range: str = "CTR_POINT"
  head_channels: int = 256
  drop_path_rate: float = 0.1
  depth: int = -1                  # < 0: the variant's depth
  pretrain_img_size: int = 224
  dtype: str = "float32"

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "OSTrackCE":
    m = config.model
    return cls(variant=m.variant, template_size=m.template_size, search_size=m.search_size,
               ce_loc=tuple(int(i) for i in m.ce_loc), ce_keep_ratio=float(m.ce_keep_ratio),
               ce_template_range=m.ce_template_range, head_channels=m.head_channels,
               drop_path_rate=m.drop_path_rate, depth=m.get("depth", -1),
               pretrain_img_size=m.get("pretrain_img_size", 224), dtype=m.dtype)

  @property
  def patch_size(self) -> int:
    return vit.decode_variant(self.variant)[1]

  @property
  def feat_x(self) -> int:
    return self.search_size // self.patch_size

  @property
  def feat_z(self) -> int:
    return self.template_size // self.patch_size

  def keep_counts(self, keep_ratio: float | None = None) -> list[int]:
    """Search tokens alive after each CE layer, e.g. [404, 283, 199] for 384 px at 0.7."""
    ratio = self.ce_keep_ratio if keep_ratio is None else keep_ratio
    n_ce = len([i for i in self.ce_loc if i < self._depth()])
    return ce_keep_counts(self.feat_x ** 2, n_ce, ratio)

  def _depth(self) -> int:
    size, _ = vit.decode_variant(self.variant)
    return size.depth if self.depth < 0 else self.depth

  def setup(self):
    size, p = vit.decode_variant(self.variant)
    for name, side in (("template_size", self.template_size), ("search_size", self.search_size),
                       ("pretrain_img_size", self.pretrain_img_size)):
      if side % p:
        raise ValueError(f"config.model.{name} {side} is not a multiple of patch {p}")
    depth = self._depth()
    if any(i < 0 or i >= depth for i in self.ce_loc):
      raise ValueError(f"config.model.ce_loc {self.ce_loc} has blocks outside 0..{depth - 1}")
    dtype = jnp.dtype(self.dtype)
    self.backbone = VisionTransformerCE(
        size.width, depth, size.heads, size.mlp_dim, p, self.template_size, self.search_size,
        tuple(self.ce_loc), self.ce_keep_ratio, self.ce_template_range, self.drop_path_rate,
        self.pretrain_img_size, dtype)
    self.box_head = box_head_lib.CenterPredictor(self.head_channels, dtype)

  def __call__(self, template: jax.Array, search: jax.Array, *, keep_ratio: float | None = None,
               keep_counts: jax.Array | None = None, train: bool = False) -> dict[str, Any]:
    """Template (B, Hz, Wz, 3) and search (B, Hx, Wx, 3) normalised NHWC images ->

    dict(pred_boxes (B, 4) normalised (cx, cy, w, h) in the search crop, score_map (B, F, F),
    size_map (B, F, F, 2), offset_map (B, F, F, 2), kept_indices: tuple of (B, n_l) int32 original
    search positions kept by each CE layer). `keep_ratio` (a static python float) overrides
    `ce_keep_ratio` for every CE layer (the training warm-up schedule); 1.0 disables CE.
    `keep_counts` ((n_ce,) int32, may be traced; e.g. `keep_counts(ratio)`) instead masks the
    eliminated tokens on a fixed shape (one compile for every ratio; kept_indices are then
    (B, Ls) bool alive-masks).
    train=True enables drop-path (rng 'dropout') and BatchNorm batch statistics (mutable
    'batch_stats').
    """
    tokens, kept = self.backbone(template, search, keep_ratio=keep_ratio,
                                 keep_counts=keep_counts, train=train)
    feat = tokens[:, -self.feat_x ** 2:].reshape(tokens.shape[0], self.feat_x, self.feat_x, -1)
    maps = self.box_head(feat, train)
    boxes = box_head_lib.cal_bbox(maps["score_map"], maps["size_map"], maps["offset_map"])
    return {"pred_boxes": boxes, **maps, "kept_indices": kept}


def _dummy_inputs(model: OSTrackCE, batch: int = 1) -> tuple[jax.Array, jax.Array]:
  return (jnp.zeros((batch, model.template_size, model.template_size, 3), jnp.float32),
          jnp.zeros((batch, model.search_size, model.search_size, 3), jnp.float32))


def init_variables(model: OSTrackCE, seed: int = 0) -> dict:
  """Freshly initialised {'params', 'batch_stats'} (numpy) of `model`."""
  variables = jax.jit(model.init)({"params": jax.random.key(seed)}, *_dummy_inputs(model))
  return jax.tree.map(np.asarray, dict(variables))


def variable_shapes(model: OSTrackCE) -> dict:
  """{'params', 'batch_stats'} as jax.ShapeDtypeStruct, without computing anything."""
  return dict(jax.eval_shape(lambda z, x: model.init(jax.random.key(0), z, x),
                             *_dummy_inputs(model)))


# ------------------------------------------------------------------ starting from DropMAE weights


def _flat_state_from_source(source, pretrain_grid: int | None) -> tuple[dict[str, np.ndarray], str]:
  """A DropMAE source -> (released-layout flat state dict, description)."""
  from dropmae_jax.convert import io
  from dropmae_jax.convert import layout
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    if os.path.isdir(path):
      params, config = io.load_params(path)
      grid = pretrain_grid or config.model.img_size // int(config.model.variant.split("/")[1])
      return layout.params_to_state_dict(params, grid=grid), path
    return io.read_torch_state_dict(path), path
  if not isinstance(source, dict):
    raise TypeError(f"init_from_pretrain: expected a params tree, a state dict or a path; got "
                    f"{type(source).__name__}")
  if "patch_embed.proj.weight" in source:
    return {k: np.asarray(v, np.float32) for k, v in source.items()}, "state dict"
  if "patch_embed" in source:
    if pretrain_grid is None:
      raise ValueError("init_from_pretrain: a params tree has no position table; pass "
                       "pretrain_grid (= pre-training img_size // patch)")
    return layout.params_to_state_dict(source, grid=pretrain_grid), "params tree"
  raise ValueError("init_from_pretrain: source is neither our pre-training params (no "
                   "'patch_embed') nor a DropMAE state dict (no 'patch_embed.proj.weight'); "
                   f"its keys start {sorted(source)[:8]}")


def init_from_pretrain(variables: dict, source, *, pretrain_grid: int | None = None
                       ) -> tuple[dict, list[str]]:
  """The released rule for starting a tracker from DropMAE weights (downstream.md §0, §1.3.1).

  Drops every key containing 'decoder', loads the rest into `backbone.*` (strict=False: unknown
  keys such as mask_token are reported and ignored; a shape mismatch raises, as torch does), then
  derives `pos_embed_z` / `pos_embed_x` by PyTorch-exact bicubic resize of the loaded
  `pos_embed` (cls slot dropped). The head keeps its initialisation.

  Args:
    variables: the tracker's {'params', 'batch_stats'} (fresh init: the values for what is missing).
    source: (a) our pre-training params tree (`io.load_params` output; its fixed sin-cos table is
      regenerated on `pretrain_grid`), (b) a released-layout state dict, or a path to (c) a
      DropMAE .pth / .safetensors or (d) an imported DIR / training WORKDIR.
    pretrain_grid: patches per side of the pre-training image (needed for a bare params tree).
  Returns:
    (new variables (numpy), report lines: loaded / missing / unexpected / derived).
  """
  from dropmae_jax.convert import layout
  state, what = _flat_state_from_source(source, pretrain_grid)
  layout.check_is_mae_vit(state)
  params = jax.tree.map(np.asarray, dict(variables["params"]))
  flat = layout.flatten(params["backbone"])
  by_key = {layout.torch_key(path): path for path in flat}
  dropped = sorted(k for k in state if "decoder" in k)
  report = [f"source: {what}", f"dropped  {len(dropped)} decoder keys"]
  problems, loaded = [], set()
  for key in sorted(set(state) - set(dropped)):
    path = by_key.get(key)
    if path is None:
      report.append(f"unexpected {key} {tuple(np.shape(state[key]))}: ignored")
      continue
    value = layout.from_torch_array(path, state[key])
    if value.shape != flat[path].shape:
      problems.append(f"backbone.{key}: file {tuple(np.shape(state[key]))}, tracker expects "
                      f"{tuple(flat[path].shape)}")
      continue
    flat[path] = value
    loaded.add(key)
  if problems:
    raise layout.LayoutError("shape mismatch loading DropMAE weights into the tracker (is "
                             "config.model.variant / pretrain_img_size the pre-training one?):\n  "
                             + "\n  ".join(problems))
  report.append(f"loaded   {len(loaded)} backbone tensors")
  if "pos_embed" in loaded:
    table = flat[("pos_embed",)][:, 1:]
    for name in ("pos_embed_z", "pos_embed_x"):
      grid = int(round(math.sqrt(flat[(name,)].shape[1])))
      flat[(name,)] = posemb.resize_bicubic(table, grid).astype(np.float32)
      report.append(f"derived  backbone.{name} {flat[(name,)].shape}: bicubic resize of pos_embed "
                    f"to {grid}x{grid}")
  for key in sorted(set(by_key) - loaded - {"pos_embed_z", "pos_embed_x"}):
    report.append(f"missing  backbone.{key} {tuple(flat[by_key[key]].shape)}: kept the fresh "
                  "initialisation")
  report.append("missing  box_head.*: kept the fresh initialisation")
  params["backbone"] = layout.unflatten(flat)
  out = dict(variables)
  out["params"] = params
  return out, report


def count_params(params) -> int:
  return int(sum(np.size(v) for v in jax.tree.leaves(params)))

