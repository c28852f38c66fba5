"""Zero-shot VOS: DAVIS reader, davis2017-evaluation J&F, DINO label propagation, synthetic set.

References are independent of the code under test: hand-made masks with known answers, OpenCV's
dilate, torch's F.interpolate, DINO's label propagation written with loops in numpy, and
DropMAE.encode_all for the features.
"""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from dropmae_jax.config import defaults as configlib
from dropmae_jax.vos import __main__ as vos_cli
from dropmae_jax.vos import davis
from dropmae_jax.vos import during_training
from dropmae_jax.vos import features
from dropmae_jax.vos import metrics
from dropmae_jax.vos import propagate


# ------------------------------------------------------------------------------------------
# helpers

def write_davis(root, sequences: dict, year: str = "2017", subset: str = "val"):
  """sequences: name -> (frames uint8 (T, H, W, 3), ids uint8 (T, H, W) or None per frame)."""
  os.makedirs(os.path.join(root, "ImageSets", year), exist_ok=True)
  with open(os.path.join(root, "ImageSets", year, f"{subset}.txt"), "w") as f:
    f.writelines(n + "\n" for n in sequences)
  for name, (frames, masks) in sequences.items():
    img_dir = os.path.join(root, "JPEGImages", "480p", name)
    ann_dir = os.path.join(root, "Annotations", "480p", name)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for t, frame in enumerate(frames):
      Image.fromarray(frame).save(os.path.join(img_dir, f"{t:05d}.jpg"), quality=95)
      if masks[t] is not None:
        davis.write_palette_png(os.path.join(ann_dir, f"{t:05d}.png"), masks[t])
  return str(root)


def square_ids(shape, boxes) -> np.ndarray:
  """(H, W) uint8 with id k+1 painted on boxes[k] = (y0, y1, x0, x1)."""
  ids = np.zeros(shape, np.uint8)
  for k, (y0, y1, x0, x1) in enumerate(boxes):
    ids[y0:y1, x0:x1] = k + 1
  return ids


def micro_config(img_size: int = 64) -> ml_collections.ConfigDict:
  c = configlib.pretrain_defaults()
  c.model.variant = "micro/16"
  c.model.img_size = img_size
  c.model.decoder_embed_dim = 32
  c.model.decoder_depth = 1
  c.model.decoder_num_heads = 2
  c.model.dtype = "float32"
  c.asad.impl = "reference"
  return c


@pytest.fixture(scope="module")
def micro_params():
  """Encoder params (no decoder submodules: the features never read them) and the config."""
  config = micro_config()
  return features.fresh_encoder_params(config), config


def test_fresh_encoder_params_are_converts_fresh_params_minus_the_decoder():
  from dropmae_jax.convert.__main__ import fresh_params
  config = micro_config(img_size=32)
  config.asad.drop_ratio = 0.0   # ASAD has no parameters; without it the full init compiles fast
  full, enc = fresh_params(config), features.fresh_encoder_params(config)
  assert set(full) - set(enc) == {"decoder_embed", "decoder_blocks_0", "decoder_norm",
                                  "decoder_pred"}
  jax.tree.map(np.testing.assert_array_equal, enc, {k: full[k] for k in enc})


# ------------------------------------------------------------------------------------------
# palette and reader

def test_palette_is_the_davis_voc_colour_map():
  p = davis.DAVIS_PALETTE
  assert p.shape == (256, 3) and p.dtype == np.uint8
  expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
              5: (128, 0, 128), 6: (0, 128, 128), 7: (128, 128, 128), 8: (64, 0, 0),
              255: (224, 224, 192)}
  for i, rgb in expected.items():
    assert tuple(p[i]) == rgb, i


def test_palette_png_round_trip(tmp_path):
  ids = np.arange(60, dtype=np.uint8).reshape(6, 10) % 5
  path = str(tmp_path / "m.png")
  davis.write_palette_png(path, ids)
  with Image.open(path) as image:
    assert image.mode == "P"
    assert image.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
  np.testing.assert_array_equal(davis.read_ids_png(path), ids)
  assert os.listdir(tmp_path) == ["m.png"]   # no temporary left behind
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
  with pytest.raises(davis.VosDataError, match="rgb.png.*not an indexed mask"):
    davis.read_ids_png(str(tmp_path / "rgb.png"))


def test_reader_objects_void_and_2016_mode(tmp_path):
  frames = np.full((3, 32, 48, 3), 100, np.uint8)
  first = square_ids((32, 48), [(2, 10, 2, 10), (20, 30, 30, 40)])
  first[0, 0] = 255   # void reads as background
  later = first.copy()
  root = write_davis(tmp_path / "d17", {"seq": (frames, [first, later, later])})
  ds = davis.DavisDataset(root)
  masks, k = ds.read_annotations(ds.sequence("seq"))
  assert k == 2 and masks.shape == (3, 32, 48) and masks[0, 0, 0] == 0
  assert set(np.unique(masks)) == {0, 1, 2}
  ds16 = davis.DavisDataset(root, year="2017")
  ds16.year = "2016"   # same files, single-object mode: every non-zero pixel (255 too) is object 1
  masks16, k16 = ds16.read_annotations(ds16.sequence("seq"))
  assert k16 == 1 and masks16[0, 0, 0] == 1 and set(np.unique(masks16)) == {0, 1}


