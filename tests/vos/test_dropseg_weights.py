"""DropSeg weights (vos/dropseg/layout.py, weights.py, pretrain_init.py): `convert
export-segmenter` / `import-segmenter` round trips through the released network rebuilt in torch
(test_dropseg_model.RefDropSeg), strict both ways with one-line errors naming the file and the
key, wrong-model checkpoints refused both ways with nothing written, and the released rule for
starting from DropMAE weights.

All at the demo's micro sizes (configs/dropseg_demo.py: same key layout as the released model);
the released ViT-B's key set is checked in test_dropseg_model.py.
"""
import collections
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dropmae_jax.config import defaults as configlib
from dropmae_jax.config import loading as config_loading
from dropmae_jax.convert import io
from dropmae_jax.convert import layout
from dropmae_jax.convert.__main__ import main as convert_main
from dropmae_jax.models import mae
from dropmae_jax.vos.dropseg import layout as seg_layout
from dropmae_jax.vos.dropseg import model as model_lib
from dropmae_jax.vos.dropseg import pretrain_init
from dropmae_jax.vos.dropseg import weights

from test_dropseg_model import RefDropSeg, randomize  # noqa: I100

DEMO_REF = dict(dim=64, depth=2, heads=4, patch=16, img_size=128, legacy_img=112,
                num_classes=1000, fpn1=16, fpn2=32, compress=32, decoder=16)


@pytest.fixture(scope="module")
def demo():
  config = config_loading.load_config("dropseg_demo")
  model = model_lib.DropSeg.from_config(config)
  return config, model, randomize(model_lib.variable_shapes(model), seed=5)


@pytest.fixture(scope="module")
def exported(demo, tmp_path_factory):
  """The demo's random variables saved as a segmenter DIR and exported through the CLI."""
  config, _, variables = demo
  d = tmp_path_factory.mktemp("segmenter")
  weights.save_segmenter(str(d / "dir"), variables, config)
  out = str(d / "dropseg.pth")
  assert convert_main(["export-segmenter", str(d / "dir"), "--out", out]) == 0
  return out


def assert_same_variables(a, b):
  for collection in seg_layout.COLLECTIONS:
    fa, fb = layout.flatten(a[collection]), layout.flatten(b[collection])
    assert set(fa) == set(fb), collection
    for k in fa:
      np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=str(k))


def one_line_error(capsys, path_in_message):
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1, err
  assert err.startswith(f"error: {path_in_message}: ") and err.strip().endswith(
      "(nothing was written)"), err
  return err


