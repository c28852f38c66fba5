"""OSTrack-CE / DropTrack against the released network rebuilt here in PyTorch from timm / torch
pieces (not our code, not OSTrack's code), plus the checkpoint formats both ways."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.layers import Mlp, PatchEmbed

from dropmae_jax.config import defaults as configlib
from dropmae_jax.convert import io
from dropmae_jax.convert import layout
from dropmae_jax.convert import posemb
from dropmae_jax.track import layout as tracker_layout
from dropmae_jax.convert.__main__ import main as convert_main
from dropmae_jax.track import box_head
from dropmae_jax.models import mae
from dropmae_jax.track import ostrack
from dropmae_jax.track import pretrain_init
from dropmae_jax.track import vit_ce
from dropmae_jax.models import vit

WIDTH, DEPTH, HEADS, PATCH = 64, 10, 4, 16
TEMPLATE, SEARCH, PRETRAIN_IMG, HEAD_CH = 64, 128, 112, 32
CE_LOC = (3, 6, 9)
BATCH = 2
torch.manual_seed(0)


def small_config():
  c = configlib.droptrack_defaults()
  c.model.variant = f"micro/{PATCH}"
  c.model.depth = DEPTH
  c.model.template_size, c.model.search_size = TEMPLATE, SEARCH
  c.model.pretrain_img_size = PRETRAIN_IMG
  c.model.head_channels = HEAD_CH
  return c


CONFIG_SOURCE = f'''
from dropmae_jax.config import defaults as configlib


def get_config():
  c = configlib.droptrack_defaults()
  c.model.variant = "micro/{PATCH}"
  c.model.depth = {DEPTH}
  c.model.template_size, c.model.search_size = {TEMPLATE}, {SEARCH}
  c.model.pretrain_img_size = {PRETRAIN_IMG}
  c.model.head_channels = {HEAD_CH}
  return c
'''


# ----------------------------------------------------------------------------- torch reference


class RefAttention(torch.nn.Module):
  def __init__(self, dim, heads):
    super().__init__()
    self.heads = heads
    self.qkv = torch.nn.Linear(dim, 3 * dim)
    self.proj = torch.nn.Linear(dim, dim)

  def forward(self, x):
    b, n, c = x.shape
    q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)), attn


class RefBlock(torch.nn.Module):
  def __init__(self, dim, heads, mlp_dim):
    super().__init__()
    self.norm1 = torch.nn.LayerNorm(dim, eps=1e-6)
    self.attn = RefAttention(dim, heads)
    self.norm2 = torch.nn.LayerNorm(dim, eps=1e-6)
    self.mlp = Mlp(dim, mlp_dim)


def ref_conv(cin, cout):
  return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout),
                             torch.nn.ReLU())


class RefBackbone(torch.nn.Module):
  def __init__(self, dim, depth, heads, fz, fx, legacy_grid):
    super().__init__()
    self.patch_embed = PatchEmbed(None, PATCH, 3, dim, strict_img_size=False)
    self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, dim))
    self.pos_embed = torch.nn.Parameter(torch.zeros(1, 1 + legacy_grid ** 2, dim))
    self.pos_embed_z = torch.nn.Parameter(torch.zeros(1, fz * fz, dim))
    self.pos_embed_x = torch.nn.Parameter(torch.zeros(1, fx * fx, dim))
    self.temporal_pos_embed_x = torch.nn.Parameter(torch.zeros(1, 1, dim))
    self.temporal_pos_embed_z = torch.nn.Parameter(torch.zeros(1, 1, dim))
    self.blocks = torch.nn.ModuleList([RefBlock(dim, heads, 4 * dim) for _ in range(depth)])
    self.norm = torch.nn.LayerNorm(dim, eps=1e-6)


class RefHead(torch.nn.Module):
  def __init__(self, dim, ch):
    super().__init__()
    for b, out in (("ctr", 1), ("offset", 2), ("size", 2)):
      for k, (cin, cout) in enumerate(zip((dim, ch, ch // 2, ch // 4), (ch, ch // 2, ch // 4, ch // 8)),
                                      start=1):
        setattr(self, f"conv{k}_{b}", ref_conv(cin, cout))
      setattr(self, f"conv5_{b}", torch.nn.Conv2d(ch // 8, out, 1))

  def tower(self, x, b):
    for k in range(1, 6):
      x = getattr(self, f"conv{k}_{b}")(x)
    return x


class RefOSTrack(torch.nn.Module):
  """DropTrack's OSTrack-CE (jimmy-dq/DropTrack `lib/models/ostrack/vit_ce.py`, `ostrack.py`,
  `lib/models/layers/head.py`) as docs/tracking.md describes it, written plainly."""

  def __init__(self, dim=WIDTH, depth=DEPTH, heads=HEADS, template=TEMPLATE, search=SEARCH,
               legacy_img=PRETRAIN_IMG, head_ch=HEAD_CH, ce_loc=CE_LOC, keep=0.7):
    super().__init__()
    self.fz, self.fx = template // PATCH, search // PATCH
    self.ce_loc, self.keep = ce_loc, keep
    self.backbone = RefBackbone(dim, depth, heads, self.fz, self.fx, legacy_img // PATCH)
    self.box_head = RefHead(dim, head_ch)

  def forward(self, z_img, x_img, keep_ratio=None):
    bb = self.backbone
    z = bb.patch_embed(z_img) + bb.pos_embed_z + bb.temporal_pos_embed_z
    x = bb.patch_embed(x_img) + bb.pos_embed_x + bb.temporal_pos_embed_x
    b, lt, ls = z.shape[0], z.shape[1], x.shape[1]
    t = torch.cat([z, x], 1)
    centre = (self.fz // 2 - 1) * self.fz + (self.fz // 2 - 1)   # released CTR_POINT (even side)
    gidx = torch.arange(ls).repeat(b, 1)
    kept, margins = [], []
    for i, blk in enumerate(bb.blocks):
      out, attn = blk.attn(blk.norm1(t))
      t = t + out
      ratio = self.keep if keep_ratio is None else keep_ratio
      if i in self.ce_loc and ratio < 1:
        n = t.shape[1] - lt
        n_keep = math.ceil(ratio * n)
        score = attn[:, :, centre, lt:].mean(1)                  # (B, n)
        s_sorted, order = torch.sort(score, dim=1, descending=True)
        margins.append((s_sorted[:, n_keep - 1] - s_sorted[:, n_keep]).min().item())
        top = order[:, :n_keep]
        gidx = gidx.gather(1, top)
        search = t[:, lt:].gather(1, top[:, :, None].expand(-1, -1, t.shape[2]))
        t = torch.cat([t[:, :lt], search], 1)
        kept.append(gidx)
      t = t + blk.mlp(blk.norm2(t))
    t = bb.norm(t)
    xs = t[:, lt:]
    full = torch.zeros(b, ls, t.shape[2])
    full.scatter_(1, gidx[:, :, None].expand(-1, -1, t.shape[2]), xs)
    feat = full.transpose(1, 2).reshape(b, -1, self.fx, self.fx)
    h = self.box_head
    score = torch.clamp(torch.sigmoid(h.tower(feat, "ctr")), 1e-4, 1 - 1e-4)
    size = torch.clamp(torch.sigmoid(h.tower(feat, "size")), 1e-4, 1 - 1e-4)
    offset = h.tower(feat, "offset")
    idx = score.flatten(1).argmax(1)
    iy, ix = idx // self.fx, idx % self.fx
    rows = torch.arange(b)
    s = size.flatten(2)[rows, :, idx]
    o = offset.flatten(2)[rows, :, idx]
    box = torch.stack([(ix + o[:, 0]) / self.fx, (iy + o[:, 1]) / self.fx, s[:, 0], s[:, 1]], 1)
    return dict(score_map=score[:, 0], size_map=size.permute(0, 2, 3, 1),
                offset_map=offset.permute(0, 2, 3, 1), pred_boxes=box, kept=kept, margins=margins)


# ----------------------------------------------------------------------------- fixtures


def randomize(variables, seed=0):
  """Every tensor non-trivial; qkv scaled up so attention (and hence CE's ranking) is peaked."""
  rng = np.random.default_rng(seed)
  out = {}
  for coll, tree in variables.items():
    flat = layout.flatten(tree)
    for path, v in flat.items():
      name = "/".join(path)
      if coll == "batch_stats":
        flat[path] = (rng.uniform(0.5, 2.0, v.shape) if path[-1] == "var"
                      else rng.normal(0, 0.3, v.shape)).astype(np.float32)
      elif path[-1] == "kernel":
        fan_in = int(np.prod(v.shape[:-1]))
        gain = 1.5 if "qkv" in name else 1.0
        flat[path] = (rng.normal(0, gain / math.sqrt(fan_in), v.shape)).astype(np.float32)
      elif path[-1] == "scale":
        flat[path] = (1 + rng.normal(0, 0.1, v.shape)).astype(np.float32)
      else:
        flat[path] = rng.normal(0, 0.3 if path[-1] == "bias" else 0.5, v.shape).astype(np.float32)
    out[coll] = layout.unflatten(flat)
  return out


@pytest.fixture(scope="module")
def model():
  return ostrack.OSTrackCE.from_config(small_config())


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
  """Our randomised variables, saved as a tracker DIR and exported through the CLI."""
  d = tmp_path_factory.mktemp("tracker")
  # Values straight from numpy: compiling flax init of the whole tracker costs ~1 min on CPU.
  variables = randomize(ostrack.variable_shapes(model))
  io.save_tracker(str(d / "dir"), variables, small_config())
  out = str(d / "net.pth.tar")
  assert convert_main(["export-tracker", str(d / "dir"), "--out", out]) == 0
  return variables, out, d


@pytest.fixture(scope="module")
def torch_model(exported):
  _, path, _ = exported
  net = torch.load(path, map_location="cpu", weights_only=True)["net"]
  ref = RefOSTrack()
  ref.load_state_dict(net, strict=True)
  return ref.eval(), net


def images(seed=1):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(BATCH, TEMPLATE, TEMPLATE, 3)).astype(np.float32),
          rng.normal(size=(BATCH, SEARCH, SEARCH, 3)).astype(np.float32))


