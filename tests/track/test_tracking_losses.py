"""DropTrack fine-tuning pieces against independent references built here: the released
heapmap_utils loop ported line by line to numpy, the released FocalLoss written out in torch,
torchvision's generalized_box_iou / box_iou, torch.optim.AdamW + StepLR + clip_grad_norm_, the
closed-form CE schedule, and GOT-10k AO from result files scored by track.metrics."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from dropmae_jax.config import defaults as configlib
from dropmae_jax.track import synthetic as make_tracking_sequences
from dropmae_jax.track import ostrack
from dropmae_jax.track import datasets
from dropmae_jax.track.evaluation import metrics as track_metrics
from dropmae_jax.track.evaluation import results as results_lib
from dropmae_jax.track import tracker as tracker_lib
from dropmae_jax.track import runner as runner_lib
from dropmae_jax.track.evaluation import validation as tracking_eval
from dropmae_jax.track import figures as tracking_figures
from dropmae_jax.track import losses as tracking_losses
from dropmae_jax.track import optim as tracking_optim


# ------------------------------------------------------------- released heatmap, ported literally


def ref_gaussian_radius(wh, min_overlap=0.7):
  width, height = wh[..., 0], wh[..., 1]
  a1 = 1
  b1 = height + width
  c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
  sq1 = np.sqrt(b1 ** 2 - 4 * a1 * c1)
  r1 = (b1 + sq1) / 2
  a2 = 4
  b2 = 2 * (height + width)
  c2 = (1 - min_overlap) * width * height
  sq2 = np.sqrt(b2 ** 2 - 4 * a2 * c2)
  r2 = (b2 + sq2) / 2
  a3 = 4 * min_overlap
  b3 = -2 * min_overlap * (height + width)
  c3 = (min_overlap - 1) * width * height
  sq3 = np.sqrt(b3 ** 2 - 4 * a3 * c3)
  r3 = (b3 + sq3) / 2
  return np.minimum(r1, np.minimum(r2, r3))


def ref_gaussian2d(radius, sigma=1):
  m, n = radius
  y, x = np.ogrid[-m:m + 1, -n:n + 1]
  gauss = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
  gauss[gauss < np.finfo(gauss.dtype).eps * gauss.max()] = 0
  return gauss


def ref_draw_gaussian(fmap, center, radius, k=1):
  diameter = 2 * radius + 1
  gaussian = ref_gaussian2d((radius, radius), sigma=diameter / 6).astype(np.float32)
  x, y = int(center[0]), int(center[1])
  height, width = fmap.shape[:2]
  left, right = min(x, radius), min(width - x, radius + 1)
  top, bottom = min(y, radius), min(height - y, radius + 1)
  masked_fmap = fmap[y - top:y + bottom, x - left:x + right]
  masked_gaussian = gaussian[radius - top:radius + bottom, radius - left:radius + right]
  if min(masked_gaussian.shape) > 0 and min(masked_fmap.shape) > 0:
    fmap[y - top:y + bottom, x - left:x + right] = np.maximum(masked_fmap, masked_gaussian * k)


def ref_generate_heatmap(boxes, feat):
  """generate_heatmap for one search frame: (B, 4) float32 -> (B, F, F) float32."""
  boxes = np.asarray(boxes, np.float32)
  fmap = np.zeros((boxes.shape[0], feat, feat), np.float32)
  bbox = boxes * feat
  wh = bbox[:, 2:]
  centers_int = np.round(bbox[:, :2] + wh / 2)
  radius = np.maximum(ref_gaussian_radius(wh, 0.7), 0).astype(np.int32)
  for i in range(boxes.shape[0]):
    ref_draw_gaussian(fmap[i], centers_int[i], int(radius[i]))
  return fmap


def random_boxes(rng, n, lo=-0.3, hi=1.1):
  """Normalised xywh, some partly or fully outside the crop, tiny to huge."""
  wh = np.exp(rng.uniform(np.log(0.004), np.log(1.3), (n, 2)))
  xy = rng.uniform(lo, hi, (n, 2)) - wh / 2
  return np.concatenate([xy, wh], axis=1).astype(np.float32)


EDGE_BOXES = np.array([
    [0.125, 0.25, 0.0625, 0.0625],   # centre exactly 2.5 cells at F=16: rounds half to even (2)
    [0.0, 0.0, 0.01, 0.01],          # radius 0: a single 1
    [0.9, 0.9, 0.6, 0.6],            # centre past the bottom-right corner, window still overlaps
    [-0.7, -0.7, 0.3, 0.3],          # centre far outside at the top-left: nothing drawn
    [-0.2, 0.3, 0.3, 0.2],           # centre at a negative column, window reaches into the grid
    [1.05, 0.5, 0.05, 0.05],         # centre just right of the grid
    [0.0, 0.0, 1.0, 1.0],            # the whole crop
    [-0.5, -0.5, 2.0, 2.0],          # bigger than the crop
], np.float32)


@pytest.mark.parametrize("feat", [16, 24])
def test_generate_heatmap_matches_released_loop(feat):
  rng = np.random.default_rng(feat)
  boxes = np.concatenate([EDGE_BOXES, random_boxes(rng, 400)])
  want = ref_generate_heatmap(boxes, feat)
  got = np.asarray(jax.jit(tracking_losses.generate_heatmap, static_argnums=1)(boxes, feat))
  assert got.shape == (boxes.shape[0], feat, feat)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  # exact where it matters for the focal loss: which cells are 1 and which are 0
  np.testing.assert_array_equal(got == 1, want == 1)
  np.testing.assert_array_equal(got == 0, want == 0)
  # the edge cases behave as described
  if feat == 16:
    assert got[0, 4, 2] == 1 and got[0, 4, 3] < 1          # (row 4, col 2): half-to-even
  assert got[1].sum() == 1 and got[1, 0, 0] == 1
  assert got[3].sum() == 0
  assert 0 < got[4].max() < 1                               # only the window's tail is visible
  # the released map has every peak at 1 while the centre lies in the grid
  inside = np.all((np.round(boxes[:, :2] * feat + boxes[:, 2:] * feat / 2) >= 0)
                  & (np.round(boxes[:, :2] * feat + boxes[:, 2:] * feat / 2) < feat), axis=1)
  np.testing.assert_array_equal((got == 1).sum(axis=(1, 2)), inside.astype(int))


# ---------------------------------------------------------------------------- torch references


class TorchFocalLoss(torch.nn.Module):
  """The released lib/utils/focal_loss.py FocalLoss, written out."""

  def forward(self, prediction, target, alpha=2, beta=4):
    positive_index = target.eq(1).float()
    negative_index = target.lt(1).float()
    negative_weights = torch.pow(1 - target, beta)
    prediction = torch.clamp(prediction, 1e-12)
    positive_loss = torch.log(prediction) * torch.pow(1 - prediction, alpha) * positive_index
    negative_loss = (torch.log(1 - prediction) * torch.pow(prediction, alpha) * negative_weights
                     * negative_index)
    num_positive = positive_index.float().sum()
    positive_loss = positive_loss.sum()
    negative_loss = negative_loss.sum()
    if num_positive == 0:
      return -negative_loss
    return -(positive_loss + negative_loss) / num_positive


def random_score_map(rng, b, feat):
  logits = rng.normal(0, 2, (b, feat, feat))
  return np.clip(1 / (1 + np.exp(-logits)), 1e-4, 1 - 1e-4).astype(np.float32)


@pytest.mark.parametrize("with_positives", [True, False])
def test_focal_loss_value_and_grad_match_torch(with_positives):
  rng = np.random.default_rng(1)
  feat, b = 12, 6
  boxes = random_boxes(rng, b, 0.1, 0.9) if with_positives else np.tile(
      np.array([[-0.9, -0.9, 0.3, 0.3]], np.float32), (b, 1))
  gt = ref_generate_heatmap(boxes, feat)
  if not with_positives:
    gt = gt + rng.uniform(0, 0.5, gt.shape).astype(np.float32)  # no cell equals 1
  assert ((gt == 1).sum() > 0) == with_positives
  pred = random_score_map(rng, b, feat)
  p_t = torch.tensor(pred, requires_grad=True)
  want = TorchFocalLoss()(p_t, torch.tensor(gt))
  want.backward()
  got, grad = jax.jit(jax.value_and_grad(tracking_losses.focal_loss))(pred, gt)
  np.testing.assert_allclose(float(got), want.item(), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), p_t.grad.numpy(), rtol=1e-4, atol=1e-7)


def random_pred_boxes(rng, n):
  cxcy = rng.uniform(0.1, 0.9, (n, 2))
  wh = rng.uniform(0.02, 0.6, (n, 2))
  return np.concatenate([cxcy, wh], axis=1).astype(np.float32)


def cxcywh_to_xyxy(b):
  return np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)


def xywh_to_xyxy(b):
  return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def test_giou_matches_torchvision():
  rng = np.random.default_rng(2)
  n = 64
  pred = np.array(cxcywh_to_xyxy(random_pred_boxes(rng, n)))
  gt = np.clip(xywh_to_xyxy(random_boxes(rng, n)), 0, 1)
  gt[:4] = pred[:4]                                    # identical pairs: GIoU 1
  gt[4, :] = [0.0, 0.0, 0.05, 0.05]
  pred[4, :] = [0.5, 0.5, 0.9, 0.9]                   # disjoint: GIoU < 0
  loss, iou = jax.jit(tracking_losses.giou_and_iou)(pred, gt)
  giou_tv = torch.diagonal(torchvision.ops.generalized_box_iou(torch.tensor(pred),
                                                               torch.tensor(gt)))
  iou_tv = torch.diagonal(torchvision.ops.box_iou(torch.tensor(pred), torch.tensor(gt)))
  np.testing.assert_allclose(float(loss), (1 - giou_tv).mean().item(), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(iou), iou_tv.numpy(), rtol=1e-5, atol=1e-7)
  assert np.allclose(np.asarray(iou)[:4], 1.0) and giou_tv[4] < 0


@pytest.mark.parametrize("bad", ["inverted", "nan"])
def test_giou_degenerate_boxes_give_zero_and_finite_grads(bad):
  """The released actor's except branch: loss 0 and IoU 0 when the assertion fails."""
  rng = np.random.default_rng(3)
  pred = np.array(cxcywh_to_xyxy(random_pred_boxes(rng, 5)))
  gt = np.clip(xywh_to_xyxy(random_boxes(rng, 5)), 0, 1)
  if bad == "inverted":
    pred[2, [0, 2]] = pred[2, [2, 0]]
  else:
    pred[2, 1] = np.nan
  with pytest.raises(AssertionError):   # what the released generalized_box_iou does
    p = torch.tensor(pred)
    assert (p[:, 2:] >= p[:, :2]).all()

  def loss_fn(x):
    return tracking_losses.giou_and_iou(x, jnp.asarray(gt))[0]

  loss, iou = jax.jit(tracking_losses.giou_and_iou)(pred, gt)
  assert float(loss) == 0.0 and np.all(np.asarray(iou) == 0.0)
  grad = jax.jit(jax.grad(loss_fn))(pred)
  assert np.all(np.asarray(grad) == 0.0)