@pytest.mark.timeout(60)
def test_export_loads_strict_into_the_released_network_and_imports_back(demo, exported, tmp_path,
                                                                        capsys):
  config, model, variables = demo
  state = torch.load(exported, map_location="cpu", weights_only=True)
  assert isinstance(state, collections.OrderedDict)   # a bare state dict, as released
  ref = RefDropSeg(**DEMO_REF)
  assert list(state) == list(ref.state_dict())          # 70 keys, the released order
  assert len(state) == 70 and all(v.dtype == torch.float32 for v in state.values())
  ref.load_state_dict(state, strict=True)
  assert not ref.pos_embed_two_frame.requires_grad

  capsys.readouterr()
  out = tmp_path / "imported"
  assert convert_main(["import-segmenter", exported, "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert printed.startswith("segmenter micro/16 depth 2 at 128px (pre-trained at 112px), "
                            "pyramid 32/16, decoder 32/16, head 1000\n"), printed
  assert "heads 4: the micro size's" in printed and "loaded     70 tensors" in printed
  back, back_config = weights.load_segmenter(str(out))
  assert_same_variables(variables, back)
  assert weights.shape_fields(back_config.model) == weights.shape_fields(config.model)
  # export again: the same tensors
  again = str(tmp_path / "again.pth")
  assert convert_main(["export-segmenter", str(out), "--out", again]) == 0
  state2 = torch.load(again, weights_only=True)
  assert list(state2) == list(state)
  assert all(torch.equal(state[k], state2[k]) for k in state)
  # a named config whose sizes are the file's is accepted; another size is one line
  assert convert_main(["import-segmenter", exported, "--out", str(tmp_path / "named"),
                       "--config", "dropseg_demo"]) == 0
  capsys.readouterr()
  assert convert_main(["import-segmenter", exported, "--out", str(tmp_path / "vitb"),
                       "--config", "dropseg_davis_ytvos"]) == 2
  err = one_line_error(capsys, exported)
  assert "holds a micro/16 depth 2 at 128px" in err and "describes B/16 depth 12 at 384px" in err
  assert not (tmp_path / "vitb").exists()


@pytest.mark.timeout(60)
def test_import_is_strict_with_one_line_errors(exported, tmp_path, capsys):
  state = torch.load(exported, weights_only=True)

  def attempt(name, edit):
    changed = collections.OrderedDict(state)
    edit(changed)
    path = str(tmp_path / f"{name}.pth")
    torch.save(changed, path)
    capsys.readouterr()
    assert convert_main(["import-segmenter", path, "--out", str(tmp_path / f"out_{name}")]) == 2
    assert not (tmp_path / f"out_{name}").exists()
    return one_line_error(capsys, path)

  err = attempt("shape", lambda s: s.__setitem__("stcn_decoder.pred.weight",
                                                 torch.zeros(2, 16, 3, 3)))
  assert ("stcn_decoder.pred.weight: file (2, 16, 3, 3), model expects (1, 16, 3, 3)" in err
          and "does not fit the sizes read from it" in err), err
  err = attempt("unknown", lambda s: s.__setitem__("stcn_decoder.extra.weight", torch.zeros(3)))
  assert "unexpected key stcn_decoder.extra.weight" in err, err
  err = attempt("missing", lambda s: s.pop("fc_norm.bias"))
  assert "missing key fc_norm.bias" in err, err
  err = attempt("blocks", lambda s: s.pop("blocks.1.norm1.weight"))
  assert "missing key blocks.1.norm1.weight" in err, err
  err = attempt("table", lambda s: s.__setitem__("pos_embed_two_frame", torch.zeros(1, 100, 64)))
  assert "pos_embed_two_frame: 99 position slots are not 2 square grid(s)" in err, err


@pytest.mark.timeout(60)
def test_wrong_model_checkpoints_are_refused_both_ways(exported, tmp_path, capsys):
  # a DropTrack tracker given to import-segmenter
  tracker = str(tmp_path / "droptrack.pth.tar")
  torch.save({"net": {"backbone.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16),
                      "backbone.pos_embed_x": torch.zeros(1, 4, 8),
                      "box_head.conv5_ctr.weight": torch.zeros(1, 2, 1, 1)}}, tracker)
  assert convert_main(["import-segmenter", tracker, "--out", str(tmp_path / "a")]) == 2
  err = one_line_error(capsys, tracker)
  assert "not a DropSeg segmenter checkpoint: it looks like a DropTrack / OSTrack tracker" in err
  assert "import-tracker" in err
  # a DropMAE pre-training file given to import-segmenter
  dropmae = str(tmp_path / "dropmae.pth")
  io.write_torch_state_dict({"patch_embed.proj.weight": np.zeros((8, 3, 16, 16)),
                             "blocks.0.norm1.weight": np.zeros(8),
                             "decoder_embed.weight": np.zeros((4, 8)),
                             "mask_token": np.zeros((1, 1, 4))}, dropmae)
  assert convert_main(["import-segmenter", dropmae, "--out", str(tmp_path / "b")]) == 2
  err = one_line_error(capsys, dropmae)
  assert "it looks like a DropMAE / MAE pre-training state dict" in err
  # a segmenter given to import-tracker
  assert convert_main(["import-tracker", exported, "--out", str(tmp_path / "c")]) == 2
  err = one_line_error(capsys, exported)
  assert "not an OSTrack/DropTrack checkpoint" in err and "looks like a DropSeg segmenter" in err
  assert "import-segmenter" in err
  assert sorted(os.listdir(tmp_path)) == ["dropmae.pth", "droptrack.pth.tar"]


@pytest.mark.timeout(60)
def test_outputs_are_kept_without_overwrite(demo, exported, tmp_path, capsys):
  config, _, variables = demo
  out = tmp_path / "x.pth"
  weights.save_segmenter(str(tmp_path / "dir"), variables, config)
  assert convert_main(["export-segmenter", str(tmp_path / "dir"), "--out", str(out)]) == 0
  before = out.read_bytes()
  capsys.readouterr()
  assert convert_main(["export-segmenter", str(tmp_path / "dir"), "--out", str(out)]) == 2
  assert capsys.readouterr().err.strip() == (f"error: --out {out}: already exists; pass "
                                             "--overwrite to replace it (nothing was written)")
  assert out.read_bytes() == before
  assert convert_main(["export-segmenter", str(tmp_path / "dir"), "--out", str(out),
                       "--overwrite"]) == 0
  imported = tmp_path / "imported"
  assert convert_main(["import-segmenter", exported, "--out", str(imported)]) == 0
  capsys.readouterr()
  assert convert_main(["import-segmenter", exported, "--out", str(imported)]) == 2
  assert "already holds an earlier output (config.json, segmenter)" in capsys.readouterr().err
  assert convert_main(["import-segmenter", exported, "--out", str(imported), "--overwrite"]) == 0
  assert convert_main(["export-segmenter", str(tmp_path / "nothing"), "--out",
                       str(tmp_path / "y.pth")]) == 2
  assert "nothing: no such folder" in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path)) == ["dir", "imported", "x.pth"]   # no leftovers