def to_torch(img):
  return torch.from_numpy(img).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("keep_ratio", [None, 1.0])
def test_forward_matches_torch_reference(model, exported, torch_model, keep_ratio):
  variables, _, _ = exported
  ref, _ = torch_model
  z, x = images()
  ours = jax.jit(lambda v, z, x: model.apply(v, z, x, keep_ratio=keep_ratio))(variables, z, x)
  with torch.no_grad():
    theirs = ref(to_torch(z), to_torch(x), keep_ratio)
  ratio = 0.7 if keep_ratio is None else keep_ratio
  expected_counts = vit_ce.ce_keep_counts(64, 3, ratio)
  assert [k.shape for k in ours["kept_indices"]] == [(BATCH, n) for n in expected_counts]
  if ratio < 1:
    assert expected_counts != [64] * 3 and len(theirs["kept"]) == 3
    # The cut must not sit on a near-tie, or the comparison below would be float noise.
    assert min(theirs["margins"]) > 1e-5, theirs["margins"]
    for ours_k, theirs_k in zip(ours["kept_indices"], theirs["kept"]):
      for b in range(BATCH):
        assert set(np.asarray(ours_k[b]).tolist()) == set(theirs_k[b].tolist())
  else:
    for k in ours["kept_indices"]:
      np.testing.assert_array_equal(np.asarray(k), np.tile(np.arange(64), (BATCH, 1)))
  for key in ("score_map", "size_map", "offset_map", "pred_boxes"):
    np.testing.assert_allclose(np.asarray(ours[key]), theirs[key].numpy(), atol=1e-4, rtol=1e-4,
                               err_msg=key)
  assert ours["pred_boxes"].shape == (BATCH, 4)