def torch_compute_losses(pred_boxes, score_map, search_box, weights):
  """OSTrackActor.compute_losses for one search frame, from torch / torchvision pieces."""
  gt_maps = torch.tensor(ref_generate_heatmap(search_box.detach().numpy(), score_map.shape[-1]))
  x_c, y_c, w, h = pred_boxes.unbind(-1)
  pred_xyxy = torch.stack([x_c - 0.5 * w, y_c - 0.5 * h, x_c + 0.5 * w, y_c + 0.5 * h], -1)
  x1, y1, gw, gh = search_box.unbind(-1)
  gt_xyxy = torch.stack([x1, y1, x1 + gw, y1 + gh], -1).clamp(min=0.0, max=1.0)
  giou = torch.diagonal(torchvision.ops.generalized_box_iou(pred_xyxy, gt_xyxy))
  iou = torch.diagonal(torchvision.ops.box_iou(pred_xyxy, gt_xyxy))
  giou_loss = (1 - giou).mean()
  l1 = F.l1_loss(pred_xyxy, gt_xyxy)
  focal = TorchFocalLoss()(score_map, gt_maps)
  total = weights["giou"] * giou_loss + weights["l1"] * l1 + weights["focal"] * focal
  return total, {"loss": total, "focal": focal, "giou": giou_loss, "l1": l1, "iou": iou.mean()}