def test_reader_reads_davis2016_path_pair_lists(tmp_path):
  path = tmp_path / "val.txt"
  path.write_text("/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png\n"
                  "/JPEGImages/480p/bear/00001.jpg /Annotations/480p/bear/00001.png\n"
                  "/JPEGImages/480p/cows/00000.jpg /Annotations/480p/cows/00000.png\n")
  assert davis.read_sequence_list(str(path)) == ["bear", "cows"]


def test_reader_bad_input_names_sequence_and_frame(tmp_path):
  frames = np.zeros((3, 32, 48, 3), np.uint8)
  good = square_ids((32, 48), [(2, 10, 2, 10)])
  # Missing frame-0 annotation.
  root = write_davis(tmp_path / "a", {"nofirst": (frames, [None, good, good])})
  ds = davis.DavisDataset(root)
  with pytest.raises(davis.VosDataError, match="sequence nofirst frame 00000: no annotation"):
    ds.reference(ds.sequence("nofirst"))
  # An id in a later frame that frame 0 does not define.
  bad = square_ids((32, 48), [(2, 10, 2, 10), (12, 20, 12, 20), (22, 30, 22, 30)])
  root = write_davis(tmp_path / "b", {"newid": (frames, [good, good, bad])})
  ds = davis.DavisDataset(root)
  with pytest.raises(davis.VosDataError, match=r"sequence newid frame 00002: unexpected object ids \[2, 3\]"):
    ds.read_annotations(ds.sequence("newid"))
  # Non-contiguous ids in frame 0.
  gap = good.copy()
  gap[20:30, 20:30] = 3
  root = write_davis(tmp_path / "c", {"gap": (frames, [gap, gap, gap])})
  ds = davis.DavisDataset(root)
  with pytest.raises(davis.VosDataError, match=r"sequence gap frame 00000: unexpected object ids \[1, 3\]"):
    ds.reference(ds.sequence("gap"))
  # A frame of another size.
  root = write_davis(tmp_path / "d", {"resized": (frames, [good, good, good])})
  Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(
      os.path.join(root, "JPEGImages", "480p", "resized", "00001.jpg"))
  ds = davis.DavisDataset(root)
  with pytest.raises(davis.VosDataError, match="sequence resized frame 00001: size 48x40 differs"):
    ds.read_frames(ds.sequence("resized"))


# ------------------------------------------------------------------------------------------
# J and F

def test_iou_known_answers():
  gt = np.zeros((40, 40), bool)
  gt[10:20, 10:20] = True
  pred = np.zeros_like(gt)
  pred[10:20, 15:25] = True   # 50 shared of 150 covered
  assert metrics.db_eval_iou(gt, pred) == pytest.approx(1 / 3)
  assert metrics.db_eval_iou(gt, gt) == 1.0
  empty = np.zeros_like(gt)
  assert metrics.db_eval_iou(empty, empty) == 1.0       # empty vs empty counts as perfect
  assert metrics.db_eval_iou(gt, empty) == 0.0
  stacked = metrics.db_eval_iou(np.stack([gt, empty]), np.stack([pred, empty]))
  np.testing.assert_allclose(stacked, [1 / 3, 1.0])


def test_seg2bmap_single_pixel_and_loop_reference():
  seg = np.zeros((6, 6), bool)
  seg[3, 3] = True
  b = metrics.seg2bmap(seg)
  assert set(zip(*np.nonzero(b))) == {(2, 2), (2, 3), (3, 2), (3, 3)}

  def loop_bmap(s):  # the toolkit's rule, pixel by pixel (neighbours past the image are 0)
    h, w = s.shape
    get = lambda y, x: bool(s[y, x]) if y < h and x < w else False
    out = np.zeros_like(s, bool)
    for y in range(h):
      for x in range(w):
        if y == h - 1 and x == w - 1:
          continue
        if y == h - 1:
          out[y, x] = get(y, x) != get(y, x + 1)
        elif x == w - 1:
          out[y, x] = get(y, x) != get(y + 1, x)
        else:
          out[y, x] = (get(y, x) != get(y, x + 1) or get(y, x) != get(y + 1, x)
                       or get(y, x) != get(y + 1, x + 1))
    return out

  rng = np.random.default_rng(0)
  for _ in range(3):
    s = rng.random((13, 17)) < 0.4
    np.testing.assert_array_equal(metrics.seg2bmap(s), loop_bmap(s))


@pytest.mark.parametrize("radius", [0, 1, 3, 8])
def test_disk_dilation_equals_opencv(radius):
  cv2 = pytest.importorskip("cv2")
  rng = np.random.default_rng(radius)
  bmap = rng.random((37, 53)) < 0.03
  yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
  disk = (yy ** 2 + xx ** 2 <= radius ** 2).astype(np.uint8)   # skimage.morphology.disk
  want = cv2.dilate(bmap.astype(np.uint8), disk).astype(bool)
  np.testing.assert_array_equal(metrics.dilate_disk(bmap, radius), want)


