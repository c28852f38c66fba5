"""Tracking benchmarks, result files, metrics and `python -m dropmae_jax.track evaluate`.

References are independent of the code under test: closed-form boxes, and the released evaluation
rules (pytracking extract_results.py, GOT-10k toolkit) written here frame by frame in plain Python.
"""
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from dropmae_jax.track import __main__ as cli
from dropmae_jax.track import datasets
from dropmae_jax.track.datasets import lasot
from dropmae_jax.track.evaluation import metrics
from dropmae_jax.track.evaluation import results


# ------------------------------------------------------------------------------------------------
# Plain-Python references (one frame at a time, no numpy on the maths)

THRESHOLDS_OVERLAP = [k * 0.05 for k in range(21)]


def ref_ope_errors(pred, gt, visible=None, dataset=""):
  pred = [list(map(float, r)) for r in pred]
  gt = [list(map(float, r)) for r in gt]
  n = len(gt)
  for i in range(1, n):  # zero-size boxes take the previous one, before frame 0 is overwritten
    if (pred[i][2] == 0.0 or pred[i][3] == 0.0) and not any(math.isnan(v) for v in gt[i]):
      pred[i] = list(pred[i - 1])
  pred[0] = list(gt[0])
  overlap, center, center_norm = [], [], []
  for i in range(n):
    px, py, pw, ph = pred[i]
    gx, gy, gw, gh = gt[i]
    valid = gw > 0 and gh > 0 and (visible is None or bool(visible[i]))
    iw = max(min(px + pw - 1, gx + gw - 1) - max(px, gx) + 1, 0.0)
    ih = max(min(py + ph - 1, gy + gh - 1) - max(py, gy) + 1, 0.0)
    inter = iw * ih
    union = pw * ph + gw * gh - inter
    o = inter / union if union != 0 else float("nan")
    pcx, pcy = px + 0.5 * (pw - 1), py + 0.5 * (ph - 1)
    gcx, gcy = gx + 0.5 * (gw - 1), gy + 0.5 * (gh - 1)
    c = math.sqrt((pcx - gcx) ** 2 + (pcy - gcy) ** 2)
    if gw != 0 and gh != 0:
      cn = math.sqrt((pcx / gw - gcx / gw) ** 2 + (pcy / gh - gcy / gh) ** 2)
    else:
      cn = float("nan")
    if not valid:
      o, c, cn = -1.0, (-1.0 if dataset == "uav" else math.inf), -1.0
    if dataset == "lasot" and visible is not None and not visible[i]:
      c, cn = math.inf, math.inf
    overlap.append(o)
    center.append(c)
    center_norm.append(cn)
  return overlap, center, center_norm


def ref_ope_curves(overlap, center, center_norm):
  n = len(overlap)
  success = [sum(o > t for o in overlap) / n for t in THRESHOLDS_OVERLAP]
  precision = [sum(c <= d for c in center) / n for d in range(51)]
  norm = [sum(c <= d / 100.0 for c in center_norm) / n for d in range(51)]
  return success, precision, norm


def ref_got10k_ious(pred, gt, cover, size):
  w_img, h_img = size
  out = []
  for i in range(1, len(gt)):
    if cover[i] <= 0:
      continue
    boxes = []
    for x, y, w, h in (pred[i], gt[i]):
      x = min(max(x, 0.0), w_img)
      y = min(max(y, 0.0), h_img)
      w = min(max(w, 0.0), w_img - x)
      h = min(max(h, 0.0), h_img - y)
      boxes.append((x, y, w, h))
    (ax, ay, aw, ah), (bx, by, bw, bh) = boxes
    iw = max(min(ax + aw, bx + bw) - max(ax, bx), 0.0)
    ih = max(min(ay + ah, by + bh) - max(ay, by), 0.0)
    union = aw * ah + bw * bh - iw * ih
    out.append(min(max(iw * ih / (union + 2.220446049250313e-16), 0.0), 1.0))
  return out