def test_masked_ce_matches_torch_reference_with_one_compile(model, exported, torch_model):
  """Masked CE (keep counts traced): the torch reference's outputs and kept sets at two ratios
  of the warm-up, from one compiled function."""
  variables, _, _ = exported
  ref, _ = torch_model
  z, x = images(3)
  traces = []

  def forward(v, z, x, counts):
    traces.append(1)
    return model.apply(v, z, x, keep_counts=counts)

  forward = jax.jit(forward)
  for ratio in (0.7, 0.85):
    counts = vit_ce.ce_keep_counts(64, 3, ratio)
    ours = forward(variables, z, x, np.asarray(counts, np.int32))
    with torch.no_grad():
      theirs = ref(to_torch(z), to_torch(x), ratio)
    assert min(theirs["margins"]) > 1e-5, theirs["margins"]
    for n, alive, theirs_k in zip(counts, ours["kept_indices"], theirs["kept"]):
      assert alive.shape == (BATCH, 64) and alive.dtype == bool
      for b in range(BATCH):
        assert set(np.nonzero(np.asarray(alive[b]))[0].tolist()) == set(theirs_k[b].tolist())
        assert int(np.asarray(alive[b]).sum()) == n
    for key in ("score_map", "size_map", "offset_map", "pred_boxes"):
      np.testing.assert_allclose(np.asarray(ours[key]), theirs[key].numpy(), atol=1e-4,
                                 rtol=1e-4, err_msg=f"{key} at keep ratio {ratio}")
  assert len(traces) == 1