def test_f_measure_known_answers_and_reference():
  cv2 = pytest.importorskip("cv2")
  assert metrics.bound_pixels((480, 854)) == 8   # ceil(0.008 * 979.7)
  gt = np.zeros((480, 854), bool)
  gt[100:200, 300:420] = True
  assert metrics.f_measure(gt, gt) == 1.0
  shifted = np.roll(gt, 5, axis=1)   # every boundary pixel within 8 px of the other boundary
  assert metrics.f_measure(shifted, gt) == 1.0
  empty = np.zeros_like(gt)
  assert metrics.f_measure(empty, gt) == 0.0 and metrics.f_measure(gt, empty) == 0.0
  assert metrics.f_measure(empty, empty) == 1.0
  # Far apart: no boundary pixel matches.
  far = np.zeros_like(gt)
  far[300:400, 600:700] = True
  assert metrics.f_measure(far, gt) == 0.0

  def reference(fg, g, r):   # f_measure with cv2.dilate and the loop boundaries above
    disk = (np.add.outer(np.arange(-r, r + 1) ** 2, np.arange(-r, r + 1) ** 2) <= r * r)
    fb, gb = metrics.seg2bmap(fg), metrics.seg2bmap(g)
    fd = cv2.dilate(fb.astype(np.uint8), disk.astype(np.uint8)).astype(bool)
    gd = cv2.dilate(gb.astype(np.uint8), disk.astype(np.uint8)).astype(bool)
    p, rc = (fb & gd).sum() / fb.sum(), (gb & fd).sum() / gb.sum()
    return 2 * p * rc / (p + rc)

  pred = np.roll(gt, 20, axis=1)
  pred[150:160, :] = True
  value = metrics.f_measure(pred, gt)
  assert 0 < value < 1
  assert value == pytest.approx(reference(pred, gt, 8), abs=1e-12)


def test_db_statistics_known_answer():
  values = np.array([1, 1, 1, 0.5, 0.5, 0, 0, 0], np.float64)
  mean, recall, decay = metrics.db_statistics(values)
  assert mean == pytest.approx(0.5)
  assert recall == pytest.approx(3 / 8)          # strictly above 0.5
  # ids = round(linspace(1, 8, 5) + 1e-10) - 1 = [0, 2, 4, 5, 7]: bins [0:3] and [5:8].
  assert decay == pytest.approx(1.0)
  assert metrics.db_statistics(np.array([0.2, 0.8, 0.8, 0.2]))[2] == pytest.approx(0.0)


def _two_object_sequence(t=5, shape=(48, 64)):
  gts = [square_ids(shape, [(4, 20, 4, 20), (24, 40, 30, 50)]) for _ in range(t)]
  return np.full((t,) + shape + (3,), 90, np.uint8), gts


def test_evaluate_drops_first_and_last_frame_and_prints_table(tmp_path, capsys):
  frames, gts = _two_object_sequence()
  root = write_davis(tmp_path / "davis", {"two": (frames, gts)})
  results = tmp_path / "res"
  (results / "two").mkdir(parents=True)
  for t, gt in enumerate(gts):
    res = gt.copy()
    if t in (0, 4):
      res[:] = 0             # first / last frames are not scored
    if t == 2:
      res[res == 2] = 0      # object 2 lost in one scored frame
    davis.write_palette_png(str(results / "two" / f"{t:05d}.png"), res)
  ds = davis.DavisDataset(root)
  scores = metrics.evaluate(ds, str(results))
  assert scores["J"]["M_per_object"] == pytest.approx({"two_1": 1.0, "two_2": 2 / 3})
  assert scores["F"]["M_per_object"] == pytest.approx({"two_1": 1.0, "two_2": 2 / 3})
  g = scores["global"]
  assert g["J-Mean"] == pytest.approx((1 + 2 / 3) / 2)
  assert g["J&F-Mean"] == pytest.approx((1 + 2 / 3) / 2)
  assert g["J-Recall"] == pytest.approx((1 + 2 / 3) / 2)
  # frames 1..3 for object 2 = [1, 0, 1]: ids = round([1, 1.5, 2, 2.5, 3] + 1e-10) - 1
  # = [0, 1, 1, 2, 2] -> first bin [1, 0], last bin [1]: decay 0.5 - 1.
  assert scores["J"]["D"] == pytest.approx([0.0, -0.5])
  # The CLI prints the toolkit's tables and writes JSON.
  out_json = tmp_path / "scores.json"
  assert vos_cli.main(["evaluate", "--root", root, "--results", str(results), "--json",
                       str(out_json), "--quiet"]) == 0
  printed = capsys.readouterr().out
  assert "Global results for val" in printed and "J&F-Mean" in printed and "two_2" in printed
  assert json.loads(out_json.read_text())["global"]["J-Mean"] == pytest.approx(g["J-Mean"])


