"""PyTorch interop against the released architecture rebuilt here from timm blocks (not our code)."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block, VisionTransformer

from dropmae_jax.config import defaults as configlib
from dropmae_jax.convert import io
from dropmae_jax.convert import layout
from dropmae_jax.convert import posemb
from dropmae_jax.convert.__main__ import fresh_params, main as convert_main
from dropmae_jax.models import mae
from dropmae_jax.models import masking
from test_model import mae_sincos_table

IMG, PATCH, WIDTH, DEPTH, HEADS = 64, 16, 64, 2, 4
DEC, DEC_DEPTH, DEC_HEADS = 32, 2, 4
GRID = IMG // PATCH
N = GRID * GRID
torch.manual_seed(0)


class ReleasedDropMAE(torch.nn.Module):
  """models_mae.MaskedAutoencoderViT (DropMAE) restated with timm's Block and PatchEmbed."""

  def __init__(self):
    super().__init__()
    norm = functools.partial(torch.nn.LayerNorm, eps=1e-6)
    self.patch_embed = PatchEmbed(IMG, PATCH, 3, WIDTH)
    self.pos_embed = torch.nn.Parameter(torch.zeros(1, N + 1, WIDTH), requires_grad=False)
    self.temporal_pos_embed_x = torch.nn.Parameter(torch.randn(1, 1, WIDTH))
    self.temporal_pos_embed_z = torch.nn.Parameter(torch.randn(1, 1, WIDTH))
    self.blocks = torch.nn.ModuleList([Block(WIDTH, HEADS, 4.0, qkv_bias=True, norm_layer=norm)
                                       for _ in range(DEPTH)])
    self.norm = norm(WIDTH)
    self.decoder_embed = torch.nn.Linear(WIDTH, DEC)
    self.mask_token = torch.nn.Parameter(torch.randn(1, 1, DEC) * 0.02)
    self.decoder_pos_embed = torch.nn.Parameter(torch.zeros(1, N + 1, DEC), requires_grad=False)
    self.decoder_temporal_pos_embed_x = torch.nn.Parameter(torch.randn(1, 1, DEC))
    self.decoder_temporal_pos_embed_z = torch.nn.Parameter(torch.randn(1, 1, DEC))
    self.decoder_blocks = torch.nn.ModuleList([Block(DEC, DEC_HEADS, 4.0, qkv_bias=True,
                                                     norm_layer=norm) for _ in range(DEC_DEPTH)])
    self.decoder_norm = norm(DEC)
    self.decoder_pred = torch.nn.Linear(DEC, PATCH * PATCH * 3)
    cls = np.zeros((1, WIDTH))
    self.pos_embed.data.copy_(torch.from_numpy(np.concatenate([cls, mae_sincos_table(WIDTH, GRID)]))[None])
    self.decoder_pos_embed.data.copy_(torch.from_numpy(
        np.concatenate([np.zeros((1, DEC)), mae_sincos_table(DEC, GRID)]))[None])

  def forward(self, img_x, img_z, ids_shuffle, len_keep):
    x = self.patch_embed(img_x) + self.temporal_pos_embed_x + self.pos_embed[:, 1:]
    z = self.patch_embed(img_z) + self.temporal_pos_embed_z + self.pos_embed[:, 1:]
    tokens = torch.cat([x, z], dim=1)
    b, length, d = tokens.shape
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    keep = ids_shuffle[:, :len_keep]
    h = torch.gather(tokens, 1, keep[..., None].repeat(1, 1, d))
    for blk in self.blocks:
      h = blk(h)
    latent = self.norm(h)
    y = self.decoder_embed(latent)
    y = torch.cat([y, self.mask_token.repeat(b, length - len_keep, 1)], dim=1)
    y = torch.gather(y, 1, ids_restore[..., None].repeat(1, 1, DEC))
    half = length // 2
    y = torch.cat([y[:, :half] + self.decoder_temporal_pos_embed_x + self.decoder_pos_embed[:, 1:],
                   y[:, half:] + self.decoder_temporal_pos_embed_z + self.decoder_pos_embed[:, 1:]],
                  dim=1)
    for blk in self.decoder_blocks:
      y = blk(y)
    pred = self.decoder_pred(self.decoder_norm(y))
    mask = torch.ones(b, length)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    target = torch.cat([self.patchify(img_x), self.patchify(img_z)], dim=1)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** .5
    loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    return latent, pred, loss

  @staticmethod
  def patchify(imgs):
    n, _, hh, ww = imgs.shape
    x = imgs.reshape(n, 3, hh // PATCH, PATCH, ww // PATCH, PATCH)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(n, -1, PATCH * PATCH * 3)


def tiny_config():
  c = configlib.pretrain_defaults()
  c.model.variant, c.model.img_size, c.model.dtype = "micro/16", IMG, "float32"
  c.model.decoder_embed_dim, c.model.decoder_depth, c.model.decoder_num_heads = DEC, DEC_DEPTH, DEC_HEADS
  c.asad.drop_ratio = 0.0
  return c


def randomized(params, seed=0):
  """Every leaf perturbed (LayerNorm and biases included), so no mapping error can hide."""
  leaves, treedef = jax.tree.flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(treedef, [np.asarray(x) + 0.05 * rng.standard_normal(x.shape).astype(np.float32)
                                      for x in leaves])


def inputs(seed=0, batch=2):
  rng = np.random.default_rng(seed)
  frames = rng.standard_normal((batch, 2, IMG, IMG, 3)).astype(np.float32)
  ids_shuffle = np.stack([rng.permutation(2 * N) for _ in range(batch)])
  return frames, ids_shuffle, int(2 * N * 0.25)


def ours(params, frames, ids_shuffle, len_keep):
  model = mae.DropMAE.from_config(tiny_config())
  plan = masking.plan_from_shuffle(jnp.asarray(ids_shuffle), len_keep)
  out = model.apply({"params": params}, jnp.asarray(frames), plan)
  latent = model.apply({"params": params}, jnp.asarray(frames), plan,
                       method=lambda m, f, p: m.encode(m.embed_pair(f), p))
  return np.asarray(latent), np.asarray(out.pred), float(mae.reconstruction_loss(frames, out, PATCH))


def theirs(model, frames, ids_shuffle, len_keep):
  with torch.no_grad():
    nchw = torch.from_numpy(frames).permute(0, 1, 4, 2, 3)
    latent, pred, loss = model(nchw[:, 0], nchw[:, 1], torch.from_numpy(ids_shuffle), len_keep)
  return latent.numpy(), pred.numpy(), float(loss)


def assert_same_outputs(a, b):
  for x, y, name in zip(a, b, ("encoder features", "decoder prediction", "loss")):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * np.abs(y).max(), err_msg=name)


