"""DropTrack / OSTrack training losses: the released `OSTrackActor.compute_losses` (OSTrack
`lib/train/actors/ostrack.py`).

  total = focal_weight · focal(score_map, gaussian GT heatmap)
        + giou_weight  · mean(1 − GIoU(pred_xyxy, gt_xyxy))
        + l1_weight    · mean|pred_xyxy − gt_xyxy|

with the released pieces:
  * `generate_heatmap` (lib/utils/heapmap_utils.py): the CenterNet GT map — box scaled to the F×F
    grid, centre rounded (half to even, torch.round), CornerNet's `gaussian_radius` ("bug" version,
    min_overlap 0.7) clamped at 0 and truncated to int, a Gaussian of diameter 2r+1, σ = (2r+1)/6,
    peak 1, cut to the (2r+1)² window and to the grid borders (`draw_gaussian`'s slicing).
  * `focal_loss` (lib/utils/focal_loss.py, α = 2, β = 4): positives are cells where the GT is
    exactly 1, negatives where it is < 1; summed over the batch and divided by the number of
    positives (the negative sum alone when there is none).
  * `giou_and_iou` (lib/utils/box_ops.py giou_loss): predicted (cx, cy, w, h) -> xyxy against the
    GT (x, y, w, h) -> xyxy clamped to [0, 1]. L1 is torch's `l1_loss` (mean) on the same xyxy.

Everything is pure jnp with static shapes (jit/grad friendly). The heatmap has a data-dependent
radius: the Gaussian is evaluated on the whole F×F grid and masked to the window, which is what the
released slicing does at every border (see `generate_heatmap`).
"""
from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp

MIN_OVERLAP = 0.7          # CenterNetHeatMap.generate_score_map(..., 0.7)
FOCAL_ALPHA = 2.0          # FocalLoss(alpha=2, beta=4)
FOCAL_BETA = 4.0
_F64_EPS = 2.220446049250313e-16  # np.finfo(float64).eps: gaussian2D zeroes values below eps·max


def box_cxcywh_to_xyxy(boxes: jax.Array) -> jax.Array:
  """(..., 4) (cx, cy, w, h) -> (x1, y1, x2, y2), as box_ops.box_cxcywh_to_xyxy."""
  cx, cy, w, h = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def box_xywh_to_xyxy(boxes: jax.Array) -> jax.Array:
  """(..., 4) (x, y, w, h) -> (x1, y1, x2, y2), as box_ops.box_xywh_to_xyxy."""
  x, y, w, h = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([x, y, x + w, y + h], axis=-1)


