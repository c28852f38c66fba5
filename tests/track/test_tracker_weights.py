"""`convert export-tracker` / `import-tracker` (track/weights.py): export -> import -> track round
trips for the demo tracker and ViT-B without --config, sizes read from the tensors, the released
key order, num_batches_tracked kept, and outputs that are never overwritten by accident."""
import json
import os

import numpy as np
import pytest
import torch
from timm.layers import PatchEmbed

from dropmae_jax.config import loading as config_loading
from dropmae_jax.convert import io
from dropmae_jax.convert import layout
from dropmae_jax.convert.__main__ import main as convert_main
from dropmae_jax.data import images
from dropmae_jax.track import datasets
from dropmae_jax.track import layout as tracker_layout
from dropmae_jax.track import ostrack
from dropmae_jax.track import synthetic
from dropmae_jax.track import tracker as tracker_lib
from dropmae_jax.track import weights

from test_ostrack import (PATCH, RefBlock, RefHead, RefOSTrack, randomize,  # noqa: I100
                          small_config)


# --------------------------------------------------------------------------- released key order


class ReleasedRegistrationBackbone(torch.nn.Module):
  """VisionTransformerCE's parameters registered in the released sequence (jimmy-dq/DropTrack
  lib/models/ostrack/): BaseBackbone.__init__ sets pos_embed / pos_embed_z / pos_embed_x to None
  (plain attributes); VisionTransformer.__init__ (vit.py, run by VisionTransformerCE's
  `super().__init__()`) registers patch_embed, cls_token, pos_embed, pos_drop, blocks, norm,
  temporal_pos_embed_x, temporal_pos_embed_z; VisionTransformerCE.__init__ assigns patch_embed,
  cls_token, pos_embed, blocks and norm again (their places stay); `finetune_track`
  (base_backbone.py) registers pos_embed_z and pos_embed_x."""

  def __init__(self, dim, depth, heads, fz, fx, legacy_grid):
    super().__init__()
    self.pos_embed = None
    self.pos_embed_z = None
    self.pos_embed_x = None

    def vit_init():
      self.patch_embed = PatchEmbed(None, PATCH, 3, dim, strict_img_size=False)
      self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, dim))
      self.dist_token = None
      self.pos_embed = torch.nn.Parameter(torch.zeros(1, 1 + legacy_grid ** 2, dim))
      self.pos_drop = torch.nn.Dropout(0.0)
      self.blocks = torch.nn.Sequential(*[RefBlock(dim, heads, 4 * dim) for _ in range(depth)])
      self.norm = torch.nn.LayerNorm(dim, eps=1e-6)

    vit_init()
    self.temporal_pos_embed_x = torch.nn.Parameter(torch.randn(1, 1, dim))
    self.temporal_pos_embed_z = torch.nn.Parameter(torch.randn(1, 1, dim))
    vit_init()   # VisionTransformerCE.__init__
    self.pos_embed_z = torch.nn.Parameter(torch.zeros(1, fz * fz, dim))
    self.pos_embed_x = torch.nn.Parameter(torch.zeros(1, fx * fx, dim))