def test_tracking_loss_matches_released_actor():
  rng = np.random.default_rng(4)
  b, feat = 8, 24
  search_box = random_boxes(rng, b, 0.05, 0.95)
  pred_boxes = random_pred_boxes(rng, b)
  score_map = random_score_map(rng, b, feat)
  cfg = ml_collections.ConfigDict(dict(focal_weight=1.0, giou_weight=2.0, l1_weight=5.0))
  pb_t = torch.tensor(pred_boxes, requires_grad=True)
  sm_t = torch.tensor(score_map, requires_grad=True)
  want_total, want = torch_compute_losses(pb_t, sm_t, torch.tensor(search_box),
                                          {"focal": 1.0, "giou": 2.0, "l1": 5.0})
  want_total.backward()

  def loss_fn(pb, sm, box, cfg):
    return tracking_losses.tracking_loss({"pred_boxes": pb, "score_map": sm}, box, cfg)

  # One jit around value_and_grad: a single compile (eager ops compile one by one).
  (total, got), grads = jax.jit(jax.value_and_grad(
      lambda pb, sm, box: loss_fn(pb, sm, box, cfg), argnums=(0, 1), has_aux=True))(
          pred_boxes, score_map, search_box)
  assert set(got) == {"loss", "focal", "giou", "l1", "iou"}
  for k in got:
    np.testing.assert_allclose(float(got[k]), want[k].item(), rtol=2e-5, err_msg=k)
  assert float(total) == float(got["loss"])
  np.testing.assert_allclose(np.asarray(grads[0]), pb_t.grad.numpy(), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.asarray(grads[1]), sm_t.grad.numpy(), rtol=1e-4, atol=1e-7)
  # the weights enter linearly
  cfg2 = ml_collections.ConfigDict(dict(focal_weight=0.0, giou_weight=0.0, l1_weight=1.0))
  l1_only, _ = jax.jit(lambda pb, sm, box: loss_fn(pb, sm, box, cfg2))(pred_boxes, score_map,
                                                                       search_box)
  np.testing.assert_allclose(float(l1_only), want["l1"].item(), rtol=2e-5)


