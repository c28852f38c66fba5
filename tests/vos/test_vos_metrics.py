"""J and F as davis2017-evaluation computes them: hand-made masks with known answers, OpenCV's
dilate (disk), loops written in numpy; the evaluator end to end and on bad results."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dropmae_jax.vos import __main__ as vos_cli
from dropmae_jax.vos import davis
from dropmae_jax.vos import metrics

from vos_cases import square_ids, write_davis  # noqa: I100


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