def test_export_loads_strict_and_matches_torch():
  params = randomized(fresh_params(tiny_config()))
  state = layout.params_to_state_dict(params, grid=GRID)
  model = ReleasedDropMAE()
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  assert all(v.dtype == np.float32 for v in state.values())
  args = inputs()
  assert_same_outputs(ours(params, *args), theirs(model, *args))


def test_import_of_a_torch_state_dict_matches_torch():
  model = ReleasedDropMAE()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "pos_embed" not in name.split(".")[-1] or "temporal" in name:
        p.add_(0.05 * torch.randn_like(p))
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  params, report = layout.state_dict_to_params(state, fresh_params(tiny_config()), grid=GRID)
  assert not [r for r in report if r.startswith(("missing", "unexpected"))], report
  args = inputs(1)
  assert_same_outputs(ours(params, *args), theirs(model, *args))


def test_unmasked_features_match_torch():
  """encode_all (what trackers consume): every token visible, in [x; z] order."""
  params = randomized(fresh_params(tiny_config()), seed=2)
  model = ReleasedDropMAE()
  model.load_state_dict({k: torch.from_numpy(v) for k, v in
                         layout.params_to_state_dict(params, grid=GRID).items()}, strict=True)
  frames, _, _ = inputs(2)
  identity = np.broadcast_to(np.arange(2 * N), (frames.shape[0], 2 * N)).copy()
  expected = theirs(model, frames, identity, 2 * N)[0]
  got = mae.DropMAE.from_config(tiny_config()).apply(
      {"params": params}, jnp.asarray(frames), method="encode_all")
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_round_trip_is_bit_exact():
  params = randomized(fresh_params(tiny_config()), seed=3)
  state = layout.params_to_state_dict(params, grid=GRID)
  back, _ = layout.state_dict_to_params(state, fresh_params(tiny_config()), grid=GRID)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
    np.testing.assert_array_equal(a, b)