class ReleasedRegistrationOSTrack(torch.nn.Module):
  """OSTrack(backbone, box_head) (lib/models/ostrack/ostrack.py) with the CENTER head
  (lib/models/layers/head.py: ctr, offset, size towers in that order; test_ostrack's RefHead)."""

  def __init__(self, dim, depth, heads, template, search, legacy_img, head_ch):
    super().__init__()
    self.backbone = ReleasedRegistrationBackbone(dim, depth, heads, template // PATCH,
                                                 search // PATCH, legacy_img // PATCH)
    self.box_head = RefHead(dim, head_ch)


@pytest.mark.timeout(120)
def test_export_lists_keys_in_the_released_order(tmp_path):
  c = small_config()
  m = c.model
  model = ostrack.OSTrackCE.from_config(c)
  variables = randomize(ostrack.variable_shapes(model), seed=3)
  released = ReleasedRegistrationOSTrack(64, m.depth, 4, m.template_size, m.search_size,
                                         m.pretrain_img_size, m.head_channels)
  expected = list(released.state_dict().keys())
  assert list(tracker_layout.variables_to_state_dict(variables)) == expected
  io.save_tracker(str(tmp_path / "dir"), variables, c)
  out = str(tmp_path / "net.pth.tar")
  assert convert_main(["export-tracker", str(tmp_path / "dir"), "--out", out]) == 0
  net = torch.load(out, weights_only=True)["net"]
  assert list(net.keys()) == expected
  released.load_state_dict(net, strict=True)
  # test_ostrack's reference network has the same keys (its own registration order differs:
  # it registers the temporal tables after pos_embed_z/x), and loads the export strict.
  ref = RefOSTrack()
  assert set(ref.state_dict()) == set(expected)
  ref.load_state_dict(net, strict=True)
  # Sorting by the released order is a total order on the real key set, whatever it starts from.
  shuffled = list(np.random.default_rng(0).permutation(expected))
  assert sorted(shuffled, key=tracker_layout.released_order) == expected


# --------------------------------------------------------------------------- num_batches_tracked


@pytest.mark.timeout(120)
def test_num_batches_tracked_survives_import_and_export(tmp_path, capsys):
  c = small_config()
  model = ostrack.OSTrackCE.from_config(c)
  variables = randomize(ostrack.variable_shapes(model), seed=4)
  state = tracker_layout.variables_to_state_dict(variables)
  counts = {k: 46800 + i for i, k in enumerate(k for k in state if k.endswith("num_batches_tracked"))}
  assert len(counts) == 12
  net = {k: torch.from_numpy(np.array(counts.get(k, v))) for k, v in state.items()}
  src = str(tmp_path / "released.pth.tar")
  torch.save({"net": net, "epoch": 100}, src)
  assert convert_main(["import-tracker", src, "--out", str(tmp_path / "imp")]) == 0
  assert "\nnot imported: epoch\n" in capsys.readouterr().out
  assert io.load_num_batches_tracked(str(tmp_path / "imp")) == counts
  out = str(tmp_path / "again.pth.tar")
  assert convert_main(["export-tracker", str(tmp_path / "imp"), "--out", out]) == 0
  assert "num_batches_tracked as imported" in capsys.readouterr().out
  again = torch.load(out, weights_only=True)["net"]
  for k, n in counts.items():
    assert again[k].dtype == torch.int64 and int(again[k]) == n, k
  # Weights that were never imported (fresh, fine-tuned) carry no counters: 0.
  io.save_tracker(str(tmp_path / "fresh"), variables, c)
  assert io.load_num_batches_tracked(str(tmp_path / "fresh")) == {}
  assert convert_main(["export-tracker", str(tmp_path / "fresh"), "--out",
                       str(tmp_path / "fresh.pth.tar")]) == 0
  assert "num_batches_tracked 0" in capsys.readouterr().out
  fresh = torch.load(str(tmp_path / "fresh.pth.tar"), weights_only=True)["net"]
  assert all(int(fresh[k]) == 0 for k in counts)
  # Re-saving a folder without counters drops the stale file (the counters went with the weights).
  io.save_tracker(str(tmp_path / "imp"), variables, c)
  assert io.load_num_batches_tracked(str(tmp_path / "imp")) == {}


# --------------------------------------------------------------------------- round trips


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
  """One synthetic GOT-10k val sequence (16 frames, a moving textured object)."""
  root = str(tmp_path_factory.mktemp("got10k") / "data")
  synthetic.make_dataset(root, train=0, val=1, frames=16, size=(160, 120), seed=5, progress=False)
  return datasets.load_dataset("got10k", root, "val")[0]


def assert_same_variables(a, b):
  for coll in ("params", "batch_stats"):
    fa, fb = layout.flatten(a[coll]), layout.flatten(b[coll])
    assert set(fa) == set(fb), coll
    for k in fa:
      np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=str(k))


def track_frames(config, variables, sequence, frames):
  model = ostrack.OSTrackCE.from_config(config)
  tracker = tracker_lib.Tracker(model, variables, tracker_lib.TrackerSettings.from_config(config))
  tracker.initialize(images.read_rgb(sequence.frames[0]), sequence.ground_truth[0])
  return np.stack([tracker.track(images.read_rgb(p)) for p in sequence.frames[1:frames]])


def round_trip(config_name, tmp_path, capsys, seed):
  """Random weights of the named config -> tracker DIR -> export-tracker -> import-tracker
  without --config. Returns (config, variables, imported config, imported variables, printed)."""
  config = config_loading.load_config(config_name)
  model = ostrack.OSTrackCE.from_config(config)
  variables = randomize(ostrack.variable_shapes(model), seed=seed)
  io.save_tracker(str(tmp_path / "ours"), variables, config)
  exported = str(tmp_path / "exported.pth.tar")
  assert convert_main(["export-tracker", str(tmp_path / "ours"), "--out", exported]) == 0
  capsys.readouterr()
  assert convert_main(["import-tracker", exported, "--out", str(tmp_path / "imported")]) == 0
  printed = capsys.readouterr().out
  back, back_config = io.load_tracker(str(tmp_path / "imported"))
  return config, variables, back_config, back, printed