def test_eliminated_positions_are_exact_zeros(model, exported):
  variables, _, _ = exported
  z, x = images(2)
  tokens, kept = jax.jit(lambda v, z, x: model.apply(v, z, x, method=lambda m, z, x: m.backbone(
      z, x)))(variables, z, x)
  search = np.asarray(tokens[:, (TEMPLATE // PATCH) ** 2:])
  for b in range(BATCH):
    alive = set(np.asarray(kept[-1][b]).tolist())
    dead = sorted(set(range(64)) - alive)
    assert len(dead) == 64 - 23
    assert np.all(search[b, dead] == 0.0)
    assert np.all(np.abs(search[b, sorted(alive)]).sum(-1) > 0)


def test_train_mode_batchnorm_matches_torch(model, exported, torch_model):
  """Batch statistics and the running-stat update (unbiased var, momentum 0.1) as torch's."""
  variables, _, _ = exported
  _, net = torch_model
  ref = RefOSTrack()
  ref.load_state_dict(net, strict=True)
  ref.train()
  z, x = images(3)
  no_drop = model.clone(drop_path_rate=0.0)
  out, updated = jax.jit(lambda v, z, x: no_drop.apply(v, z, x, train=True,
                                                       mutable=["batch_stats"]))(variables, z, x)
  theirs = ref(to_torch(z), to_torch(x))
  for key in ("score_map", "size_map", "offset_map"):
    np.testing.assert_allclose(np.asarray(out[key]), theirs[key].detach().numpy(), atol=1e-4,
                               rtol=1e-4, err_msg=key)
  new_state = tracker_layout.variables_to_state_dict({"params": variables["params"], **updated})
  sd = ref.state_dict()
  for key in ("box_head.conv1_ctr.1.running_mean", "box_head.conv3_size.1.running_var",
              "box_head.conv4_offset.1.running_var"):
    np.testing.assert_allclose(new_state[key], sd[key].numpy(), atol=1e-5, rtol=1e-5,
                               err_msg=key)


def test_drop_path_active_only_in_training(model, exported):
  """Stochastic depth: rates rise linearly to drop_path_rate (torch.linspace); random only with
  train=True."""
  variables, _, _ = exported
  bound = model.bind(variables)
  rates = [blk.drop_path for blk in bound.backbone.blocks]
  np.testing.assert_allclose(rates, torch.linspace(0, 0.1, DEPTH).tolist(), rtol=1e-6)
  block = vit.Block(HEADS, 4 * WIDTH, drop_path=0.5)
  x = jax.random.normal(jax.random.key(0), (8, 5, WIDTH))
  params = jax.jit(block.init)(jax.random.key(1), x)
  run = jax.jit(lambda key, det: block.apply(params, x, deterministic=det, rngs={"dropout": key}),
                static_argnums=1)
  a, b = run(jax.random.key(2), False), run(jax.random.key(3), False)
  assert not np.allclose(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(run(jax.random.key(2), True)),
                                np.asarray(run(jax.random.key(3), True)))
  no_drop = jax.jit(vit.Block(HEADS, 4 * WIDTH).apply)(params, x)
  np.testing.assert_allclose(np.asarray(run(jax.random.key(2), True)), np.asarray(no_drop),
                             atol=1e-5)


def test_drop_path_statistics():
  """Closed form: a sample's branch survives with p = 1 - rate and is scaled by 1 / p."""
  x = jnp.ones((4000, 3, 2))
  y = np.asarray(vit.DropPath(0.25).apply({}, x, False, rngs={"dropout": jax.random.key(0)}))
  per_sample = y.reshape(4000, -1)
  assert np.all((per_sample == 0).all(1) | np.isclose(per_sample, 1 / 0.75).all(1))
  assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.03


def test_cal_bbox_closed_form():
  f = 6
  score = np.full((2, f, f), 0.1, np.float32)
  score[0, 4, 1] = 0.9
  score[1, 0, 5] = 0.8
  score[1, 3, 3] = 0.8  # tie: the first maximum in row-major order wins (torch.max)
  size = np.random.default_rng(0).uniform(size=(2, f, f, 2)).astype(np.float32)
  offset = np.random.default_rng(1).uniform(size=(2, f, f, 2)).astype(np.float32)
  box = np.asarray(box_head.cal_bbox(score, size, offset))
  for b, (iy, ix) in enumerate([(4, 1), (0, 5)]):
    np.testing.assert_allclose(box[b], [(ix + offset[b, iy, ix, 0]) / f,
                                        (iy + offset[b, iy, ix, 1]) / f, *size[b, iy, ix]],
                               rtol=1e-6)


def test_ctr_point_matches_released_table():
  # generate_mask_cond: slice(3,4) for 7 and 8, slice(5,6) for 12, slice(6,7) for 14.
  for feat, c in ((7, 3), (8, 3), (12, 5), (14, 6)):
    assert vit_ce.ctr_point_index(feat) == c * feat + c
  assert vit_ce.ctr_point_index(12) == 65 and vit_ce.ctr_point_index(8) == 27


def test_vit_b_layout_and_ce_counts():
  """Key set and shapes of the released ViT-B/384 DropTrack (244 keys), from the torch reference."""
  config = configlib.droptrack_defaults()
  model = ostrack.OSTrackCE.from_config(config)
  z = jax.ShapeDtypeStruct((1, 192, 192, 3), jnp.float32)
  x = jax.ShapeDtypeStruct((1, 384, 384, 3), jnp.float32)
  shapes = jax.eval_shape(lambda z, x: model.init(jax.random.key(0), z, x), z, x)
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
  ours = tracker_layout.variables_to_state_dict(zeros)
  ref = RefOSTrack(dim=768, depth=12, heads=12, template=192, search=384, legacy_img=224,
                   head_ch=256).state_dict()
  assert len(ref) == 244 and set(ours) == set(ref)
  for k, v in ref.items():
    assert tuple(ours[k].shape) == tuple(v.shape), k
  assert ostrack.count_params(shapes["params"]) == sum(
      v.numel() for k, v in ref.items() if "running" not in k and "num_batches" not in k)
  out = jax.eval_shape(lambda v, z, x: model.apply(v, z, x), shapes, z, x)
  assert [k.shape[1] for k in out["kept_indices"]] == [404, 283, 199]
  assert model.keep_counts() == [404, 283, 199]
  out = jax.eval_shape(lambda v, z, x: model.apply(v, z, x, keep_ratio=0.5), shapes, z, x)
  assert [k.shape[1] for k in out["kept_indices"]] == [288, 144, 72]
  out = jax.eval_shape(lambda v, z, x: model.apply(v, z, x, keep_ratio=1.0), shapes, z, x)
  assert [k.shape[1] for k in out["kept_indices"]] == [576, 576, 576]
  assert out["score_map"].shape == (1, 24, 24) and out["size_map"].shape == (1, 24, 24, 2)
  small = model.clone(template_size=128, search_size=256)
  assert small.keep_counts() == [180, 126, 89]


def test_import_tracker_round_trip(exported, tmp_path):
  variables, path, _ = exported
  config_file = tmp_path / "cfg.py"
  config_file.write_text(CONFIG_SOURCE)
  out = tmp_path / "imported"
  assert convert_main(["import-tracker", path, "--out", str(out), "--config", str(config_file)]) == 0
  back, config = io.load_tracker(str(out))
  assert config.model.depth == DEPTH and tuple(config.model.ce_loc) == CE_LOC
  flat_a = {c: layout.flatten(variables[c]) for c in variables}
  flat_b = {c: layout.flatten(back[c]) for c in back}
  for c in flat_a:
    assert set(flat_a[c]) == set(flat_b[c])
    for k in flat_a[c]:
      np.testing.assert_array_equal(np.asarray(flat_a[c][k]), np.asarray(flat_b[c][k]))
  # export again: byte-identical tensors, int64 counters
  again = tmp_path / "again.pth.tar"
  assert convert_main(["export-tracker", str(out), "--out", str(again)]) == 0
  a = torch.load(path, weights_only=True)["net"]
  b = torch.load(str(again), weights_only=True)["net"]
  assert set(a) == set(b) and len(a) == 6 + 2 + 12 * DEPTH + 2 + 90
  for k in a:
    assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
  assert a["box_head.conv2_size.1.num_batches_tracked"].dtype == torch.int64
  # sizes read from the shapes when no config is given
  state = io.read_torch_state_dict(path)
  assert tracker_layout.infer_sizes(state, PATCH) == {
      "template_size": TEMPLATE, "search_size": SEARCH, "pretrain_img_size": PRETRAIN_IMG,
      "head_channels": HEAD_CH}


def test_import_tracker_refuses_other_models(exported, tmp_path, capsys):
  _, path, _ = exported
  config_file = tmp_path / "cfg.py"
  config_file.write_text(CONFIG_SOURCE)
  # (a) a DropMAE pre-training file
  mae_file = str(tmp_path / "dropmae.pth")
  io.write_torch_state_dict({"patch_embed.proj.weight": np.zeros((8, 3, 16, 16)),
                             "blocks.0.norm1.weight": np.zeros(8),
                             "decoder_embed.weight": np.zeros((4, 8)),
                             "mask_token": np.zeros((1, 1, 4))}, mae_file)
  out = tmp_path / "out_a"
  assert convert_main(["import-tracker", mae_file, "--out", str(out)]) == 2
  err = capsys.readouterr().err
  assert "backbone.patch_embed.proj.weight" in err and "decoder_embed.weight" in err
  assert not out.exists()
  # (b) a tracker of another width (ViT-L-like patch embedding) against the micro config
  net = torch.load(path, weights_only=True)["net"]
  net["backbone.patch_embed.proj.weight"] = torch.zeros(1024, 3, 16, 16)
  wide = str(tmp_path / "wide.pth.tar")
  torch.save({"net": net}, wide)
  out = tmp_path / "out_b"
  assert convert_main(["import-tracker", wide, "--out", str(out), "--config",
                       str(config_file)]) == 2
  err = capsys.readouterr().err
  assert "backbone.patch_embed.proj.weight" in err and "(1024, 3, 16, 16)" in err
  assert not out.exists()


def test_init_from_pretrain(model, tmp_path):
  pre = configlib.pretrain_defaults()
  pre.model.variant, pre.model.img_size = f"micro/{PATCH}", PRETRAIN_IMG
  pre.model.decoder_embed_dim, pre.model.decoder_depth, pre.model.decoder_num_heads = 32, 1, 4
  pre.model.dtype, pre.asad.impl = "float32", "reference"
  mae_model = mae.DropMAE.from_config(pre)
  shapes = jax.eval_shape(lambda f: mae_model.init(
      {k: jax.random.key(0) for k in ("params", "masking", "asad")}, f),
      jax.ShapeDtypeStruct((1, 2, PRETRAIN_IMG, PRETRAIN_IMG, 3), jnp.float32))
  mae_params = randomize({"params": shapes["params"]}, seed=7)["params"]
  grid = PRETRAIN_IMG // PATCH
  state = layout.params_to_state_dict(mae_params, grid=grid)
  state["pos_embed"] = np.random.default_rng(3).normal(size=state["pos_embed"].shape).astype(
      np.float32)  # a table that is not our sin-cos, to see it used
  pth = str(tmp_path / "dropmae.pth")
  io.write_torch_state_dict(state, pth)
  fresh = randomize(ostrack.variable_shapes(model), seed=11)

  # (b) a released-layout .pth: decoder dropped, mask_token unexpected, tables resized
  new, report = pretrain_init.init_from_pretrain(fresh, pth)
  text = "\n".join(report)
  assert "unexpected mask_token" in text and "decoder_embed" not in text
  bb = new["params"]["backbone"]
  assert "decoder_embed" not in bb
  table = state["pos_embed"][:, 1:]
  torch_table = torch.from_numpy(table).transpose(1, 2).reshape(1, WIDTH, grid, grid)
  for name, side in (("pos_embed_z", TEMPLATE // PATCH), ("pos_embed_x", SEARCH // PATCH)):
    np.testing.assert_allclose(bb[name], posemb.resize_bicubic(table, side), atol=1e-6)
    expected = F.interpolate(torch_table, size=(side, side), mode="bicubic", align_corners=False)
    np.testing.assert_allclose(bb[name], expected.flatten(2).transpose(1, 2).numpy(), atol=1e-5)
  np.testing.assert_array_equal(bb["pos_embed"], state["pos_embed"])
  np.testing.assert_array_equal(bb["blocks_1"]["attn"]["qkv"]["kernel"],
                                state["blocks.1.attn.qkv.weight"].T)
  np.testing.assert_array_equal(bb["blocks_5"]["attn"]["qkv"]["kernel"],
                                fresh["params"]["backbone"]["blocks_5"]["attn"]["qkv"]["kernel"])
  assert "missing  backbone.blocks.5.attn.qkv.weight" in text
  np.testing.assert_array_equal(bb["temporal_pos_embed_z"], state["temporal_pos_embed_z"])
  np.testing.assert_array_equal(bb["cls_token"], fresh["params"]["backbone"]["cls_token"])
  for a, b in zip(jax.tree.leaves(new["params"]["box_head"]),
                  jax.tree.leaves(fresh["params"]["box_head"])):
    np.testing.assert_array_equal(a, b)

  # (a) our pre-training params tree: its fixed sin-cos table is what gets resized
  new_a, _ = pretrain_init.init_from_pretrain(fresh, mae_params, pretrain_grid=grid)
  sincos = vit.sincos_2d(WIDTH, grid)
  np.testing.assert_allclose(new_a["params"]["backbone"]["pos_embed_x"][0],
                             posemb.resize_bicubic(sincos, SEARCH // PATCH), atol=1e-6)
  np.testing.assert_array_equal(new_a["params"]["backbone"]["blocks_1"]["mlp"]["fc1"]["kernel"],
                                mae_params["blocks_1"]["mlp"]["fc1"]["kernel"])
  # a pre-training workdir layout (imported DIR)
  io.save_params(str(tmp_path / "pre"), mae_params, pre)
  new_c, _ = pretrain_init.init_from_pretrain(fresh, str(tmp_path / "pre"))
  np.testing.assert_allclose(new_c["params"]["backbone"]["pos_embed_z"],
                             new_a["params"]["backbone"]["pos_embed_z"])