# -------------------------------------------------------------------------- optimiser vs torch


def optim_config(**overrides):
  c = ml_collections.ConfigDict(dict(
      lr=1e-2, batch_size=64, backbone_multiplier=0.1, weight_decay=0.05, lr_drop_epoch=2,
      lr_drop_factor=0.1, grad_clip_norm=0.1))
  c.update(overrides)
  return c


def test_optimizer_matches_torch_adamw_steplr_clip():
  """Two groups by 'backbone' in the name, decay on all params, StepLR per epoch, torch clipping;
  params without a gradient in torch (cls_token, legacy pos_embed) stay untouched."""
  rng = np.random.default_rng(5)
  shapes = {"backbone": {"blocks_0": {"attn": {"qkv": {"kernel": (4, 6), "bias": (6,)}}},
                         "norm": {"scale": (4,)}, "pos_embed_x": (1, 3, 4),
                         "cls_token": (1, 1, 4), "pos_embed": (1, 5, 4)},
            "box_head": {"conv1_ctr": {"0": {"kernel": (3, 3, 4, 2)}}, "conv5_ctr": {"bias": (1,)}}}
  params = jax.tree.map(lambda s: rng.normal(0, 1, s).astype(np.float32), shapes,
                        is_leaf=lambda x: isinstance(x, tuple))
  flat = {".".join(tracking_optim._names(p)): v
          for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  unused = {"backbone.cls_token", "backbone.pos_embed"}
  steps_per_epoch, num_steps = 2, 7
  # step 5 gets a gradient below the clipping norm: the unclipped branch
  grads = [{k: (rng.normal(0, 1e-3 if t == 5 else 1.0, v.shape).astype(np.float32)
                if k not in unused else np.zeros_like(v)) for k, v in flat.items()}
           for t in range(num_steps)]

  config = optim_config()
  lr = 1e-2 * 64 / 128
  torch_params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in flat.items()}
  opt = torch.optim.AdamW([
      {"params": [p for n, p in torch_params.items() if "backbone" not in n]},
      {"params": [p for n, p in torch_params.items() if "backbone" in n], "lr": lr * 0.1}],
      lr=lr, weight_decay=0.05)
  sched = torch.optim.lr_scheduler.StepLR(opt, 2)
  torch_lrs = []
  for t in range(num_steps):
    opt.zero_grad()
    for k, p in torch_params.items():
      p.grad = None if k in unused else torch.tensor(grads[t][k])
    torch.nn.utils.clip_grad_norm_(torch_params.values(), 0.1)
    torch_lrs.append(opt.param_groups[0]["lr"])
    opt.step()
    if (t + 1) % steps_per_epoch == 0:
      sched.step()

  tx, schedule = tracking_optim.make_tracking_optimizer(config, steps_per_epoch)
  state = tx.init(params)

  @jax.jit
  def step(params, state, g):
    updates, state = tx.update(g, state, params)
    return jax.tree.map(lambda p, u: p + u, params, updates), state

  unflat = jax.tree_util.tree_structure(params)
  for t in range(num_steps):
    g = jax.tree_util.tree_unflatten(unflat, [grads[t][k] for k in flat])
    params, state = step(params, state, g)
    np.testing.assert_allclose(float(schedule(t)), torch_lrs[t], rtol=1e-6)
  assert torch_lrs[3] == pytest.approx(lr) and torch_lrs[4] == pytest.approx(lr * 0.1)
  got = {".".join(tracking_optim._names(p)): np.asarray(v)
         for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  for k, p in torch_params.items():
    np.testing.assert_allclose(got[k], p.detach().numpy(), rtol=0, atol=1e-6, err_msg=k)
    assert not np.allclose(got[k], flat[k]) or k in unused, k
  for k in unused:
    np.testing.assert_array_equal(got[k], flat[k])
  # the same tx also accepts the tree nested under 'params'
  tx.init({"params": params})


def test_lr_schedule_steps_per_epoch():
  sched = tracking_optim.make_lr_schedule(
      optim_config(lr=2.5e-4, batch_size=128, lr_drop_epoch=80), steps_per_epoch=468)
  assert float(sched(0)) == pytest.approx(2.5e-4)
  assert float(sched(80 * 468 - 1)) == pytest.approx(2.5e-4)       # last step of epoch 80
  assert float(sched(80 * 468)) == pytest.approx(2.5e-5)           # epoch 81
  assert float(sched(100 * 468 - 1)) == pytest.approx(2.5e-5)
  assert float(sched(160 * 468)) == pytest.approx(2.5e-6)          # StepLR keeps dropping
  half = tracking_optim.make_lr_schedule(optim_config(lr=2.5e-4, batch_size=64), 10)
  assert float(half(0)) == pytest.approx(1.25e-4)                   # lr x batch / 128
  flat = tracking_optim.make_lr_schedule(optim_config(lr_drop_epoch=0), 10)
  assert float(flat(10 ** 6)) == pytest.approx(5e-3)
  with pytest.raises(ValueError, match="steps_per_epoch"):
    tracking_optim.make_lr_schedule(optim_config(), 0)


# --------------------------------------------------------------------------------- CE schedule


def ce_config(warm):
  c = ml_collections.ConfigDict(dict(ce_start_epoch=20, ce_warm_epoch=warm))
  c.model = ml_collections.ConfigDict(dict(ce_keep_ratio=0.7))
  return c


def test_ce_keep_ratio_closed_form():
  got10k, full = ce_config(50), ce_config(80)
  mid = lambda e, w: 0.7 + 0.3 * (math.cos(math.pi * (e - 20) / w) + 1) / 2  # noqa: E731
  expected = {1: 1.0, 20: 1.0, 21: mid(21, 50), 45: 0.85, 69: mid(69, 50), 70: 0.7, 71: 0.7,
              100: 0.7}
  for epoch, want in expected.items():
    assert tracking_optim.ce_keep_ratio(epoch, got10k) == pytest.approx(want, abs=1e-12), epoch
  assert 0.99 < tracking_optim.ce_keep_ratio(21, got10k) < 1.0     # CE starts at epoch 21
  assert tracking_optim.ce_keep_ratio(99, full) == pytest.approx(mid(99, 80), abs=1e-12)
  assert tracking_optim.ce_keep_ratio(100, full) == 0.7
  assert tracking_optim.ce_keep_ratio(101, full) == 0.7
  assert tracking_optim.ce_keep_ratio(60, full) == pytest.approx(0.85, abs=1e-12)


# ---------------------------------------------------------------------------------- val AO


def _seq(name, gt, cover):
  return datasets.Sequence(name, [f"/nonexistent/{name}/{i:08d}.jpg" for i in range(len(gt))],
                           np.asarray(gt, np.float64), "got10k", cover=np.asarray(cover),
                           image_size=(1000, 1000))


def test_got10k_val_scores_known_answer():
  """Perfect boxes (IoU 1) and boxes shifted by half their width (IoU 1/3); frame 0 and cover-0
  frames do not count."""
  gt_a = np.array([[100, 100, 40, 20]] * 5, np.float64)
  gt_b = np.array([[300, 200, 60, 30]] * 3, np.float64)
  a = _seq("a", gt_a, [8, 8, 0, 8, 8])
  b = _seq("b", gt_b, [8, 8, 8])
  shifted = gt_b + np.array([30, 0, 0, 0])
  scores = tracking_eval.got10k_val_scores([(a, gt_a), (b, shifted)])
  assert scores["ao"] == pytest.approx((3 + 2 / 3) / 5 * 100, abs=1e-9)
  assert scores["sr50"] == pytest.approx(60.0) and scores["sr75"] == pytest.approx(60.0)
  nan_boxes = gt_b.copy()
  nan_boxes[1, 0] = np.nan
  assert math.isnan(tracking_eval.got10k_val_scores([(a, gt_a), (b, nan_boxes)])["ao"])
  np.testing.assert_array_equal(tracking_eval.saved_boxes(np.array([[1.9, -1.9, 3.5, 4.0]])),
                                [[1.0, -1.0, 3.0, 4.0]])


def tiny_tracker_config():
  c = configlib.droptrack_defaults()
  c.model.variant = "micro/16"
  c.model.depth = 2
  c.model.ce_loc = (1,)
  c.model.template_size, c.model.search_size = 64, 128
  c.model.pretrain_img_size = 112
  c.model.head_channels = 32
  c.tracker.batch_sequences = 2
  c.val_ao_sequences = -1
  return c


def random_variables(model, seed=0):
  """Non-trivial random tracker weights from the variable shapes (model.init is slow to compile
  on a busy CPU; the values only need to make the tracker move)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = tracking_optim._names(path)[-1]
    if name == "var":
      return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return rng.normal(0, 1 / math.sqrt(fan_in), leaf.shape).astype(np.float32)
    if name == "scale":
      return (1 + rng.normal(0, 0.1, leaf.shape)).astype(np.float32)
    return rng.normal(0, 0.3, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, ostrack.variable_shapes(model))


@pytest.fixture(scope="module")
def val_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("got10k_val") / "data")
  make_tracking_sequences.make_dataset(root, train=0, val=2, frames=16, size=(96, 72), seed=3,
                                       progress=False)
  return root


def test_val_ao_equals_offline_evaluation(val_root, tmp_path):
  """val_ao == `track run` (BatchedRunner, result files) then metrics.evaluate_got10k."""
  config = tiny_tracker_config()
  model = ostrack.OSTrackCE.from_config(config)
  variables = random_variables(model, seed=1)
  settings = tracker_lib.TrackerSettings.from_config(config)
  sequences = datasets.load_dataset("got10k", val_root, "val")
  out = str(tmp_path / "results")
  devices = jax.local_devices()[:1]   # one compile of a small batch: fast on a busy CPU
  with runner_lib.BatchedRunner(model, variables, settings, slots=2, devices=devices) as runner:
    for result in runner.run(sequences):
      results_lib.write_got10k(out, result.sequence.name, result.boxes, result.times)
  offline = track_metrics.evaluate_got10k(sequences, out)["metrics"]
  got = tracking_eval.val_ao(model, jax.device_put(variables), config, sequences, settings,
                             devices=devices)
  assert set(got) == {"ao", "sr50", "sr75"}
  assert got["ao"] == pytest.approx(offline["AO"], abs=1e-9)
  assert got["sr50"] == pytest.approx(offline["SR0.5"], abs=1e-9)
  assert got["sr75"] == pytest.approx(offline["SR0.75"], abs=1e-9)
  assert 0.0 <= got["ao"] <= 100.0
  # val_ao_sequences = 1: only the first sequence (the generator is not read further)
  config.val_ao_sequences = 1
  first = tracking_eval.val_ao(model, variables, config, iter(sequences), settings,
                               devices=devices)
  offline_first = track_metrics.evaluate_got10k(sequences[:1], out)["metrics"]
  assert first["ao"] == pytest.approx(offline_first["AO"], abs=1e-9)


# ------------------------------------------------------------------------------------- figure


def test_tracking_figure_writes_png(tmp_path):
  from PIL import Image
  template = np.full((64, 64, 3), 128, np.uint8)
  search = np.full((128, 128, 3), 128, np.uint8)
  score = random_score_map(np.random.default_rng(6), 1, 8)[0]
  path = tracking_figures.tracking_figure(template, search, np.array([0.2, 0.3, 0.3, 0.2]),
                                          np.array([0.45, 0.35, 0.25, 0.3]), score,
                                          str(tmp_path / "figs" / "pair.png"), title="step 1")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  img = np.asarray(Image.open(path).convert("RGB")).astype(int)
  r, g, b = img[..., 0], img[..., 1], img[..., 2]
  assert ((g > 200) & (r < 60) & (b < 60)).sum() > 50       # the GT box
  assert ((r > 200) & (g < 60) & (b < 60)).sum() > 50       # the predicted box
  with pytest.raises(ValueError, match="uint8"):
    tracking_figures.tracking_figure(template.astype(np.float32), search, np.zeros(4), np.zeros(4),
                                     score, str(tmp_path / "x.png"))
