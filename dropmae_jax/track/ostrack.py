"""OSTrack with candidate elimination (OSTrack-CE), the DropTrack tracker.

As jimmy-dq/DropTrack `lib/models/ostrack/ostrack.py` (`OSTrack`): the CE backbone (`vit_ce.py`)
over `[template tokens ; search tokens]` and the CenterNet-style box head (`box_head.py`). Param
names mirror the released `checkpoint['net']` keys (`backbone.pos_embed_z`,
`backbone.blocks.{i}.attn.qkv.*`, `box_head.conv1_ctr.0.*`, ...); `track/layout.py` maps them both
ways; `pretrain_init.py` starts the backbone from DropMAE weights.

Images are NHWC float32, ImageNet-normalised. Shapes are static: every CE layer keeps a fixed
`ceil(keep_ratio · L_s)` search tokens (576 -> 404 -> 283 -> 199 for a 384 search at 0.7).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dropmae_jax.models import vit
from dropmae_jax.track import box_head as box_head_lib
from dropmae_jax.track.vit_ce import VisionTransformerCE, ce_keep_counts


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



def count_params(params) -> int:
  return int(sum(np.size(v) for v in jax.tree.leaves(params)))