def test_evaluate_bad_results(tmp_path, capsys):
  frames, gts = _two_object_sequence()
  root = write_davis(tmp_path / "davis", {"two": (frames, gts)})
  ds = davis.DavisDataset(root)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(davis.VosDataError, match="holds no PNG"):
    metrics.evaluate(ds, str(empty))
  res = tmp_path / "res"
  (res / "two").mkdir(parents=True)
  for t, gt in enumerate(gts):
    r = gt.copy()
    if t == 3:
      r[0:3, 0:3] = 7
    davis.write_palette_png(str(res / "two" / f"{t:05d}.png"), r)
  with pytest.raises(davis.VosDataError, match="sequence two frame 00003: result holds object id 7"):
    metrics.evaluate(ds, str(res))
  os.remove(res / "two" / "00002.png")
  with pytest.raises(davis.VosDataError, match="sequence two frame 00002: no result"):
    metrics.evaluate(ds, str(res))
  out_json = tmp_path / "never.json"
  assert vos_cli.main(["evaluate", "--root", root, "--results", str(empty), "--json",
                       str(out_json), "--quiet"]) == 2
  assert "error:" in capsys.readouterr().err and not out_json.exists()


# ------------------------------------------------------------------------------------------
# features

def test_input_size_is_dinos_rule():
  assert features.input_size(480, 854) == (480, 832)
  assert features.input_size(854, 480) == (832, 480)
  assert features.input_size(160, 224, short_side=-1, size_multiple=16) == (160, 224)
  assert features.input_size(160, 230, short_side=-1, size_multiple=16) == (160, 224)


def test_resize_frame_equals_opencv():
  cv2 = pytest.importorskip("cv2")
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
  for h, w in ((96, 128), (32, 48), (50, 64)):
    np.testing.assert_array_equal(features.resize_frame(image, h, w),
                                  cv2.resize(image, (w, h)))


@pytest.mark.parametrize("mode,half", [("x", 0), ("z", 1)])
def test_features_equal_encode_all_at_training_resolution(micro_params, mode, half):
  """With both frame embeddings set equal, encode_all([f, f]) is the single-frame encoder twice
  (attention over duplicated keys is attention over one copy)."""
  from dropmae_jax.models import mae
  params, config = micro_params
  params = jax.tree.map(np.array, params)
  source = "temporal_pos_embed_" + ("x" if mode == "x" else "z")
  for name in ("temporal_pos_embed_x", "temporal_pos_embed_z"):
    params[name] = params[source].copy()
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
  model = mae.DropMAE.from_config(config)
  pairs = mae.normalize_frames(jnp.asarray(np.stack([frames, frames], axis=1)))
  want = model.apply({"params": params}, pairs, method=mae.DropMAE.encode_all)
  n = model.tokens_per_frame
  encoder = features.FrameEncoder(params, config, frame_embed=mode, batch_size=2)
  got = encoder(frames)
  assert got.shape == (3, n, 64)
  np.testing.assert_allclose(got, want[:, half * n:(half + 1) * n], atol=2e-5, rtol=1e-5)


def test_frame_embed_modes_differ_only_by_the_embedding(micro_params):
  params, config = micro_params
  frames = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  encoder = features.FrameEncoder(params, config)
  out = {}
  for mode in features.FRAME_EMBEDS:   # host-side weights: one compiled function serves all
    encoder.frame_embed = mode
    out[mode] = np.asarray(encoder(frames))
  np.testing.assert_allclose(out["z_first"][0], out["z"][0], atol=1e-6)
  np.testing.assert_allclose(out["z_first"][1], out["x"][1], atol=1e-6)
  assert np.abs(out["x"] - out["none"]).max() > 1e-3
  assert np.abs(out["x"] - out["z"]).max() > 1e-3
  # A non-square grid other than the training one runs (pos table resized bicubically).
  wide = np.random.default_rng(3).integers(0, 256, (1, 48, 80, 3), dtype=np.uint8)
  assert encoder(wide).shape == (1, 15, 64)


@pytest.fixture(scope="module")
def released_file(micro_params, tmp_path_factory):
  """The micro params as a released-layout file (safetensors: no torch needed)."""
  from dropmae_jax.convert import io as convert_io
  from dropmae_jax.convert import layout
  params, _ = micro_params
  path = str(tmp_path_factory.mktemp("weights") / "micro.safetensors")
  # Encoder keys only: what DropTrack / DropSeg keep of a released checkpoint.
  convert_io.write_torch_state_dict(layout.params_to_state_dict(params, grid=4,
                                                                encoder_only=True), path)
  return path


def test_load_weights_from_a_released_file(micro_params, released_file):
  params, _ = micro_params
  loaded, cfg, _ = features.load_weights(released_file)
  assert cfg.model.variant == "micro/16" and cfg.model.img_size == 64
  for name in ("temporal_pos_embed_x", "temporal_pos_embed_z", "patch_embed", "blocks_1", "norm"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), loaded[name],
                 params[name])


# ------------------------------------------------------------------------------------------
# label propagation

def dino_label_propagation(target, sources, segs, size, topk, temperature, h, w):
  """DINO's label_propagation, straightforwardly in numpy (loops for the neighbourhood)."""
  mask = np.zeros((h, w, h, w))
  for i in range(h):
    for j in range(w):
      for p in range(2 * size + 1):
        for q in range(2 * size + 1):
          ii, jj = i - size + p, j - size + q
          if 0 <= ii < h and 0 <= jj < w:
            mask[i, j, ii, jj] = 1
  mask = mask.reshape(h * w, h * w)
  norm = lambda f: f / np.linalg.norm(f, axis=-1, keepdims=True)
  target, sources = norm(target), norm(sources)
  aff = np.exp(np.einsum("qd,nkd->nqk", target, sources) / temperature) * mask[None]
  aff = aff.transpose(0, 2, 1).reshape(-1, h * w)     # (n·keys, queries)
  kth = np.sort(aff, axis=0)[-topk]
  aff[aff < kth] = 0
  aff = aff / aff.sum(axis=0, keepdims=True)
  labels = segs.reshape(-1, segs.shape[-1]).T           # (C, n·keys)
  return (labels @ aff).T                               # (queries, C)