@pytest.mark.timeout(120)
def test_init_from_pretrain_follows_the_released_rule(demo, exported, tmp_path):
  config, model, _ = demo
  fresh = model_lib.init_variables(model, seed=0)     # the real initialisation, compiled once
  # the released inits of what DropMAE does not provide: torch defaults for DropSeg's modules
  bound = 1 / np.sqrt(1 * 16 * 16)
  mask_kernel = fresh["params"]["mask_patch_embed"]["proj"]["kernel"]
  assert np.abs(mask_kernel).max() <= bound and np.abs(mask_kernel).max() > 0.9 * bound
  np.testing.assert_array_equal(fresh["frozen"]["fc_norm"]["scale"], 1)
  assert 0.015 < fresh["frozen"]["head"]["kernel"].std() < 0.025
  np.testing.assert_allclose(fresh["frozen"]["pos_embed_two_frame"][:, 65:],
                             fresh["frozen"]["pos_embed_two_frame"][:, 1:65])

  pre = configlib.pretrain_defaults()
  pre.model.variant, pre.model.img_size = "micro/16", 112
  pre.model.decoder_embed_dim, pre.model.decoder_depth, pre.model.decoder_num_heads = 32, 1, 4
  pre.model.dtype, pre.asad.impl = "float32", "reference"
  mae_model = mae.DropMAE.from_config(pre)
  shapes = jax.eval_shape(lambda f: mae_model.init(
      {k: jax.random.key(0) for k in ("params", "masking", "asad")}, f),
      jax.ShapeDtypeStruct((1, 2, 112, 112, 3), jnp.float32))
  mae_params = randomize({"params": shapes["params"]}, seed=7)["params"]
  state = layout.params_to_state_dict(mae_params, grid=7)
  state["pos_embed"] = np.random.default_rng(3).normal(size=state["pos_embed"].shape).astype(
      np.float32)   # not our sin-cos table, to see it used
  pth = str(tmp_path / "dropmae.pth")
  io.write_torch_state_dict(state, pth)

  new, report = pretrain_init.init_from_pretrain(fresh, pth)
  text = "\n".join(report)
  assert "unexpected mask_token" in text and "decoder_embed" not in text
  assert "missing  " in text and "stcn_decoder" in text and "mask_patch_embed" in text
  params, frozen = new["params"], new["frozen"]
  np.testing.assert_array_equal(params["blocks_1"]["attn"]["qkv"]["kernel"],
                                state["blocks.1.attn.qkv.weight"].T)
  np.testing.assert_array_equal(params["temporal_pos_embed_z"], state["temporal_pos_embed_z"])
  np.testing.assert_array_equal(frozen["pos_embed"], state["pos_embed"])
  for name in ("mask_patch_embed", "fpn1_0", "stcn_decoder"):
    for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(fresh["params"][name])):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(frozen["cls_token"], fresh["frozen"]["cls_token"])
  np.testing.assert_array_equal(frozen["head"]["kernel"], fresh["frozen"]["head"]["kernel"])
  # the frozen tables: [cls ; P ; P] and [cls ; P ; P ; P], P torch's bicubic 7x7 -> 8x8
  table = torch.from_numpy(state["pos_embed"][:, 1:]).reshape(1, 7, 7, 64).permute(0, 3, 1, 2)
  p = F.interpolate(table, size=(8, 8), mode="bicubic", align_corners=False)
  p = p.permute(0, 2, 3, 1).flatten(1, 2).numpy()
  cls = state["pos_embed"][:, :1]
  np.testing.assert_allclose(frozen["pos_embed_two_frame"], np.concatenate([cls, p, p], 1),
                             atol=1e-5)
  np.testing.assert_allclose(frozen["pos_embed_three_frame"],
                             np.concatenate([cls, p, p, p], 1), atol=1e-5)

  # our pre-training params tree: its fixed sin-cos table is the one resized
  new_a, _ = pretrain_init.init_from_pretrain(fresh, mae_params, pretrain_grid=7)
  sincos = torch.from_numpy(model_lib.vit.sincos_2d(64, 7)).reshape(1, 7, 7, 64).permute(0, 3, 1, 2)
  p = F.interpolate(sincos, size=(8, 8), mode="bicubic", align_corners=False)
  np.testing.assert_allclose(new_a["frozen"]["pos_embed_two_frame"][0, 1:65],
                             p.permute(0, 2, 3, 1).reshape(64, 64).numpy(), atol=1e-5)
  # a segmenter or a tracker is not DropMAE weights: one line naming the file
  with pytest.raises(layout.LayoutError, match=r"dropseg.pth: not DropMAE pre-training weights: "
                     r"it looks like a DropSeg segmenter"):
    pretrain_init.init_from_pretrain(fresh, exported)
  tracker = {"backbone.patch_embed.proj.weight": np.zeros((8, 3, 16, 16)),
             "box_head.conv5_ctr.weight": np.zeros((1, 2, 1, 1))}
  with pytest.raises(layout.LayoutError, match="looks like a DropTrack / OSTrack tracker"):
    pretrain_init.init_from_pretrain(fresh, tracker)