def test_droptrack_style_filtered_load_has_no_missing_backbone_key():
  params = randomized(fresh_params(tiny_config()))
  state = layout.params_to_state_dict(params, grid=GRID)
  backbone = VisionTransformer(img_size=IMG, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH,
                               num_heads=HEADS, qkv_bias=True,
                               norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6))
  backbone.temporal_pos_embed_x = torch.nn.Parameter(torch.zeros(1, 1, WIDTH))
  backbone.temporal_pos_embed_z = torch.nn.Parameter(torch.zeros(1, 1, WIDTH))
  filtered = {k: torch.from_numpy(v) for k, v in state.items() if "decoder" not in k}
  missing, unexpected = backbone.load_state_dict(filtered, strict=False)
  assert set(missing) <= {"cls_token", "head.weight", "head.bias"}, missing
  assert set(unexpected) == {"mask_token"}
  np.testing.assert_array_equal(backbone.temporal_pos_embed_z.detach().numpy(),
                                state["temporal_pos_embed_z"])


@pytest.mark.parametrize("size", [12, 24, 8, (30, 54)])
def test_bicubic_resize_matches_torch(size):
  table = np.random.default_rng(0).standard_normal((196, 8))  # float64: compare the maths, not rounding
  hw = (size, size) if isinstance(size, int) else size
  expected = F.interpolate(torch.from_numpy(table).reshape(1, 14, 14, 8).permute(0, 3, 1, 2),
                           size=hw, mode="bicubic", align_corners=False)
  expected = expected.permute(0, 2, 3, 1).reshape(-1, 8).numpy()
  np.testing.assert_allclose(posemb.resize_bicubic(table, size), expected, rtol=1e-10, atol=1e-12)
  assert posemb.resize_bicubic(table[None], size).shape == (1, hw[0] * hw[1], 8)


def test_sincos_regeneration_is_the_mae_table():
  np.testing.assert_allclose(posemb.regenerate_sincos(768, 24), mae_sincos_table(768, 24), atol=1e-6)


def save_pth(path, state):
  torch.save({"model": {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()},
              "epoch": 3}, path)


def test_cli_import_export_round_trip(tmp_path, capsys):
  params = randomized(fresh_params(tiny_config()), seed=5)
  state = layout.params_to_state_dict(params, grid=GRID)
  save_pth(tmp_path / "released.pth", state)
  assert convert_main(["import", str(tmp_path / "released.pth"), "--out", str(tmp_path / "imp")]) == 0
  assert "micro/16 @ 64px" in capsys.readouterr().out  # model inferred from the shapes
  assert convert_main(["export", str(tmp_path / "imp"), "--out", str(tmp_path / "out.pth")]) == 0
  blob = torch.load(tmp_path / "out.pth", weights_only=True)
  assert set(blob) == {"model"} and set(blob["model"]) == set(state)
  for k, v in state.items():
    np.testing.assert_array_equal(blob["model"][k].numpy(), v)
  assert convert_main(["export", str(tmp_path / "imp"), "--out", str(tmp_path / "enc.pth"),
                       "--encoder-only", "--safetensors"]) == 0
  from safetensors.numpy import load_file
  encoder = load_file(tmp_path / "enc.safetensors")
  assert not [k for k in encoder if "decoder" in k or k == "mask_token"]
  assert "blocks.1.mlp.fc2.weight" in encoder


def test_import_of_an_mae_imagenet_checkpoint(tmp_path, capsys):
  """cls token, no frame embeddings, no decoder: reported, and the gaps keep fresh values."""
  params = randomized(fresh_params(tiny_config()), seed=6)
  state = layout.params_to_state_dict(params, grid=GRID, encoder_only=True)
  state = {k: v for k, v in state.items() if "temporal" not in k}
  state["cls_token"] = np.zeros((1, 1, WIDTH), np.float32)
  save_pth(tmp_path / "mae.pth", state)
  config_path = tmp_path / "cfg.py"
  config_path.write_text(
      "from dropmae_jax.config import defaults as configlib\n"
      "def get_config():\n  c = configlib.pretrain_defaults()\n"
      f"  c.model.variant, c.model.img_size = 'micro/16', {IMG}\n"
      f"  c.model.decoder_embed_dim, c.model.decoder_depth, c.model.decoder_num_heads = {DEC}, {DEC_DEPTH}, {DEC_HEADS}\n"
      "  return c\n")
  assert convert_main(["import", str(tmp_path / "mae.pth"), "--out", str(tmp_path / "imp"),
                       "--config", str(config_path)]) == 0
  out = capsys.readouterr().out
  assert "dropped  cls_token" in out
  assert "missing  temporal_pos_embed_x" in out and "missing  decoder_embed.weight" in out
  loaded, _ = io.load_params(str(tmp_path / "imp"))
  np.testing.assert_array_equal(loaded["blocks_0"]["attn"]["qkv"]["kernel"],
                                params["blocks_0"]["attn"]["qkv"]["kernel"])