def test_propagate_labels_equals_dino_loops():
  rng = np.random.default_rng(0)
  h, w, d, c, n = 4, 5, 8, 3, 3
  target = rng.normal(size=(h * w, d))
  sources = rng.normal(size=(n, h * w, d))
  segs = rng.random((n, h * w, c))
  want = dino_label_propagation(target, sources, segs, 1, 5, 0.1, h, w)
  norm = lambda f: f / np.linalg.norm(f, axis=-1, keepdims=True)
  # Two extra invalid context slots with garbage must change nothing.
  feats = np.concatenate([norm(sources), rng.normal(size=(2, h * w, d))])
  labels = np.concatenate([segs, rng.random((2, h * w, c))])
  valid = np.array([1, 1, 1, 0, 0], np.float32)
  got = propagate.propagate_labels(
      jnp.asarray(norm(target), jnp.float32), jnp.asarray(feats, jnp.float32),
      jnp.asarray(labels, jnp.float32), jnp.asarray(valid),
      jnp.asarray(propagate.neighborhood_mask(h, w, 1)), topk=5, temperature=0.1)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_labels_to_ids_equals_torch_upsample_norm_argmax():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  h, w, c, p = 3, 5, 4, 8
  soft = rng.random((h, w, c)).astype(np.float32)
  soft[..., 3] = 0            # an all-zero channel is left alone by norm_mask
  up = torch.nn.functional.interpolate(torch.from_numpy(soft.transpose(2, 0, 1))[None],
                                       scale_factor=p, mode="bilinear", align_corners=False,
                                       recompute_scale_factor=False)[0]
  for k in range(c):          # DINO's norm_mask
    if up[k].max() > 0:
      up[k] = (up[k] - up[k].min()) / (up[k] - up[k].min()).max()
  want = torch.argmax(up, dim=0).numpy()
  got = propagate.labels_to_ids(jnp.asarray(soft), jnp.asarray(propagate.upsample_matrix(h, p)),
                                jnp.asarray(propagate.upsample_matrix(w, p)))
  np.testing.assert_array_equal(np.asarray(got), want)


class TableEncoder:
  """Toy encoder: frame t's features are a fixed table (T, h·w, D); reads pixel [0, 0, 0] as t."""

  def __init__(self, table, patch_size):
    self.table, self.patch_size = jnp.asarray(table, jnp.float32), patch_size

  def __call__(self, frames):
    return self.table[np.asarray(frames)[:, 0, 0, 0].astype(int)]


def test_propagate_sequence_equals_dino_queue_loop():
  """Whole sequence vs DINO's loop: first frame + queue of the last n soft labels."""
  rng = np.random.default_rng(2)
  T, h, w, d, p, n_last, k = 9, 3, 4, 6, 4, 3, 2
  table = rng.normal(size=(T, h * w, d))
  frames = np.zeros((T, h * p, w * p, 3), np.uint8)
  frames[:, 0, 0, 0] = np.arange(T)
  first = np.zeros((h * p, w * p), np.uint8)
  first[:p * 2, :p * 2] = 1
  first[p * 2:, p * 3:] = 2
  proto = propagate.Protocol(n_last_frames=n_last, size_mask_neighborhood=1, topk=k,
                             temperature=0.1, short_side=-1, size_multiple=p)
  got = dict(propagate.propagate_sequence(TableEncoder(table, p), frames, first, 2, proto))
  # Reference.
  small = np.asarray(Image.fromarray(first).resize((w, h), Image.NEAREST)).reshape(-1)
  first_seg = np.eye(3)[small]
  queue = []
  up_h, up_w = propagate.upsample_matrix(h, p), propagate.upsample_matrix(w, p)
  for t in range(1, T):
    sources = np.stack([table[0]] + [f for f, _ in queue])
    segs = np.stack([first_seg] + [s for _, s in queue])
    soft = dino_label_propagation(table[t], sources, segs, 1, k, 0.1, h, w)
    if len(queue) == n_last:
      queue.pop(0)
    queue.append((table[t], soft))
    up = np.einsum("Hh,hwc,Ww->cHW", up_h, soft.reshape(h, w, 3), up_w)
    for c in range(3):
      if up[c].max() > 0:
        up[c] = (up[c] - up[c].min()) / (up[c] - up[c].min()).max()
    np.testing.assert_array_equal(got[t], up.argmax(0), err_msg=f"frame {t}")
  np.testing.assert_array_equal(got[0], first)


