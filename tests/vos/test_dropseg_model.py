"""DropSeg (vos/dropseg/model.py) against the released network rebuilt here in PyTorch from timm's
ViT blocks and STCN's decoder written out below (not our code, not DropSeg's code), fed our export.

Which checks use the released sizes: the parity tests run the released widths (ViT-B: width 768,
12 heads, MLP 3072, patch 16; pyramid 512 / 256; decoder 512 / 256; 384-px training grid 24x24,
pre-training grid 14x14) with 2 blocks instead of 12 (the blocks are identical, so depth only
costs time); the key-set test builds the full released ViT-B (190 keys, shapes only). The rest
(ConvTranspose, aggregation, table resize) are closed-form checks at small sizes.
"""
import copy
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

from dropmae_jax.config import defaults as configlib
from dropmae_jax.convert import layout
from dropmae_jax.vos.dropseg import inference
from dropmae_jax.vos.dropseg import layout as seg_layout
from dropmae_jax.vos.dropseg import model as model_lib

torch.manual_seed(0)
RELEASED = dict(dim=768, depth=2, heads=12, patch=16, img_size=384, legacy_img=224,
                num_classes=1000, fpn1=256, fpn2=512, compress=512, decoder=256)


# ----------------------------------------------------------------------------- torch reference


class RefResBlock(torch.nn.Module):
  """STCN `model/modules.py` ResBlock."""

  def __init__(self, indim, outdim):
    super().__init__()
    self.downsample = None if indim == outdim else torch.nn.Conv2d(indim, outdim, 3, padding=1)
    self.conv1 = torch.nn.Conv2d(indim, outdim, 3, padding=1)
    self.conv2 = torch.nn.Conv2d(outdim, outdim, 3, padding=1)

  def forward(self, x):
    r = self.conv1(F.relu(x))
    r = self.conv2(F.relu(r))
    if self.downsample is not None:
      x = self.downsample(x)
    return x + r


class RefUpsampleBlock(torch.nn.Module):
  """STCN `model/modules.py` UpsampleBlock(skip_c, up_c, out_c)."""

  def __init__(self, skip_c, up_c, out_c):
    super().__init__()
    self.skip_conv = torch.nn.Conv2d(skip_c, up_c, 3, padding=1)
    self.out_conv = RefResBlock(up_c, out_c)

  def forward(self, skip_f, up_f):
    x = self.skip_conv(skip_f)
    x = x + F.interpolate(up_f, scale_factor=2, mode="bilinear", align_corners=False)
    return self.out_conv(x)


class RefDecoder(torch.nn.Module):
  """DropSeg `model/network.py` Decoder (released widths 768 -> 512, 512/512/256, 256/256/256)."""

  def __init__(self, dim, fpn2, fpn1, compress, decoder):
    super().__init__()
    self.compress = RefResBlock(dim, compress)
    self.up_16_8 = RefUpsampleBlock(fpn2, compress, decoder)
    self.up_8_4 = RefUpsampleBlock(fpn1, decoder, decoder)
    self.pred = torch.nn.Conv2d(decoder, 1, 3, padding=1)

  def forward(self, f16, f8, f4):
    x = self.compress(f16)
    x = self.up_16_8(f8, x)
    x = self.up_8_4(f4, x)
    x = self.pred(F.relu(x))
    return F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)