def random_track(rng, n, zero_every=0):
  gt = np.c_[rng.uniform(0, 200, (n, 2)), rng.uniform(5, 80, (n, 2))]
  pred = gt + rng.normal(0, 12, gt.shape)
  pred[:, 2:] = np.abs(pred[:, 2:]) + 1
  if zero_every:
    pred[::zero_every, 2] = 0.0
    pred[3:6, 3] = 0.0   # a run of zero-size boxes
  return pred, gt


# ------------------------------------------------------------------------------------------------
# Closed-form metric cases


def test_iou_closed_form():
  gt = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 10.0, 10.0]])
  pred = np.array([[5.0, 5.0, 10.0, 10.0], [0.0, 0.0, 62.0, 100.0], [20.0, 0.0, 5.0, 5.0]])
  # inclusive pixels: br = 5 + 10 - 1 = 14 vs 9 -> 9 - 5 + 1 = 5 px each way: I = 25, U = 175.
  np.testing.assert_allclose(metrics.iou_inclusive(pred, gt), [25 / 175, 0.62, 0.0], rtol=1e-15)
  # Centre (wh - 1) / 2: (4.5, 4.5) vs (9.5, 9.5).
  np.testing.assert_allclose(metrics.center_error(pred[:1], gt[:1]), [5 * math.sqrt(2)])
  np.testing.assert_allclose(metrics.center_error(pred[:1], gt[:1], normalized=True),
                             [0.5 * math.sqrt(2)])


def test_got10k_iou_clips_to_image():
  size = (64, 48)
  gt = np.array([[0.0, 0.0, 20.0, 20.0], [50.0, 40.0, 14.0, 8.0]])
  pred = np.array([[-10.0, -10.0, 20.0, 20.0], [50.0, 40.0, 30.0, 30.0]])
  # The toolkit clips x to [0, W] and then w to [0, W - x]: (-10,-10,20,20) is moved to (0,0,20,20)
  # (w is not shortened), (50,40,30,30) becomes (50,40,14,8). Both then equal their GT.
  np.testing.assert_allclose(metrics.iou_bounded(pred, gt, size), [1.0, 1.0], atol=1e-12)
  # Unclipped: 10x10 of 20x20 boxes -> 100 / 700; 14x8 inside 30x30 -> 112 / 900.
  np.testing.assert_allclose(metrics.iou_bounded(pred, gt, None), [100 / 700, 112 / 900],
                             rtol=1e-12)


def test_auc_of_constant_iou_uses_strict_thresholds():
  n = 50
  errors = metrics.SequenceErrors(np.full(n, 0.62), np.zeros(n), np.zeros(n), np.ones(n, bool))
  summary = metrics.ope_summary([metrics.ope_sequence_curves(errors)])
  assert summary["metrics"]["AUC"] == pytest.approx(13 / 21 * 100, abs=1e-12)
  # Exactly 0.5 and 0.75 are not "> 0.5" / "> 0.75".
  errors = metrics.SequenceErrors(np.full(n, 0.5), np.zeros(n), np.zeros(n), np.ones(n, bool))
  s = metrics.ope_summary([metrics.ope_sequence_curves(errors)])["metrics"]
  assert s["OP50"] == 0.0 and s["AUC"] == pytest.approx(10 / 21 * 100)
  # Through the whole pipeline: frame 0 becomes the GT (IoU 1: above 20 of 21 thresholds).
  gt = np.tile([0.0, 0.0, 100.0, 100.0], (n, 1))
  pred = np.tile([0.0, 0.0, 62.0, 100.0], (n, 1))
  curves = metrics.ope_sequence_curves(metrics.ope_sequence_errors(pred, gt))
  assert curves.success.mean() * 100 == pytest.approx((20 + 13 * (n - 1)) / (21 * n) * 100)