def test_propagation_recovers_a_known_shift():
  """Features = one-hot codes of the scene position under each patch; frame t is frame 0 rolled
  by t·(1, 2) patches, so the labels must roll with it."""
  h, w, p, T = 6, 8, 4, 5
  codes = np.arange(h * w).reshape(h, w)
  shift = (1, 2)
  grids = [np.roll(codes, (t * shift[0], t * shift[1]), axis=(0, 1)) for t in range(T)]
  table = np.stack([np.eye(h * w)[g.reshape(-1)] for g in grids])
  frames = np.zeros((T, h * p, w * p, 3), np.uint8)
  frames[:, 0, 0, 0] = np.arange(T)
  first = np.zeros((h * p, w * p), np.uint8)
  first[1 * p:3 * p, 1 * p:4 * p] = 1
  first[3 * p:5 * p, 5 * p:7 * p] = 2
  proto = propagate.Protocol(size_mask_neighborhood=0, short_side=-1, size_multiple=p)
  out = dict(propagate.propagate_sequence(TableEncoder(table, p), frames, first, 2, proto))
  small = first[p // 2::p, p // 2::p]   # the label of each patch
  for t in range(1, T):
    want = np.roll(first, (t * shift[0] * p, t * shift[1] * p), axis=(0, 1))
    # Every patch centre carries the shifted label; bilinear upsampling only rounds the
    # objects' corners (DINO's output does the same), so the masks overlap almost fully.
    np.testing.assert_array_equal(out[t][p // 2::p, p // 2::p],
                                  np.roll(small, (t * shift[0], t * shift[1]), axis=(0, 1)),
                                  err_msg=f"frame {t}")
    for k in (1, 2):
      assert metrics.db_eval_iou(want == k, out[t] == k) > 0.9, (t, k)


# ------------------------------------------------------------------------------------------
# synthetic set, CLI, during training

@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
  from dropmae_jax.vos import synthetic as make_vos_sequences
  from dropmae_jax.data import samples
  root = str(tmp_path_factory.mktemp("vos") / "synth")
  # The first 40 frames of each bundled clip are enough (plans read the clips' decoded lengths).
  folder = samples.sample_video_dir()
  clips = {c: make_vos_sequences.scenes.decode_clip(os.path.join(folder, c), 40)
           for c in samples.SAMPLE_CLIPS}
  plans = make_vos_sequences.make_dataset(root, val=2, frames=16, size=(96, 64), seed=0,
                                          progress=False, clips=clips)
  return root, plans


def test_synthetic_set_layout_and_exact_masks(synthetic_root):
  from dropmae_jax.vos import synthetic as make_vos_sequences
  root, plans = synthetic_root
  ds = davis.DavisDataset(root)
  assert ds.names == ["synth-val-000", "synth-val-001"]
  assert davis.DavisDataset(root, year="2016").names == ds.names
  counts = []
  for seq, vos in zip(ds, plans["val"]):
    frames = ds.read_frames(seq)
    masks, k = ds.read_annotations(seq)
    assert frames.shape == (16, 64, 96, 3) and k == vos.num_objects
    counts.append(k)
    plan = vos.first
    # Object 1 is fully hidden while the occluder covers it, visible in frame 0.
    first, last = plan.occluded_frames
    assert all((masks[t] == 1).sum() == 0 for t in range(first, last))
    assert (masks[0] == 1).sum() > 0 and (masks[0] == k).sum() > 0
    # Exact masks: object 1's label is where its alpha >= 0.5 and nothing covers it.
    alpha, ox, oy = make_vos_sequences.scenes.object_support_alpha(plan, 0)
    full = np.zeros((64, 96), bool)
    for j, i in zip(*np.nonzero(alpha >= 0.5)):
      if 0 <= oy + j < 64 and 0 <= ox + i < 96:
        full[oy + j, ox + i] = True
    np.testing.assert_array_equal(masks[0] == 1, full)
    # Object 1 changes scale over the sequence (areas in frames where it is fully inside).
    sizes = plan.size[:, 0] * plan.size[:, 1]
    assert sizes.max() / sizes.min() > 1.3
  assert counts == [2, 1]
  with pytest.raises(FileExistsError):
    make_vos_sequences.make_dataset(root, val=1, frames=16, size=(96, 64), progress=False,
                                    clips={})


def _maker_error(capsys) -> str:
  """The maker's error line (after any progress bar), checked to be the only one."""
  err = capsys.readouterr().err
  lines = [line for line in err.split("\n") if line and "\r" not in line]
  assert len(lines) == 1 and "Traceback" not in err, err
  assert lines[0].startswith(("error: ", "python -m dropmae_jax.vos.synthetic: error: ")), err
  return lines[0]


@pytest.mark.timeout(120)
def test_synthetic_maker_errors_are_one_line_with_exit_2_and_leave_nothing(
    synthetic_root, tmp_path, capsys, monkeypatch):
  from dropmae_jax.data import samples
  from dropmae_jax.data import video
  from dropmae_jax.vos import synthetic as make_vos_sequences
  root, _ = synthetic_root
  assert make_vos_sequences.main(["--out", root]) == 2
  assert "exists; pass --overwrite to replace it" in _maker_error(capsys)
  for argv, message in [(["--size", "96by64"], "--size wants WIDTHxHEIGHT"),
                        (["--train", "-1"], "argument --train: must be 0 or more"),
                        (["--ouput", "x"], "unknown flag --ouput; did you mean --out?")]:
    with pytest.raises(SystemExit) as e:
      make_vos_sequences.main(["--out", str(tmp_path / "x")] + argv)
    assert e.value.code == 2 and message in _maker_error(capsys)
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  for argv, message in [(["--out", str(tmp_path / "x"), "--frames", "5"], "--frames must be >= 16"),
                        (["--out", str(tmp_path / "x"), "--val", "0"], "nothing to write"),
                        (["--out", str(a_file), "--overwrite"], "is a file, not a folder")]:
    assert make_vos_sequences.main(argv) == 2 and message in _maker_error(capsys)

  def bad_clip():
    raise video.VideoDecodeError("/clips/x.mp4: no frames")

  fresh = tmp_path / "new" / "set"
  monkeypatch.setattr(make_vos_sequences.scenes, "load_clips", bad_clip)
  assert make_vos_sequences.main(["--out", str(fresh)]) == 2
  assert "x.mp4: no frames" in _maker_error(capsys)
  # A write that fails halfway (disk full) leaves neither the folders it made nor its staging
  # folder, and the set it was to replace stays as it was.
  folder = samples.sample_video_dir()
  clips = {c: make_vos_sequences.scenes.decode_clip(os.path.join(folder, c), 40)
           for c in samples.SAMPLE_CLIPS}
  monkeypatch.setattr(make_vos_sequences.scenes, "load_clips", lambda: clips)
  real_write = make_vos_sequences.write_sequence
  written = []

  def fail_on_second(vos, clips_, target):
    if written:
      raise OSError(28, "No space left on device", target)
    written.append(vos.name)
    real_write(vos, clips_, target)

  monkeypatch.setattr(make_vos_sequences, "write_sequence", fail_on_second)
  argv = ["--val", "2", "--frames", "16", "--size", "96x64"]
  assert make_vos_sequences.main(["--out", str(fresh)] + argv) == 2
  assert "No space left on device" in _maker_error(capsys)
  assert not (tmp_path / "new").exists()
  before = sorted(os.listdir(os.path.join(root, "JPEGImages", "480p")))
  written.clear()
  assert make_vos_sequences.main(["--out", root, "--overwrite"] + argv) == 2
  assert "No space left on device" in _maker_error(capsys)
  assert sorted(os.listdir(os.path.join(root, "JPEGImages", "480p"))) == before
  assert not [f for f in os.listdir(os.path.dirname(root)) if ".tmp" in f]


@pytest.mark.timeout(60)
def test_synthetic_maker_help_describes_every_argument(capsys):
  from dropmae_jax.vos import synthetic as make_vos_sequences
  with pytest.raises(SystemExit) as e:
    make_vos_sequences.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert "example:\n  python -m dropmae_jax.vos.synthetic --out " in out
  options = out.split("options:")[1].split("example:")[0]
  entries = [e for e in options.split("\n  -") if e.strip()][1:]   # [0] is --help
  assert len(entries) == 7 and all(len(e.split()) > 2 for e in entries), entries
  assert "(default: 4)" in options and "(default: 224x160)" in options


def test_cli_propagate_writes_every_frame_and_scores(synthetic_root, released_file, tmp_path,
                                                    capsys):
  root, _ = synthetic_root
  out = tmp_path / "masks"
  code = vos_cli.main(["propagate", "--weights", released_file, "--root", root, "--out",
                       str(out), "--json", str(tmp_path / "s.json"), "--quiet",
                       "--config.vos.short_side=-1", "--config.vos.size_multiple=16",
                       "--config.vos.size_mask_neighborhood=2"])
  assert code == 0, capsys.readouterr().err
  for name in ("synth-val-000", "synth-val-001"):
    assert sorted(os.listdir(out / name)) == [f"{t:05d}.png" for t in range(16)]
    with Image.open(out / name / "00005.png") as image:
      assert image.mode == "P" and image.size == (96, 64)
  assert not [f for f in os.listdir(out) if f.startswith(".")]   # no staging folder left
  scores = json.loads((tmp_path / "s.json").read_text())
  assert 0 <= scores["global"]["J&F-Mean"] <= 1
  assert "Global results for val" in capsys.readouterr().out


def _propagate_argv(root, weights, out, *extra):
  return (["propagate", "--weights", weights, "--root", root, "--out", str(out), "--quiet",
           "--no-evaluate", "--config.vos.short_side=-1", "--config.vos.size_multiple=16",
           "--config.vos.size_mask_neighborhood=2"] + list(extra))


@pytest.mark.timeout(300)
def test_cli_propagate_keeps_finished_results_unless_overwrite(synthetic_root, released_file,
                                                               tmp_path, capsys):
  root, _ = synthetic_root
  out = tmp_path / "masks"
  assert vos_cli.main(_propagate_argv(root, released_file, out)) == 0
  pngs = sorted(out.glob("*/*.png"))
  assert len(pngs) == 32
  # Another model's results are there: a second run keeps them and says so.
  for path in pngs:
    path.write_bytes(b"earlier results")
  capsys.readouterr()
  assert vos_cli.main(_propagate_argv(root, released_file, out)) == 0
  assert "2 of 2 sequences already have results" in capsys.readouterr().out
  assert all(p.read_bytes() == b"earlier results" for p in pngs)
  # A sequence folder that is not a finished result stops the run, before anything is written.
  (out / "synth-val-001" / "00007.png").unlink()
  assert vos_cli.main(_propagate_argv(root, released_file, out)) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "synth-val-001 exists but is not a finished result" in err
  assert "--overwrite" in err
  assert all(p.read_bytes() == b"earlier results" for p in pngs if p.exists())
  # --overwrite replaces them.
  assert vos_cli.main(_propagate_argv(root, released_file, out, "--overwrite")) == 0
  assert sorted(out.glob("*/*.png")) == pngs
  with Image.open(out / "synth-val-001" / "00007.png") as image:
    assert image.mode == "P"
  assert not [f for f in os.listdir(out) if f.startswith(".")]


@pytest.mark.timeout(300)
def test_cli_propagate_failure_leaves_nothing_behind(synthetic_root, released_file, tmp_path,
                                                     capsys):
  import shutil
  root, _ = synthetic_root
  broken = tmp_path / "broken"
  shutil.copytree(root, broken)
  (broken / "JPEGImages" / "480p" / "synth-val-000" / "00004.jpg").write_bytes(b"not a jpeg")
  out = tmp_path / "new" / "masks"
  assert vos_cli.main(_propagate_argv(str(broken), released_file, out)) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "00004" in err and "synth-val-000" in err
  assert not (tmp_path / "new").exists()
  # A frame that fails inside propagation (after the staging folder exists) leaves nothing too.
  (tmp_path / "new").mkdir()
  assert vos_cli.main(_propagate_argv(str(broken), released_file, out,
                                      "--sequences=synth-val-001",
                                      "--config.vos.size_multiple=1000")) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "encoder input 0x64" in err
  assert os.listdir(tmp_path / "new") == []   # its own folder stays; masks/ is gone


@pytest.mark.timeout(120)
@pytest.mark.parametrize("argv, unknown, nearest", [
    (["--weigths=W", "--root=R", "--out=O"], "--weigths", "--weights"),
    (["--weights=W", "--root=R", "--ouput=O"], "--ouput", "--out"),
])
def test_cli_names_a_misspelt_flag_and_the_nearest(argv, unknown, nearest, capsys):
  with pytest.raises(SystemExit) as e:
    vos_cli.main(["propagate"] + argv)
  assert e.value.code == 2
  assert capsys.readouterr().err == (
      f"python -m dropmae_jax.vos propagate: error: unknown flag {unknown}; did you mean "
      f"{nearest}?\n")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["propagate", "evaluate"])
def test_cli_subcommand_help_describes_every_argument(command, capsys):
  with pytest.raises(SystemExit) as e:
    vos_cli.main([command, "--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert f"example:\n  python -m dropmae_jax.vos {command} " in out
  options = out.split("options:")[1].split("example:")[0]
  entries = [e for e in options.split("\n  -") if e.strip()][1:]   # [0] is --help
  assert entries and all(len(e.split()) > 2 for e in entries), entries
  assert "(required)" in options and "(default:" in options


def test_label_propagation_eval_during_training(synthetic_root, micro_params, tmp_path):
  root, _ = synthetic_root
  params, config = micro_params
  config = ml_collections.ConfigDict(config.to_dict())
  config.eval = during_training.synthetic_eval_config()
  config.eval.davis_root = root
  config.eval.vos.size_mask_neighborhood = 2
  workdir = str(tmp_path / "work")
  scores = during_training.label_propagation_eval(params, config, 7, workdir)
  assert set(scores) == {"davis_jf", "davis_j", "davis_f"}
  assert all(0 <= v <= 1 for v in scores.values())
  assert scores["davis_jf"] == pytest.approx((scores["davis_j"] + scores["davis_f"]) / 2)
  assert os.path.isfile(os.path.join(workdir, "figures", "label_propagation_00000007.png"))
  saved = json.loads(open(os.path.join(workdir, "label_propagation", "scores_00000007.json")).read())
  assert saved["global"]["J&F-Mean"] == pytest.approx(scores["davis_jf"])
  # A second call reuses the compiled encoder and replaces the masks.
  again = during_training.label_propagation_eval(params, config, 8, workdir)
  assert again == pytest.approx(scores)
  assert sorted(os.listdir(os.path.join(workdir, "label_propagation", "latest"))) == [
      "synth-val-000", "synth-val-001"]


def test_pretraining_logs_label_propagation(tmp_path, video_tree):
  """config.eval.label_propagation_every: the one trainer logs davis_jf and writes its figure."""
  import json
  from dropmae_jax.train import loop
  from test_train import tiny_config
  config = tiny_config(video_tree)
  config.max_steps = 2
  config.eval.label_propagation_every = 2
  config.eval.davis_sequences = ""
  config.eval.vos.short_side = -1
  config.eval.vos.size_multiple = 16
  config.eval.vos.size_mask_neighborhood = 4
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config, workdir)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  scored = [r for r in rows if "davis_jf" in r]
  assert [r["step"] for r in scored] == [2]
  assert 0.0 <= scored[0]["davis_jf"] <= 1.0
  assert os.path.isfile(os.path.join(workdir, "figures", "label_propagation_00000002.png")) or any(
      f.startswith("label_propagation") for f in os.listdir(os.path.join(workdir, "figures")))