class RefNorm2d(torch.nn.Module):
  def __init__(self, dim):
    super().__init__()
    self.ln = torch.nn.LayerNorm(dim, eps=1e-6)

  def forward(self, x):
    return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class RefDropSeg(torch.nn.Module):
  """DropSeg's VisionTransformer (model/models_vit.py), registered in the released sequence:
  timm 0.3.2's VisionTransformer.__init__ (patch_embed, cls_token, pos_embed, pos_drop, blocks,
  norm, pre_logits, head), then the subclass (fc_norm, mask_patch_embed, fpn1, fpn2,
  stcn_decoder, temporal_pos_embed_x, temporal_pos_embed_z), then model/model.py's frozen
  pos_embed_two_frame and pos_embed_three_frame."""

  def __init__(self, dim, depth, heads, patch, img_size, legacy_img, num_classes, fpn1, fpn2,
               compress, decoder):
    super().__init__()
    grid, legacy = img_size // patch, legacy_img // patch
    self.dim, self.patch = dim, patch
    self.patch_embed = PatchEmbed(None, patch, 3, dim, strict_img_size=False)
    self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, dim))
    self.pos_embed = torch.nn.Parameter(torch.zeros(1, 1 + legacy ** 2, dim))
    self.pos_drop = torch.nn.Dropout(0.0)
    norm = functools.partial(torch.nn.LayerNorm, eps=1e-6)
    self.blocks = torch.nn.ModuleList([Block(dim, heads, 4.0, qkv_bias=True, norm_layer=norm)
                                       for _ in range(depth)])
    self.norm = norm(dim)
    self.pre_logits = torch.nn.Identity()
    self.head = torch.nn.Linear(dim, num_classes)
    self.fc_norm = norm(dim)
    self.mask_patch_embed = PatchEmbed(None, patch, 1, dim, strict_img_size=False)
    self.fpn1 = torch.nn.Sequential(torch.nn.ConvTranspose2d(dim, dim, 2, 2), RefNorm2d(dim),
                                    torch.nn.GELU(), torch.nn.ConvTranspose2d(dim, fpn1, 2, 2))
    self.fpn2 = torch.nn.Sequential(torch.nn.ConvTranspose2d(dim, fpn2, 2, 2))
    self.stcn_decoder = RefDecoder(dim, fpn2, fpn1, compress, decoder)
    self.temporal_pos_embed_x = torch.nn.Parameter(torch.randn(1, 1, dim))
    self.temporal_pos_embed_z = torch.nn.Parameter(torch.randn(1, 1, dim))
    self.pos_embed_two_frame = torch.nn.Parameter(torch.zeros(1, 1 + 2 * grid ** 2, dim),
                                                  requires_grad=False)
    self.pos_embed_three_frame = torch.nn.Parameter(torch.zeros(1, 1 + 3 * grid ** 2, dim),
                                                    requires_grad=False)

  def backbone(self, memory_frames, mask_frames, query_frame):
    """forward(mode='backbone') with one memory frame (T = 1), as released."""
    b, t, _, h, w = memory_frames.shape
    memory_tokens = self.patch_embed(memory_frames.flatten(0, 1))
    mask_tokens = self.mask_patch_embed(mask_frames.flatten(0, 1))
    memory_tokens = memory_tokens + mask_tokens
    memory_tokens = memory_tokens + self.temporal_pos_embed_z
    query_tokens = self.patch_embed(query_frame)
    query_tokens = query_tokens + self.temporal_pos_embed_x
    x = torch.cat((memory_tokens, query_tokens), dim=1)
    x = x + self.pos_embed_two_frame[:, 1:, :]
    x = self.pos_drop(x)
    for blk in self.blocks:
      x = blk(x)
    x = self.norm(x)
    n = query_tokens.shape[1]
    q = x[:, -n:, :].permute(0, 2, 1).contiguous().view(b, self.dim, h // self.patch,
                                                         w // self.patch)
    return q, self.fpn2(q), self.fpn1(q)

  def segmentation_single_object(self, m16, m8, m4):
    """forward(mode='segmentation_single_onject')."""
    return torch.sigmoid(self.stcn_decoder(m16, m8, m4))

  @staticmethod
  def aggregate(prob):
    """VisionTransformer.aggregate (models_vit.py): objects on dim 1."""
    new_prob = torch.cat([torch.prod(1 - prob, dim=1, keepdim=True), prob], 1).clamp(
        1e-7, 1 - 1e-7)
    return torch.log((new_prob / (1 - new_prob)))


def ref_interpolate_pos_embed_2d(pos_embed, kh, kw):
  """inference_core.py interpolate_pos_embed_2D, as released."""
  model_pos_tokens = pos_embed[:, 1:, :]
  size = int((model_pos_tokens.shape[1] // 2) ** 0.5)
  model_pos_tokens = pos_embed[:, 1:(size * size + 1), :]
  extra = pos_embed[:, :1]
  dim = extra.shape[-1]
  if kh != size or kw != size:
    tmp = model_pos_tokens.reshape(-1, size, size, dim).contiguous().permute(0, 3, 1, 2)
    search = F.interpolate(tmp, size=(kh, kw), mode="bicubic", align_corners=False)
    search = search.permute(0, 2, 3, 1).contiguous().flatten(1, 2)
  else:
    search = model_pos_tokens
  return (torch.cat((extra, search, search), dim=1),
          torch.cat((extra, search, search, search), dim=1))


def ref_pad_divide_by(x, d):
  """util/tensor_util.py pad_divide_by (NCHW)."""
  h, w = x.shape[-2:]
  new_h = h + d - h % d if h % d else h
  new_w = w + d - w % d if w % d else w
  lh, uh = int((new_h - h) / 2), int(new_h - h) - int((new_h - h) / 2)
  lw, uw = int((new_w - w) / 2), int(new_w - w) - int((new_w - w) / 2)
  pad = (int(lw), int(uw), int(lh), int(uh))
  return F.pad(x, pad), pad


def ref_object_logits(ref, frame0, masks, frame1):
  """Per-object decoder logits (K, H, W) as the released inference loops over objects; the
  network's table must already be the one for this size."""
  out = []
  with torch.no_grad():
    for k in range(masks.shape[0]):
      m16, m8, m4 = ref.backbone(frame0[None, None], masks[k][None, None, None], frame1[None])
      out.append(ref.stcn_decoder(m16, m8, m4)[0, 0])
  return torch.stack(out)


# ----------------------------------------------------------------------------- helpers


def model_of(dim, depth, heads, patch, img_size, legacy_img, num_classes, fpn1, fpn2, compress,
             decoder):
  variant = {64: "micro", 768: "B"}[dim]
  assert model_lib.vit.VIT_SIZES[variant].heads == heads
  return model_lib.DropSeg(variant=f"{variant}/{patch}", depth=depth, img_size=img_size,
                           pretrain_img_size=legacy_img, num_classes=num_classes,
                           fpn1_channels=fpn1, fpn2_channels=fpn2, compress_channels=compress,
                           decoder_channels=decoder, drop_path_rate=0.1)


def randomize(shapes, seed=0):
  """Every tensor non-trivial at scales that keep activations O(1); a segmenter's frozen tables
  as model/model.py builds them ([cls ; P ; P], [cls ; P ; P ; P]), from a random pos_embed."""
  rng = np.random.default_rng(seed)
  out = {}
  for collection, tree in shapes.items():
    flat = layout.flatten(tree)
    for path, v in flat.items():
      name = "/".join(path)
      if path[-1] == "kernel" and len(v.shape) == 4 and path[0].startswith("fpn"):
        fan_in = v.shape[3]                           # ConvTranspose (kh, kw, out, in)
      elif path[-1] == "kernel":
        fan_in = int(np.prod(v.shape[:-1]))
      if path[-1] == "kernel":
        gain = 1.5 if "qkv" in name else 1.0
        flat[path] = rng.normal(0, gain / math.sqrt(fan_in), v.shape).astype(np.float32)
      elif path[-1] == "scale":
        flat[path] = (1 + rng.normal(0, 0.1, v.shape)).astype(np.float32)
      else:
        flat[path] = rng.normal(0, 0.1 if path[-1] == "bias" else 0.5, v.shape).astype(np.float32)
    out[collection] = layout.unflatten(flat)
  if model_lib.FROZEN not in out:   # another model's tree (DropMAE's params)
    return out
  frozen = out[model_lib.FROZEN]
  two, three = model_lib.two_frame_table(frozen["pos_embed"],
                                         int(round(math.sqrt((frozen["pos_embed_two_frame"].shape[1]
                                                              - 1) / 2))))
  frozen["pos_embed_two_frame"] = np.asarray(two)
  frozen["pos_embed_three_frame"] = np.asarray(three)
  return out


def torch_state(variables):
  return {k: torch.from_numpy(np.array(v)) for k, v in
          seg_layout.variables_to_state_dict(variables).items()}


def blobs(height, width, seed):
  """Two overlapping-free object masks (2, H, W) in {0, 1}: an ellipse and a rectangle."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:height, :width]
  cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.2, 0.4) * width
  ellipse = ((yy - cy) / (0.25 * height)) ** 2 + ((xx - cx) / (0.15 * width)) ** 2 < 1
  rect = np.zeros((height, width), bool)
  rect[height // 5: height // 2, int(0.6 * width): int(0.85 * width)] = True
  rect &= ~ellipse
  return np.stack([ellipse, rect]).astype(np.float32)


@pytest.fixture(scope="module")
def released_width():
  """(model, variables, torch reference loaded strict from our export) at the released widths,
  2 blocks."""
  model = model_of(**RELEASED)
  variables = randomize(model_lib.variable_shapes(model), seed=1)
  ref = RefDropSeg(**RELEASED)
  state = torch_state(variables)
  assert list(state) == list(ref.state_dict())          # the released key order
  ref.load_state_dict(state, strict=True)
  return model, variables, ref.eval()


def compare(ours_logits, theirs_logits):
  """Max abs differences of per-object logits, aggregated logits (away from the clamp) and
  aggregated probabilities (everywhere)."""
  ours_logits = np.asarray(ours_logits)
  theirs = theirs_logits.numpy()
  per_object = float(np.abs(ours_logits - theirs).max())
  prob_t = torch.sigmoid(theirs_logits)[None]                                 # (1, K, H, W)
  agg_theirs = RefDropSeg.aggregate(prob_t)[0].numpy()
  agg_ours = np.asarray(model_lib.soft_aggregate(jax.nn.sigmoid(jnp.asarray(ours_logits))[None],
                                                 axis=1))[0]
  away = (prob_t[0].numpy() < 1 - 1e-4).all(0)                               # see soft_aggregate
  aggregated = float(np.abs(agg_ours - agg_theirs)[:, away].max())
  probs = float(np.abs(jax.nn.softmax(agg_ours, axis=0) - F.softmax(
      torch.from_numpy(agg_theirs), dim=0).numpy()).max())
  return per_object, aggregated, probs, float(away.mean()), float(np.abs(theirs).max())


# ----------------------------------------------------------------------------- tests


@pytest.mark.timeout(150)
def test_two_objects_at_384_match_the_released_network(released_width):
  """Released widths, 2 blocks, the training size 384: both objects in one call vs one
  released forward per object."""
  model, variables, ref = released_width
  rng = np.random.default_rng(2)
  frame0, frame1 = (rng.normal(size=(384, 384, 3)).astype(np.float32) for _ in range(2))
  masks = blobs(384, 384, seed=3)
  ours = jax.jit(model.apply)(variables, frame0[None], masks[None], frame1[None])[0]
  assert ours.shape == (2, 384, 384) and ours.dtype == jnp.float32
  theirs = ref_object_logits(ref, torch.from_numpy(frame0).permute(2, 0, 1),
                             torch.from_numpy(masks), torch.from_numpy(frame1).permute(2, 0, 1))
  per_object, aggregated, probs, away, scale = compare(ours, theirs)
  print(f"384: max |logit| {scale:.2f}; max abs diff per-object {per_object:.2e}, aggregated "
        f"{aggregated:.2e} ({away:.1%} of pixels away from the clamp), probabilities {probs:.2e}")
  assert scale > 1.0                      # logits of real range, not a degenerate comparison
  assert per_object < 1e-4 and aggregated < 1e-4 and probs < 1e-5
  assert away > 0.5
  # The two objects differ (their masks do), so a batch-axis mix-up would show.
  assert np.abs(np.asarray(ours[0] - ours[1])).max() > 0.1


@pytest.mark.timeout(150)
def test_two_objects_at_a_padded_non_square_size_match_the_released_inference(released_width):
  """Released widths, 2 blocks, a 150x420 frame padded centred to 160x432 (10x27 tokens: the
  24x24 table shrinks in height and grows in width), the table re-interpolated as
  InferenceCore_ViT does."""
  model, variables, ref = released_width
  rng = np.random.default_rng(4)
  frame0, frame1 = (rng.normal(size=(150, 420, 3)).astype(np.float32) for _ in range(2))
  masks = blobs(150, 420, seed=5)
  padded = [inference.pad_to_multiple(a)[0] for a in (frame0, frame1)]
  padded_masks, pads = inference.pad_to_multiple(masks, axes=(1, 2))
  assert pads == (5, 5, 6, 6) and padded_masks.shape == (2, 160, 432)
  ours = jax.jit(model.apply)(variables, padded[0][None], padded_masks[None], padded[1][None])[0]

  to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)   # noqa: E731
  f0, pad = ref_pad_divide_by(to_t(frame0), 16)
  f1, _ = ref_pad_divide_by(to_t(frame1), 16)
  m, _ = ref_pad_divide_by(torch.from_numpy(masks), 16)
  assert pad == (6, 6, 5, 5)
  np.testing.assert_array_equal(f0.permute(1, 2, 0).numpy(), padded[0])
  ref = copy.deepcopy(ref)
  two, three = ref_interpolate_pos_embed_2d(ref.pos_embed_two_frame.data, 10, 27)
  ref.pos_embed_two_frame = torch.nn.Parameter(two)
  ref.pos_embed_three_frame = torch.nn.Parameter(three)
  theirs = ref_object_logits(ref, f0, m, f1)
  per_object, aggregated, probs, away, scale = compare(ours, theirs)
  print(f"150x420 padded to 160x432: max |logit| {scale:.2f}; max abs diff per-object "
        f"{per_object:.2e}, aggregated {aggregated:.2e} ({away:.1%} of pixels away from the "
        f"clamp), probabilities {probs:.2e}")
  assert scale > 1.0
  assert per_object < 1e-4 and aggregated < 1e-4 and probs < 1e-5
  # and the table our model adds is the released one
  bound = model.bind(variables)
  np.testing.assert_allclose(np.asarray(bound.spatial_table(10, 27)), two[:, 1:].numpy(),
                             atol=1e-5)


@pytest.mark.timeout(30)
def test_conv_transpose_matches_torch_without_a_kernel_flip():
  """model.ConvTranspose2x2 vs torch.nn.ConvTranspose2d(k=2, s=2), weights through the layout
  rule; also what flax.linen.ConvTranspose needs for the same numbers."""
  import flax.linen as nn
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 7, 6)).astype(np.float32)
  ct = torch.nn.ConvTranspose2d(6, 4, 2, 2)
  with torch.no_grad():
    theirs = ct(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  kernel = layout.from_torch_array(("kernel",), ct.weight.detach().numpy())
  assert kernel.shape == (2, 2, 4, 6)
  params = {"kernel": kernel, "bias": ct.bias.detach().numpy()}
  ours = model_lib.ConvTranspose2x2(4).apply({"params": params}, x)
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-5)
  np.testing.assert_array_equal(layout.to_torch_array(("kernel",), kernel), ct.weight.detach())
  # A spatially flipped kernel is visibly wrong (so the check above can tell).
  flipped = dict(params, kernel=kernel[::-1, ::-1])
  assert np.abs(np.asarray(model_lib.ConvTranspose2x2(4).apply({"params": flipped}, x))
                - theirs).max() > 0.1
  # flax's own ConvTranspose agrees with the same (kh, kw, out, in) kernel when
  # transpose_kernel=True; with transpose_kernel=False it needs (kh, kw, in, out) flipped.
  flax_t = nn.ConvTranspose(4, (2, 2), strides=(2, 2), padding="VALID", transpose_kernel=True)
  np.testing.assert_allclose(np.asarray(flax_t.apply({"params": params}, x)), theirs, atol=1e-5)
  flax_f = nn.ConvTranspose(4, (2, 2), strides=(2, 2), padding="VALID")
  flipped_io = {"kernel": kernel.transpose(0, 1, 3, 2)[::-1, ::-1], "bias": params["bias"]}
  np.testing.assert_allclose(np.asarray(flax_f.apply({"params": flipped_io}, x)), theirs,
                             atol=1e-5)


@pytest.mark.timeout(30)
def test_soft_aggregation_matches_torch():
  """soft_aggregate vs DropSeg's aggregate (models_vit.py, objects on dim 1) and
  model/aggregate.py (objects on dim 0, keep_bg=True), including the clamp ends and a
  selector-zeroed second object."""
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 4, size=(3, 2, 9, 11)).astype(np.float32)
  logits[0, 0, 0, :4] = [-40.0, 40.0, 0.0, 16.0]      # at both clamp ends
  prob = torch.sigmoid(torch.from_numpy(logits))
  theirs = RefDropSeg.aggregate(prob).numpy()
  ours = np.asarray(model_lib.soft_aggregate(jax.nn.sigmoid(logits), axis=1))
  away = (prob.numpy() < 1 - 1e-4).all(1)[:, None]
  np.testing.assert_allclose(np.where(away, ours, 0), np.where(away, theirs, 0), atol=1e-4)
  assert ours.shape == (3, 3, 9, 11)
  assert np.isclose(ours[0, 1, 0, 0], np.log(1e-7 / (1 - 1e-7)), atol=1e-4)   # the low clamp
  np.testing.assert_allclose(np.asarray(jax.nn.softmax(ours, axis=1)),
                             F.softmax(torch.from_numpy(theirs), dim=1).numpy(), atol=1e-5)
  # the selector: a missing second object sits at the clamp floor, exactly as released
  selector = np.array([[1, 0]] * 3, np.float32)[:, :, None, None]
  theirs_sel = RefDropSeg.aggregate(prob * torch.from_numpy(selector)).numpy()
  ours_sel = np.asarray(model_lib.soft_aggregate(jax.nn.sigmoid(logits), 1, selector))
  np.testing.assert_array_equal(ours_sel[:, 2], theirs_sel[:, 2])
  # objects on axis 0 (inference): model/aggregate.py with keep_bg=True
  p0 = prob[0]                                                   # (K, H, W)
  new = torch.cat([torch.prod(1 - p0, dim=0, keepdim=True), p0], 0).clamp(1e-7, 1 - 1e-7)
  theirs0 = F.softmax(torch.log(new / (1 - new)), dim=0).numpy()
  ours0 = np.asarray(model_lib.aggregate_probabilities(logits[0], axis=0))
  np.testing.assert_allclose(ours0, theirs0, atol=1e-5)


@pytest.mark.timeout(30)
def test_spatial_tables_match_torch_bicubic():
  """The two-frame table from pos_embed (model/model.py interpolate_pos_embed) and its
  re-interpolation to padded grids (inference_core.py), up and down, vs torch."""
  rng = np.random.default_rng(0)
  pos = rng.normal(size=(1, 1 + 7 * 7, 8)).astype(np.float32)
  two, three = model_lib.two_frame_table(pos, 5)
  p = F.interpolate(torch.from_numpy(pos[:, 1:]).reshape(1, 7, 7, 8).permute(0, 3, 1, 2),
                    size=(5, 5), mode="bicubic", align_corners=False)
  p = p.permute(0, 2, 3, 1).flatten(1, 2).numpy()
  np.testing.assert_allclose(np.asarray(two), np.concatenate([pos[:, :1], p, p], 1), atol=1e-5)
  np.testing.assert_allclose(np.asarray(three), np.concatenate([pos[:, :1], p, p, p], 1),
                             atol=1e-5)
  same, _ = model_lib.two_frame_table(pos, 7)       # no interpolation at the same grid
  np.testing.assert_array_equal(np.asarray(same)[:, 1:50], pos[:, 1:])
  model = model_lib.DropSeg(variant="micro/16", img_size=80, pretrain_img_size=112)
  table = rng.normal(size=(1, 1 + 2 * 25, 64)).astype(np.float32)
  table[:, 26:] = table[:, 1:26]
  variables = jax.tree.map(lambda a: np.zeros(a.shape, np.float32),
                           model_lib.variable_shapes(model))
  variables[model_lib.FROZEN]["pos_embed_two_frame"] = table
  for grid in ((3, 8), (5, 5), (9, 2)):
    ours = model.bind(variables).spatial_table(*grid)
    theirs, _ = ref_interpolate_pos_embed_2d(torch.from_numpy(table), *grid)
    np.testing.assert_allclose(np.asarray(ours), theirs[:, 1:].numpy(), atol=1e-5)


@pytest.mark.timeout(60)
def test_released_vit_b_layout():
  """The full released model (dropseg_davis_ytvos: ViT-B/16, 12 blocks, 384): 190 keys with the
  released shapes, in the released order, from the torch reference; shapes only."""
  config = configlib.dropseg_defaults()
  model = model_lib.DropSeg.from_config(config)
  shapes = model_lib.variable_shapes(model)
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
  ours = seg_layout.variables_to_state_dict(zeros)
  ref = RefDropSeg(**dict(RELEASED, depth=12)).state_dict()
  assert len(ref) == 190 and list(ours) == list(ref)
  for k, v in ref.items():
    assert tuple(ours[k].shape) == tuple(v.shape), k
  assert ours["pos_embed_two_frame"].shape == (1, 1 + 2 * 576, 768)
  assert ours["fpn1.0.weight"].shape == (768, 768, 2, 2)
  # what the released Adam trains: every tensor but the frozen ones
  frozen = {"cls_token", "pos_embed", "pos_embed_two_frame", "pos_embed_three_frame",
            "head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}
  assert set(seg_layout.variables_to_state_dict({"frozen": zeros["frozen"]})) == frozen
  assert model_lib.count_params(shapes["params"]) == sum(
      v.numel() for k, v in ref.items() if k not in frozen)
  out = jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((1, 480, 864, 3), jnp.float32),
                       jax.ShapeDtypeStruct((1, 3, 480, 864), jnp.float32),
                       jax.ShapeDtypeStruct((1, 480, 864, 3), jnp.float32))
  assert out.shape == (1, 3, 480, 864)
  with pytest.raises(ValueError, match="multiples of 16"):
    jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((1, 480, 854, 3), jnp.float32),
                   jax.ShapeDtypeStruct((1, 3, 480, 854), jnp.float32),
                   jax.ShapeDtypeStruct((1, 480, 854, 3), jnp.float32))