def gaussian_radius(wh: jax.Array, min_overlap: float = MIN_OVERLAP) -> jax.Array:
  """(..., 2) box (w, h) in grid cells -> (...,) CornerNet radius, the released "bug" version.

  min of the three quadratic roots (b + sqrt(b² − 4ac)) / 2 — the bug being `/ 2` instead of
  `/ (2a)` for the 2nd and 3rd; kept because the released GT maps were made with it.
  """
  width, height = wh[..., 0], wh[..., 1]
  a1 = 1.0
  b1 = height + width
  c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
  r1 = (b1 + jnp.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
  a2 = 4.0
  b2 = 2 * (height + width)
  c2 = (1 - min_overlap) * width * height
  r2 = (b2 + jnp.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
  a3 = 4 * min_overlap
  b3 = -2 * min_overlap * (height + width)
  c3 = (min_overlap - 1) * width * height
  r3 = (b3 + jnp.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
  return jnp.minimum(r1, jnp.minimum(r2, r3))


def generate_heatmap(boxes: jax.Array, feat_sz: int) -> jax.Array:
  """Normalised (x, y, w, h) boxes (B, 4) in the search crop -> GT score map (B, F, F), F = feat_sz.

  The released `generate_heatmap(search_anno, SEARCH.SIZE, STRIDE)` with F = SEARCH.SIZE // STRIDE.
  Cell (row y, col x) holds exp(−(dx² + dy²) / (2σ²)) for |dx|, |dy| <= r around the rounded
  centre, 0 elsewhere. The released `draw_gaussian` copies the window slice
  fmap[y−top : y+bottom, x−left : x+right] with left = min(x, r), right = min(F − x, r + 1) (top,
  bottom likewise) and skips the draw when either slice is empty; for every integer centre,
  inside or outside the grid, that is exactly "the cells of the grid within r of the centre",
  which is what the mask below selects (no Python negative-index wrap can make both slices
  non-empty: tests/track/test_tracking_losses.py checks it against the loop on out-of-grid
  boxes).
  """
  chex.assert_rank(boxes, 2)
  chex.assert_axis_dimension(boxes, 1, 4)
  boxes = boxes.astype(jnp.float32)
  bbox = boxes * feat_sz
  wh = bbox[:, 2:]
  centers = jnp.round(bbox[:, :2] + wh / 2)                 # torch.round: half to even, as jnp
  # clamp_min(0) then .type(torch.int): truncation, == floor for r >= 0.
  radius = jnp.floor(jnp.maximum(gaussian_radius(wh), 0.0))  # (B,)
  sigma = (2 * radius + 1) / 6                               # diameter / 6
  grid = jnp.arange(feat_sz, dtype=jnp.float32)
  dx = grid[None, None, :] - centers[:, 0, None, None]        # (B, 1, F) column offsets
  dy = grid[None, :, None] - centers[:, 1, None, None]        # (B, F, 1) row offsets
  r = radius[:, None, None]
  inside = (jnp.abs(dx) <= r) & (jnp.abs(dy) <= r)
  gauss = jnp.exp(-(dx * dx + dy * dy) / (2 * sigma[:, None, None] ** 2))
  gauss = jnp.where(gauss < _F64_EPS, 0.0, gauss)          # gaussian2D's eps cut (peak is 1)
  return jnp.where(inside, gauss, 0.0)


def focal_loss(pred: jax.Array, gt: jax.Array) -> jax.Array:
  """CenterNet focal loss (α 2, β 4) of a predicted score map against the GT heatmap -> () f32.

  pred, gt: the same shape, e.g. (B, F, F); pred in (0, 1) (the head clamps to [1e-4, 1 − 1e-4]).
  Sums over everything (the whole batch) and divides by the number of cells with gt == 1; with no
  positive cell the loss is the (negated) negative sum, as the released `num_positive == 0` branch.
  """
  chex.assert_equal_shape((pred, gt))
  pred = pred.astype(jnp.float32)
  gt = gt.astype(jnp.float32)
  positive = (gt == 1).astype(jnp.float32)
  negative = (gt < 1).astype(jnp.float32)
  negative_weights = (1 - gt) ** FOCAL_BETA
  pred = jnp.maximum(pred, 1e-12)                           # released clamp(min=1e-12)
  positive_loss = jnp.sum(jnp.log(pred) * (1 - pred) ** FOCAL_ALPHA * positive)
  negative_loss = jnp.sum(jnp.log(1 - pred) * pred ** FOCAL_ALPHA * negative_weights * negative)
  num_positive = jnp.sum(positive)
  return jnp.where(num_positive == 0, -negative_loss,
                   -(positive_loss + negative_loss) / jnp.maximum(num_positive, 1.0))


def _box_area(boxes: jax.Array) -> jax.Array:
  return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def giou_and_iou(pred_xyxy: jax.Array, gt_xyxy: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The released `giou_loss` on paired (N, 4) xyxy boxes -> (mean(1 − GIoU) (), IoU (N,)).

  The released `generalized_box_iou` asserts x2 >= x1 and y2 >= y1 for every box of both sets
  (NaN fails it too), and the actor catches the AssertionError and uses 0 for both the loss and
  the IoU. The jittable equivalent: when any box is degenerate, the loss is 0 and the IoU is 0
  for every pair, and the maths runs on unit boxes instead so that no inf/NaN reaches the
  gradient (which is then 0, as for the released constant).
  """
  chex.assert_rank(pred_xyxy, 2)
  chex.assert_axis_dimension(pred_xyxy, 1, 4)
  chex.assert_equal_shape((pred_xyxy, gt_xyxy))
  valid = (jnp.all(pred_xyxy[:, 2:] >= pred_xyxy[:, :2])
           & jnp.all(gt_xyxy[:, 2:] >= gt_xyxy[:, :2]))
  unit = jnp.asarray([0.0, 0.0, 1.0, 1.0], pred_xyxy.dtype)
  boxes1 = jnp.where(valid, pred_xyxy, unit)
  boxes2 = jnp.where(valid, gt_xyxy, unit)
  area1, area2 = _box_area(boxes1), _box_area(boxes2)
  lt = jnp.maximum(boxes1[:, :2], boxes2[:, :2])
  rb = jnp.minimum(boxes1[:, 2:], boxes2[:, 2:])
  wh = jnp.maximum(rb - lt, 0.0)
  inter = wh[:, 0] * wh[:, 1]
  union = area1 + area2 - inter
  iou = inter / union
  lt_c = jnp.minimum(boxes1[:, :2], boxes2[:, :2])
  rb_c = jnp.maximum(boxes1[:, 2:], boxes2[:, 2:])
  wh_c = jnp.maximum(rb_c - lt_c, 0.0)
  area = wh_c[:, 0] * wh_c[:, 1]
  giou = iou - (area - union) / area
  loss = jnp.where(valid, jnp.mean(1 - giou), 0.0)
  return loss, jnp.where(valid, iou, 0.0)


def tracking_loss(outputs: dict[str, Any], search_box: jax.Array, loss_config: Any
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The released `OSTrackActor.compute_losses` for one search frame.

  Args:
    outputs: OSTrackCE output with pred_boxes (B, 4) normalised (cx, cy, w, h) and score_map
      (B, F, F).
    search_box: (B, 4) GT normalised (x, y, w, h) in the search crop (the batch's `search_box`,
      after the flips; NOT clamped — the heatmap uses it as is, the box losses clamp to [0, 1]).
    loss_config: `config.loss` with focal_weight, giou_weight, l1_weight.
  Returns:
    (total (), metrics {'loss', 'focal', 'giou', 'l1', 'iou' (mean IoU)}), float32 scalars.
    The released actor raises on NaN `pred_boxes`; under jit that cannot raise, so a NaN box
    makes 'l1' and hence 'loss' NaN (the GIoU term is 0 then, as the released except branch):
    callers stop on a non-finite loss.
  Normalisation: the focal sum is divided by the positives of the batch given here. The released
  DDP run normalises per GPU (32 pairs) and averages the gradients; with one positive cell per
  pair whose centre lies in the grid (nearly all) the two agree.
  """
  pred_boxes = outputs["pred_boxes"].astype(jnp.float32)
  score_map = outputs["score_map"]
  batch = pred_boxes.shape[0]
  chex.assert_shape(pred_boxes, (batch, 4))
  chex.assert_shape(search_box, (batch, 4))
  chex.assert_rank(score_map, 3)
  chex.assert_axis_dimension(score_map, 0, batch)
  search_box = search_box.astype(jnp.float32)
  gt_heatmap = generate_heatmap(search_box, score_map.shape[-1])
  pred_xyxy = box_cxcywh_to_xyxy(pred_boxes)
  gt_xyxy = jnp.clip(box_xywh_to_xyxy(search_box), 0.0, 1.0)
  giou, iou = giou_and_iou(pred_xyxy, gt_xyxy)
  l1 = jnp.mean(jnp.abs(pred_xyxy - gt_xyxy))               # F.l1_loss, reduction 'mean'
  focal = focal_loss(score_map, gt_heatmap)
  total = (float(loss_config.giou_weight) * giou + float(loss_config.l1_weight) * l1
           + float(loss_config.focal_weight) * focal)
  return total, {"loss": total, "focal": focal, "giou": giou, "l1": l1, "iou": jnp.mean(iou)}