def test_first_frame_invalid_frames_and_zero_size_carry_over():
  gt = np.tile([10.0, 10.0, 20.0, 20.0], (6, 1))
  gt[4, 2] = 0.0                                     # invalid GT frame
  pred = np.array([[0.0, 0.0, 1.0, 1.0],             # frame 0: garbage, replaced by GT
                   [0.0, 0.0, 0.0, 5.0],             # zero width: takes frame 0's *file* box
                   [10.0, 10.0, 20.0, 20.0],
                   [10.0, 10.0, 20.0, 0.0],          # takes frame 2's box
                   [10.0, 10.0, 20.0, 20.0],
                   [10.0, 10.0, 0.0, 0.0]])          # takes frame 4's box
  e = metrics.ope_sequence_errors(pred, gt)
  np.testing.assert_allclose(e.overlap, [1.0, 0.0, 1.0, 1.0, -1.0, 1.0])
  assert e.center[4] == np.inf and e.center_norm[4] == -1.0
  c = metrics.ope_sequence_curves(e)
  assert c.success[0] == pytest.approx(4 / 6)       # the invalid frame counts in the denominator
  assert c.avg_overlap == pytest.approx(4 / 5)      # valid frames only
  # UAV123: invalid frames get centre error -1, so they pass every precision threshold.
  e = metrics.ope_sequence_errors(pred, gt, dataset="uav")
  assert e.center[4] == -1.0
  # LaSOT: a frame with the target out of view is invalid and has infinite centre errors.
  visible = np.array([1, 1, 0, 1, 1, 1], bool)
  e = metrics.ope_sequence_errors(pred, gt, visible, dataset="lasot")
  assert e.overlap[2] == -1.0 and e.center[2] == np.inf and e.center_norm[2] == np.inf
  with pytest.raises(metrics.MetricsError, match="seq7"):
    metrics.ope_sequence_errors(np.where(pred == 20.0, np.nan, pred), gt, name="seq7")
  with pytest.raises(metrics.MetricsError, match="NaN in the ground truth"):
    metrics.ope_sequence_errors(pred, np.where(gt == 20.0, np.nan, gt))