@pytest.mark.timeout(180)
def test_demo_tracker_round_trip_export_import_track(sequence, tmp_path, capsys):
  config, variables, back_config, back, printed = round_trip("droptrack_demo", tmp_path, capsys, 6)
  assert "config: the one it was exported with" in printed
  assert "not imported" not in printed   # the config entry is read, nothing else is there
  assert_same_variables(variables, back)
  assert back_config.to_dict() == json.loads(config.to_json_best_effort())
  ours = track_frames(config, variables, sequence, 16)
  theirs = track_frames(back_config, back, sequence, 16)
  np.testing.assert_array_equal(ours, theirs)
  assert np.abs(np.diff(ours[:, :2], axis=0)).max() > 0   # the boxes move: a real comparison

  # A file without our config entry (as a released one): every size from the tensors, the CE
  # layer from the defaults (3, 6, 9) cut to the demo's 2 blocks, which is the demo's (1,).
  net = torch.load(str(tmp_path / "exported.pth.tar"), weights_only=True)["net"]
  bare = str(tmp_path / "bare.pth.tar")
  torch.save({"net": net}, bare)
  assert convert_main(["import-tracker", bare, "--out", str(tmp_path / "from_bare")]) == 0
  printed = capsys.readouterr().out
  assert "not stored in the file" in printed and "heads 4" in printed
  bare_variables, bare_config = io.load_tracker(str(tmp_path / "from_bare"))
  for field in weights.SHAPE_FIELDS + ("ce_loc",):
    assert tuple(np.atleast_1d(bare_config.model[field])) == tuple(
        np.atleast_1d(config.model[field])), field
  assert_same_variables(variables, bare_variables)
  np.testing.assert_array_equal(track_frames(config, bare_variables, sequence, 16), ours)

  # Config names are accepted, and a config of another size is one line naming what the file holds.
  assert convert_main(["import-tracker", bare, "--out", str(tmp_path / "named"),
                       "--config", "droptrack_demo"]) == 0
  capsys.readouterr()
  assert convert_main(["import-tracker", bare, "--out", str(tmp_path / "vitb"),
                       "--config", "droptrack_got10k"]) == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1, err
  assert err.startswith(f"error: {bare}: holds a micro/16 depth 2 template 64px search 128px "
                        "(pre-trained at 112px), head 64 tracker but --config droptrack_got10k "
                        "describes B/16 depth 12 template 192px"), err
  assert not (tmp_path / "vitb").exists()


@pytest.mark.timeout(300)
def test_vit_b_tracker_round_trip_export_import_track(sequence, tmp_path, capsys):
  """The released size (droptrack_got10k: ViT-B/16, 192 / 384 px, CE (3, 6, 9)): ~40 s on CPU."""
  config, variables, back_config, back, printed = round_trip("droptrack_got10k", tmp_path,
                                                             capsys, 7)
  assert "tracker B/16 depth 12 template 192px search 384px" in printed
  assert_same_variables(variables, back)
  assert back_config.to_dict() == json.loads(config.to_json_best_effort())
  net = torch.load(str(tmp_path / "exported.pth.tar"), weights_only=True)["net"]
  assert len(net) == 244
  inferred, _ = tracker_layout.infer_model({k: v.numpy() for k, v in net.items()})
  assert inferred == {"variant": "B/16", "depth": -1, "template_size": 192, "search_size": 384,
                      "pretrain_img_size": 224, "head_channels": 256}
  ours = track_frames(config, variables, sequence, 3)
  np.testing.assert_array_equal(ours, track_frames(back_config, back, sequence, 3))


# --------------------------------------------------------------------------- outputs kept


@pytest.mark.timeout(120)
def test_tracker_outputs_are_kept_without_overwrite(tmp_path, capsys):
  c = small_config()
  variables = randomize(ostrack.variable_shapes(ostrack.OSTrackCE.from_config(c)), seed=8)
  io.save_tracker(str(tmp_path / "dir"), variables, c)
  out = tmp_path / "net.pth.tar"
  assert convert_main(["export-tracker", str(tmp_path / "dir"), "--out", str(out)]) == 0
  before = out.read_bytes()
  assert convert_main(["export-tracker", str(tmp_path / "dir"), "--out", str(out)]) == 2
  err = capsys.readouterr().err
  assert err.strip() == (f"error: --out {out}: already exists; pass --overwrite to replace it "
                         "(nothing was written)")
  assert out.read_bytes() == before
  assert convert_main(["export-tracker", str(tmp_path / "dir"), "--out", str(out),
                       "--overwrite"]) == 0
  imported = tmp_path / "imported"
  assert convert_main(["import-tracker", str(out), "--out", str(imported)]) == 0
  config_text = (imported / "config.json").read_text()
  (imported / "config.json").write_text(config_text.replace("micro/16", "marker"))
  assert convert_main(["import-tracker", str(out), "--out", str(imported)]) == 2
  assert "already holds an earlier output (config.json, num_batches_tracked.json, tracker)" \
      in capsys.readouterr().err
  assert "marker" in (imported / "config.json").read_text()   # kept
  assert convert_main(["import-tracker", str(out), "--out", str(imported), "--overwrite"]) == 0
  assert (imported / "config.json").read_text() == config_text
  assert sorted(os.listdir(tmp_path)) == ["dir", "imported", "net.pth.tar"]   # no leftovers