def test_errors_name_the_problem_and_write_nothing(tmp_path, capsys):
  # A bigger model's file into a small config.
  big = layout.params_to_state_dict(randomized(fresh_params(tiny_config())), grid=GRID)
  big["blocks.0.attn.qkv.weight"] = np.zeros((3 * 96, 96), np.float32)
  save_pth(tmp_path / "big.pth", big)
  assert convert_main(["import", str(tmp_path / "big.pth"), "--out", str(tmp_path / "o1")]) == 2
  err = capsys.readouterr().err
  assert "blocks.0.attn.qkv.weight" in err and "(288, 96)" in err
  # A truncated file.
  good = tmp_path / "good.pth"
  save_pth(good, layout.params_to_state_dict(fresh_params(tiny_config()), grid=GRID))
  (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:2000])
  assert convert_main(["import", str(tmp_path / "cut.pth"), "--out", str(tmp_path / "o2")]) == 2
  assert "cut.pth" in capsys.readouterr().err
  # Some other model's state dict.
  save_pth(tmp_path / "resnet.pth", {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32),
                                     "fc.weight": np.zeros((10, 512), np.float32)})
  assert convert_main(["import", str(tmp_path / "resnet.pth"), "--out", str(tmp_path / "o3")]) == 2
  assert "conv1.weight" in capsys.readouterr().err
  assert not any(os.path.exists(tmp_path / d) for d in ("o1", "o2", "o3"))


def test_pretraining_starts_from_imported_weights(tmp_path):
  from dropmae_jax.pretrain import optim
  from dropmae_jax.pretrain import task as pretrain_task
  from dropmae_jax.train import loop, sharding
  from dropmae_jax.pretrain import step as step_lib
  config = tiny_config()
  params = randomized(fresh_params(config), seed=7)
  io.save_params(str(tmp_path / "imp"), params, config)
  model = mae.DropMAE.from_config(config)
  tx = optim.make_optimizer(config, 10)
  # Under jit: one program to compile (op by op, a first init compiles every op).
  state = jax.jit(lambda: step_lib.create_state(model, tx, 0, jnp.zeros((1, 2, IMG, IMG, 3))))()
  mesh = sharding.make_mesh(config.mesh, devices=jax.devices()[:1])
  shardings = sharding.state_shardings(jax.eval_shape(lambda: state), mesh)
  started = pretrain_task.load_initial_params(state, str(tmp_path / "imp"), shardings)
  for a, b in zip(jax.tree.leaves(started.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  other = tiny_config()
  other.model.decoder_embed_dim = 64
  io.save_params(str(tmp_path / "wide"), fresh_params(other), other)
  with pytest.raises(ValueError, match="init_from"):
    pretrain_task.load_initial_params(state, str(tmp_path / "wide"), shardings)


def test_params_from_a_workdir_pass_their_fingerprint(tmp_path, caplog):
  """config.init_from=WORKDIR and `export WORKDIR` read the newest checkpoint whose arrays pass
  the fingerprint saved with them; a damaged one is named and skipped, not moved (the run that
  owns the folder may still be writing), and none usable is one error naming each step."""
  import glob
  from dropmae_jax.train import checkpoint
  config_json = tiny_config().to_json_best_effort()
  rng = np.random.default_rng(0)
  states = {step: {"params": {"w": rng.normal(size=(256, 64)).astype(np.float32)},
                   "step": np.int32(step)} for step in (1, 2)}
  with checkpoint.Checkpointer(str(tmp_path), keep=3, async_save=False) as ckpt:
    for step, state in states.items():
      ckpt.save(step, state, meta={"counters": {"step": step}, "config": config_json})
  params, config = io.load_params(str(tmp_path))
  np.testing.assert_array_equal(params["w"], states[2]["params"]["w"])
  assert config.model.variant == "micro/16"

  def rot(step):   # bit rot in the step's array data: a flipped bit in every 256 bytes
    files = glob.glob(str(tmp_path / "checkpoints" / str(step) / "state" / "ocdbt.process_0" /
                          "d" / "*"))
    path = max(files, key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    for i in range(0, len(data), 256):
      data[i] ^= 0x10
    open(path, "wb").write(bytes(data))

  rot(2)
  with caplog.at_level("WARNING"):
    params, _ = io.load_params(str(tmp_path))
  np.testing.assert_array_equal(params["w"], states[1]["params"]["w"])
  assert "using checkpoint step 1" in caplog.text and "step 2:" in caplog.text
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
  rot(1)
  with pytest.raises(io.ConvertError, match=r"no checkpoint can be used — step 2: .*; step 1: "):
    io.load_params(str(tmp_path))