@pytest.mark.parametrize("dataset", ["", "uav", "lasot"])
def test_ope_matches_frame_by_frame_reference(dataset):
  rng = np.random.default_rng(1)
  for trial in range(4):
    n = int(rng.integers(20, 120))
    pred, gt = random_track(rng, n, zero_every=7)
    exact = rng.random(n) < 0.1
    pred[exact] = gt[exact]                         # IoU exactly 1 on some frames
    gt[rng.random(n) < 0.1, 3] = 0.0                # invalid GT frames
    visible = None
    if dataset == "uav":
      gt[rng.random(n) < 0.1] = np.nan
      gt[0] = [5.0, 5.0, 30.0, 30.0]
    if dataset == "lasot":
      visible = rng.random(n) > 0.15
    e = metrics.ope_sequence_errors(pred, gt, visible, dataset)
    ro, rc, rn = ref_ope_errors(pred, gt, visible, dataset)
    np.testing.assert_allclose(e.overlap, ro, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(e.center, rc, rtol=1e-12)
    np.testing.assert_allclose(e.center_norm, rn, rtol=1e-12)
    c = metrics.ope_sequence_curves(e)
    rs, rp, rnp = ref_ope_curves(ro, rc, rn)
    np.testing.assert_allclose(c.success, rs, atol=1e-15)
    np.testing.assert_allclose(c.precision, rp, atol=1e-15)
    np.testing.assert_allclose(c.norm_precision, rnp, atol=1e-15)


def test_got10k_matches_frame_by_frame_reference():
  rng = np.random.default_rng(2)
  size = (240, 160)
  pooled_ref, seqs = [], []
  for _ in range(3):
    n = int(rng.integers(10, 60))
    pred, gt = random_track(rng, n)
    pred[::5, 0] -= 150  # boxes leaving the image
    cover = rng.integers(0, 9, n)
    ious = metrics.got10k_sequence_ious(pred, gt, cover, size)
    ref = ref_got10k_ious(pred.tolist(), gt.tolist(), cover.tolist(), size)
    np.testing.assert_allclose(ious, ref, rtol=1e-12, atol=1e-15)
    pooled_ref += ref
    seqs.append(ious)
  s = metrics.got10k_scores(np.concatenate(seqs), np.array([0.02, 0.0, np.nan, 0.05]))
  assert s["AO"] == pytest.approx(100 * sum(pooled_ref) / len(pooled_ref))
  assert s["SR0.5"] == pytest.approx(100 * sum(v > 0.5 for v in pooled_ref) / len(pooled_ref))
  assert s["SR0.75"] == pytest.approx(100 * sum(v > 0.75 for v in pooled_ref) / len(pooled_ref))
  assert s["FPS"] == pytest.approx((50 + 20) / 2)  # zero and NaN times dropped


# ------------------------------------------------------------------------------------------------
# Readers


def _jpg(path, size=(64, 48)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new("RGB", size, (90, 20, 20)).save(path, quality=70)


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def make_got10k(root, names=("GOT-10k_Val_000001", "GOT-10k_Val_000002"), n=8, seed=0, meta=True):
  rng = np.random.default_rng(seed)
  split_dir = os.path.join(root, "val")
  _write(os.path.join(split_dir, "list.txt"), "\n".join(names) + "\n")
  truth = {}
  for k, name in enumerate(names):
    d = os.path.join(split_dir, name)
    for i in range(1, n + 1):
      _jpg(os.path.join(d, f"{i:08d}.jpg"))
    gt = np.c_[rng.integers(0, 40, (n, 2)), rng.integers(4, 24, (n, 2))].astype(float)
    cover = rng.integers(0, 9, n)
    cover[0] = 8
    _write(os.path.join(d, "groundtruth.txt"),
           "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in gt))
    _write(os.path.join(d, "cover.label"), "".join(f"{c}\n" for c in cover))
    _write(os.path.join(d, "absence.label"), "".join(f"{int(c == 0)}\n" for c in cover))
    _write(os.path.join(d, "cut_by_image.label"), "0\n" * n)
    if meta:
      _write(os.path.join(d, "meta_info.ini"), "[METAINFO]\nurl: x\nresolution: (64, 48)\n")
    truth[name] = (gt, cover)
  return truth


def test_got10k_reader(tmp_path):
  root = str(tmp_path / "got")
  truth = make_got10k(root)
  bench = datasets.open_benchmark("got10k", root, "val")
  assert bench.names == list(truth)
  seq = bench.sequence("GOT-10k_Val_000002")
  gt, cover = truth["GOT-10k_Val_000002"]
  np.testing.assert_array_equal(seq.ground_truth, gt)
  np.testing.assert_array_equal(seq.cover, cover)
  np.testing.assert_array_equal(seq.target_visible, cover > 0)
  assert seq.image_size == (64, 48) and len(seq.frames) == 8
  assert seq.frames[0].endswith("00000001.jpg") and seq.frames[-1].endswith("00000008.jpg")
  assert datasets.frame_size(seq.frames[0]) == (64, 48)
  assert [s.name for s in datasets.load_dataset("got10k", root, "val")] == list(truth)


@pytest.mark.parametrize("content,match", [
    ("", r"groundtruth.txt: empty file"),
    ("1,2,3,4\n1,2,3\n", r"groundtruth.txt:2: expected 4"),
    ("1,2,3,4\n1,2,abc,4\n", r"groundtruth.txt:2: 'abc' is not a number"),
    ("1,2,3,4\n1,2,nan,4\n", r"groundtruth.txt:2: 'nan' is not a finite"),
    ("1,2,3,4\n" * 5, r"groundtruth.txt: 5 boxes for 8 frames"),
])
def test_got10k_reader_rejects_malformed_groundtruth(tmp_path, content, match):
  root = str(tmp_path / "got")
  make_got10k(root)
  _write(os.path.join(root, "val", "GOT-10k_Val_000001", "groundtruth.txt"), content)
  bench = datasets.open_benchmark("got10k", root, "val")
  with pytest.raises(datasets.DatasetError, match=match):
    bench.sequence("GOT-10k_Val_000001")


def test_reader_layout_errors(tmp_path):
  root = str(tmp_path / "got")
  make_got10k(root)
  with pytest.raises(datasets.DatasetError, match="unknown benchmark 'vot'"):
    datasets.open_benchmark("vot", root, "val")
  with pytest.raises(datasets.DatasetError, match=r"does not look like GOT-10k: expected .*list.txt"):
    datasets.open_benchmark("got10k", root, "train")
  with pytest.raises(datasets.DatasetError, match="does not look like TrackingNet"):
    datasets.open_benchmark("trackingnet", root, "train")
  with pytest.raises(datasets.DatasetError, match="does not look like UAV123"):
    datasets.open_benchmark("uav", root, "test")
  import shutil
  shutil.rmtree(os.path.join(root, "val", "GOT-10k_Val_000001"))
  bench = datasets.open_benchmark("got10k", root, "val")
  with pytest.raises(datasets.DatasetError, match="GOT-10k_Val_000001'? of list.txt has no folder"):
    bench.sequence("GOT-10k_Val_000001")
  _write(os.path.join(root, "val", "GOT-10k_Val_000002", "cover.label"), "8\n" * 3)
  with pytest.raises(datasets.DatasetError, match=r"cover.label: 3 lines, groundtruth.txt has 8"):
    bench.sequence("GOT-10k_Val_000002")
  split_file = str(tmp_path / "names.txt")
  _write(split_file, "GOT-10k_Val_000009\n")
  with pytest.raises(datasets.DatasetError, match="names.txt: 1 sequence"):
    datasets.open_benchmark("got10k", root, "val", split_file)


def test_lasot_reader(tmp_path):
  root = str(tmp_path / "lasot")
  seq_dir = os.path.join(root, "cat", "cat-3")
  os.makedirs(os.path.join(seq_dir, "img"))
  _write(os.path.join(seq_dir, "groundtruth.txt"), "1,2,3,4\n5,6,7,8\n9,10,11,12\n")
  _write(os.path.join(seq_dir, "full_occlusion.txt"), "0,1,0")
  _write(os.path.join(seq_dir, "out_of_view.txt"), "0,0,1\n")
  seq = datasets.load_dataset("lasot", root, "all")[0]
  assert seq.name == "cat-3" and seq.dataset == "lasot"
  np.testing.assert_array_equal(seq.target_visible, [True, False, False])
  assert seq.frames[2].endswith(os.path.join("cat-3", "img", "00000003.jpg"))
  with pytest.raises(datasets.DatasetError, match="280"):
    datasets.open_benchmark("lasot", root, "test")
  _write(os.path.join(seq_dir, "out_of_view.txt"), "0,0\n")
  with pytest.raises(datasets.DatasetError, match=r"out_of_view.txt: 2 flags, expected 3"):
    datasets.load_dataset("lasot", root, "all")
  _write(os.path.join(seq_dir, "out_of_view.txt"), "0,2,0\n")
  with pytest.raises(datasets.DatasetError, match=r"out_of_view.txt:1: '2' is not 0 or 1"):
    datasets.load_dataset("lasot", root, "all")
  assert len(lasot.LASOT_TEST_SEQUENCES) == 280 == len(set(lasot.LASOT_TEST_SEQUENCES))


def test_trackingnet_uav_otb_readers(tmp_path):
  tn = str(tmp_path / "tn")
  for i in range(3):
    _jpg(os.path.join(tn, "TRAIN_0", "frames", "abc_1", f"{i}.jpg"))
  _write(os.path.join(tn, "TRAIN_0", "anno", "abc_1.txt"), "1,2,3,4\n2,3,4,5\n3,4,5,6\n")
  seq = datasets.load_dataset("trackingnet", tn, "train")[0]
  assert seq.frames[0].endswith(os.path.join("abc_1", "0.jpg")) and len(seq) == 3
  os.remove(os.path.join(tn, "TRAIN_0", "frames", "abc_1", "1.jpg"))
  with pytest.raises(datasets.DatasetError, match="frame 1 missing"):
    datasets.load_dataset("trackingnet", tn, "TRAIN_0")

  uav = str(tmp_path / "uav")
  os.makedirs(os.path.join(uav, "data_seq", "UAV123", "uav6"))
  rows = ["NaN,NaN,NaN,NaN" if i % 10 == 3 else f"{i},{i},10,12" for i in range(109)]
  _write(os.path.join(uav, "anno", "UAV123", "uav6.txt"), "\n".join(rows) + "\n")
  names = str(tmp_path / "uav_names.txt")
  _write(names, "uav_uav6\n")
  seq = datasets.load_dataset("uav", uav, "test", names)[0]
  assert seq.dataset == "uav" and len(seq) == 109
  assert np.isnan(seq.ground_truth[3]).all() and seq.frames[0].endswith("000001.jpg")

  otb = str(tmp_path / "otb")
  os.makedirs(os.path.join(otb, "Tiger1", "img"))
  _write(os.path.join(otb, "Tiger1", "groundtruth_rect.txt"),
         "".join(f"{i}\t{i + 1}\t30\t40\n" for i in range(354)))
  seq = datasets.load_dataset("otb", otb, "all")[0]
  assert seq.name == "Tiger1" and len(seq) == 349            # 5 frames omitted (pytracking)
  assert seq.frames[0].endswith("0006.jpg") and seq.ground_truth[0, 0] == 5.0
  with pytest.raises(datasets.DatasetError, match="OTB-100 sequences missing"):
    datasets.open_benchmark("otb", otb, "test")


# ------------------------------------------------------------------------------------------------
# Result files


def test_writers_round_trip_and_match_released_format(tmp_path):
  boxes = np.array([[10.7, 20.2, 30.9, 40.5], [-2.7, 3.0, 5.5, 6.1]])
  ints = np.array([[10, 20, 30, 40], [-2, 3, 5, 6]], float)  # .astype(int) truncates
  out = str(tmp_path / "r")
  p = results.write_pytracking(out, "seq", boxes, np.array([0.5, 0.25]))
  with open(p) as f:
    assert f.read() == "10\t20\t30\t40\n-2\t3\t5\t6\n"
  with open(os.path.join(out, "seq_time.txt")) as f:
    assert f.read() == "0.500000\n0.250000\n"
  g = results.write_got10k(out, "g", boxes, np.array([0.5, 0.25]))
  assert g == os.path.join(out, "g", "g_001.txt")
  with open(g) as f:
    assert f.read() == "10,20,30,40\n-2,3,5,6\n"
  t = results.write_trackingnet(str(tmp_path / "tn"), "seq", boxes)
  for path in (p, g, t):
    np.testing.assert_array_equal(results.read_boxes(path, 2), ints)
  assert results.find_box_files(out, "g") == [g] and results.find_box_files(out, "seq") == [p]
  boxes_found, times = results.load_sequence_results(out, "g", 2)
  np.testing.assert_array_equal(times, [0.5, 0.25])
  # The GOT-10k toolkit's '%.3f' and space-separated files read too.
  _write(str(tmp_path / "f.txt"), "1.500,2.000,3.250,4.000\n5 6 7 8\n")
  np.testing.assert_array_equal(results.read_boxes(str(tmp_path / "f.txt")),
                                [[1.5, 2, 3.25, 4], [5, 6, 7, 8]])
  zip_path = results.pack_zip(out, str(tmp_path / "sub.zip"))
  import zipfile
  with zipfile.ZipFile(zip_path) as zf:
    assert sorted(zf.namelist()) == ["g/g_001.txt", "g/g_time.txt", "seq.txt", "seq_time.txt"]


@pytest.mark.parametrize("content,match", [
    ("1,2,3,4\n1,2,3,4\n", r"r.txt: 2 boxes, expected 3"),
    ("1,2,3,4\n1,2,3\n1,2,3,4\n", r"r.txt:2: expected 4"),
    ("1,2,3,4\n1,2,x,4\n1,2,3,4\n", r"r.txt:2: 'x' is not a number"),
    ("1,2,3,4\n1,2,-3,4\n1,2,3,4\n", r"r.txt:2: negative width"),
    ("1,2,3,4\nnan,2,3,4\n1,2,3,4\n", r"r.txt:2: 'nan' is not a finite"),
])
def test_result_reader_errors(tmp_path, content, match):
  path = str(tmp_path / "r.txt")
  _write(path, content)
  with pytest.raises(results.ResultsError, match=match):
    results.read_boxes(path, 3)


def test_writes_are_atomic(tmp_path, monkeypatch):
  out = str(tmp_path / "r")
  path = results.write_pytracking(out, "seq", np.ones((2, 4)))
  def fail(*a):
    raise OSError("disk full")
  monkeypatch.setattr(os, "fsync", fail)
  with pytest.raises(OSError, match="disk full"):
    results.write_pytracking(out, "seq", np.full((3, 4), 7.0))
  monkeypatch.undo()
  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError, match="disk full"):
    results.write_got10k(out, "seq", np.full((3, 4), 7.0))
  monkeypatch.undo()
  assert sorted(os.listdir(out)) == ["seq", "seq.txt"] and os.listdir(os.path.join(out, "seq")) == []
  np.testing.assert_array_equal(results.read_boxes(path), np.ones((2, 4)))  # the old file, whole
  with pytest.raises(results.ResultsError, match="box 1 is not finite"):
    results.write_pytracking(out, "seq", np.array([[1.0, 2, 3, 4], [np.nan, 2, 3, 4]]))


# ------------------------------------------------------------------------------------------------
# CLI


def test_cli_evaluate_end_to_end(tmp_path, capsys):
  root = str(tmp_path / "got")
  truth = make_got10k(root, names=("A_1", "A_2", "A_3"), n=10, meta=False)  # size from the JPEG
  rng = np.random.default_rng(5)
  ours, released = str(tmp_path / "ours"), str(tmp_path / "released")
  expected_ious, ope_curves = [], []
  for name, (gt, cover) in truth.items():
    pred = gt + rng.integers(-4, 5, gt.shape)
    pred[:, 2:] = np.maximum(pred[:, 2:], 1)
    results.write_got10k(ours, name, pred, np.full(len(gt), 0.02))
    results.write_pytracking(released, name, pred)      # tab-separated, the released tracker's
    expected_ious += ref_got10k_ious(pred.tolist(), gt.tolist(), cover.tolist(), (64, 48))
    ope_curves.append(ref_ope_curves(*ref_ope_errors(pred, gt)))
  out_json, plot_dir = str(tmp_path / "o.json"), str(tmp_path / "plots")
  rc = cli.main(["evaluate", "--benchmark=got10k", f"--root={root}", "--split=val",
                 f"--results={ours}", f"--results={released}", "--name=ours", "--name=released",
                 f"--json={out_json}", f"--plots={plot_dir}"])
  text = capsys.readouterr().out
  assert rc == 0
  assert "| AO" in text and "SR0.75" in text and "ours" in text and "released" in text
  with open(out_json) as f:
    blob = json.load(f)
  ao = 100 * sum(expected_ious) / len(expected_ious)
  for label in ("ours", "released"):
    m = blob["trackers"][label]["metrics"]
    assert m["AO"] == pytest.approx(ao, rel=1e-12)
    assert m["SR0.5"] == pytest.approx(100 * np.mean(np.array(expected_ious) > 0.5))
    assert f"{ao:0.2f}" in text
  assert blob["trackers"]["ours"]["metrics"]["FPS"] == pytest.approx(50.0)
  assert blob["trackers"]["released"]["metrics"]["FPS"] is None
  assert set(blob["trackers"]["ours"]["per_sequence"]) == set(truth)
  with open(os.path.join(plot_dir, "got10k_success.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"

  # pytracking OPE on the same files.
  rc = cli.main(["evaluate", "--benchmark=got10k", f"--root={root}", "--split=val",
                 f"--results={released}", "--protocol=ope", f"--json={out_json}",
                 f"--plots={plot_dir}"])
  assert rc == 0
  with open(out_json) as f:
    m = json.load(f)["trackers"]["released"]["metrics"]
  success = np.mean([c[0] for c in ope_curves], axis=0) * 100
  assert m["AUC"] == pytest.approx(success.mean())
  assert m["Precision"] == pytest.approx(np.mean([c[1][20] for c in ope_curves]) * 100)
  assert m["NormPrecision"] == pytest.approx(np.mean([c[2][20] for c in ope_curves]) * 100)
  assert sorted(os.listdir(plot_dir)) == ["got10k_norm_precision.png", "got10k_precision.png",
                                          "got10k_success.png"]

  # A sequence without results: an error naming it, or scored without it on request.
  os.remove(os.path.join(released, "A_2.txt"))
  capsys.readouterr()
  rc = cli.main(["evaluate", "--benchmark=got10k", f"--root={root}", "--split=val",
                 f"--results={released}"])
  assert rc == 2 and "'A_2'" in capsys.readouterr().err
  rc = cli.main(["evaluate", "--benchmark=got10k", f"--root={root}", "--split=val",
                 f"--results={released}", "--allow-missing", f"--json={out_json}"])
  assert rc == 0 and "scored 2 / 3 sequences; no results for 1: A_2" in capsys.readouterr().out
  with open(out_json) as f:
    assert json.load(f)["trackers"]["released"]["missing"] == ["A_2"]
  # A malformed result is an error even with --allow-missing.
  _write(os.path.join(released, "A_3.txt"), "1,2,3,4\n")
  rc = cli.main(["evaluate", "--benchmark=got10k", f"--root={root}", "--split=val",
                 f"--results={released}", "--allow-missing"])
  assert rc == 2 and "A_3.txt: 1 boxes, expected 10" in capsys.readouterr().err


def test_cli_pack_got10k_test(tmp_path, capsys):
  root = str(tmp_path / "got")
  d = os.path.join(root, "test", "T_1")
  for i in range(1, 5):
    _jpg(os.path.join(d, f"{i:08d}.jpg"))
  _write(os.path.join(d, "groundtruth.txt"), "1,2,3,4\n")
  _write(os.path.join(root, "test", "list.txt"), "T_1\n")
  res = str(tmp_path / "res")
  results.write_pytracking(res, "T_1", np.tile([1.0, 2, 3, 4], (4, 1)), np.full(4, 0.1))
  # Evaluating a withheld split is refused with a pointer to `pack`.
  rc = cli.main(["evaluate", "--benchmark=got10k", f"--root={root}", "--split=test",
                 f"--results={res}"])
  assert rc == 2 and "pack" in capsys.readouterr().err
  zip_path = str(tmp_path / "sub.zip")
  assert cli.main(["pack", "--benchmark=got10k", f"--root={root}", f"--results={res}",
                   f"--out={zip_path}"]) == 0
  import zipfile
  with zipfile.ZipFile(zip_path) as zf:
    assert sorted(zf.namelist()) == ["T_1/T_1_001.txt", "T_1/T_1_time.txt"]
    assert zf.read("T_1/T_1_001.txt").decode() == "1,2,3,4\n" * 4
