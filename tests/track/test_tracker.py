"""The online tracker against the released loop rebuilt in the test (the PyTorch OSTrack-CE of
test_ostrack.py, the cv2 crop of test_track_crop.py, map-back and clipping written out from
OSTrack `lib/test/tracker/ostrack.py`), the batched runner against the one-sequence tracker, and
`track run`."""
import math
import os

import jax
import numpy as np
import pytest
import torch

from dropmae_jax.convert import io
from dropmae_jax.convert.__main__ import main as convert_main
from dropmae_jax.track import synthetic as make_tracking_sequences
from dropmae_jax.track import ostrack
from dropmae_jax.track import datasets
from dropmae_jax.track.evaluation import results
from dropmae_jax.track import tracker as tracker_lib
from dropmae_jax.track.__main__ import main as track_main

from test_ostrack import CONFIG_SOURCE, RefOSTrack, randomize, small_config  # noqa: I100
from test_track_crop import _released_sample_target

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def got10k(tmp_path_factory):
  """Three synthetic GOT-10k val sequences (16-18 frames) made from the bundled real clips."""
  root = str(tmp_path_factory.mktemp("got10k") / "data")
  make_tracking_sequences.make_dataset(root, train=0, val=3, frames=16, size=(160, 120), seed=3,
                                       progress=False)
  return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  """A small tracker (random, non-trivial weights) as an imported DIR and as a released .pth.tar."""
  d = tmp_path_factory.mktemp("weights")
  model = ostrack.OSTrackCE.from_config(small_config())
  variables = randomize(ostrack.variable_shapes(model), seed=5)
  io.save_tracker(str(d / "dir"), variables, small_config())
  assert convert_main(["export-tracker", str(d / "dir"), "--out", str(d / "net.pth.tar")]) == 0
  (d / "tracker_config.py").write_text(CONFIG_SOURCE)
  return model, variables, d


def released_track(net: RefOSTrack, frames, init_box, template_size, search_size):
  """OSTrack's lib/test/tracker/ostrack.py written out: crops with cv2, the torch network,
  hann2d window, cal_bbox at the argmax, map_box_back, clip_box(margin=10)."""
  def prep(crop):
    x = (crop.astype(np.float64) / 255 - MEAN) / STD
    return torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1)[None]

  def read(path):
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB"))

  z, _, _ = _released_sample_target(read(frames[0]), list(init_box), 2.0, template_size)
  z = prep(z)
  feat = search_size // 16
  k = torch.arange(1, feat + 1, dtype=torch.float64)
  hann = 0.5 * (1 - torch.cos(2 * math.pi * k / (feat + 1)))
  window = (hann[:, None] * hann[None, :]).float()
  state = [float(v) for v in init_box]
  boxes = [list(state)]
  for path in frames[1:]:
    image = read(path)
    h_img, w_img = image.shape[:2]
    x, resize_factor, _ = _released_sample_target(image, state, 5.0, search_size)
    with torch.no_grad():
      out = net(z, prep(x))
    response = window * out["score_map"][0]
    idx = int(torch.argmax(response.flatten()))
    iy, ix = idx // feat, idx % feat
    size = out["size_map"][0, iy, ix]
    offset = out["offset_map"][0, iy, ix]
    box = [(ix + float(offset[0])) / feat, (iy + float(offset[1])) / feat, float(size[0]),
           float(size[1])]
    cx, cy, w, h = (v * search_size / resize_factor for v in box)
    half = 0.5 * search_size / resize_factor
    cx_real = cx + (state[0] + 0.5 * state[2] - half)
    cy_real = cy + (state[1] + 0.5 * state[3] - half)
    x1, y1 = cx_real - 0.5 * w, cy_real - 0.5 * h
    x2, y2 = x1 + w, y1 + h
    x1, x2 = min(max(0, x1), w_img - 10), min(max(10, x2), w_img)
    y1, y2 = min(max(0, y1), h_img - 10), min(max(10, y2), h_img)
    state = [x1, y1, max(10, x2 - x1), max(10, y2 - y1)]
    boxes.append(list(state))
  return np.asarray(boxes)


def test_tracker_matches_released_loop(got10k, weights):
  model, variables, d = weights
  net = RefOSTrack()
  net.load_state_dict(torch.load(str(d / "net.pth.tar"), weights_only=True)["net"], strict=True)
  net.eval()
  settings = tracker_lib.TrackerSettings.from_config(small_config())
  tracker = tracker_lib.Tracker(model, variables, settings)
  seq = datasets.load_dataset("got10k", got10k, "val")[0]
  ours = tracker_lib.track_sequence(tracker, seq).boxes
  ref = released_track(net, seq.frames, seq.ground_truth[0], settings.template_size,
                       settings.search_size)
  assert ours.shape == (len(seq.frames), 4)
  np.testing.assert_allclose(ours, ref, atol=1e-3)
  # The target moves: a tracker that never moved would not pass the test above.
  assert np.abs(np.diff(ref[:, :2], axis=0)).max() > 1


@pytest.mark.parametrize("slots, n_devices", [(2, 1), (2, 2)])
def test_batched_runner_equals_one_sequence_tracker(got10k, weights, slots, n_devices):
  """3 sequences through 2 slots (a slot is refilled mid-run), on 1 and on 2 devices."""
  model, variables, _ = weights
  settings = tracker_lib.TrackerSettings.from_config(small_config())
  sequences = datasets.load_dataset("got10k", got10k, "val")
  single = tracker_lib.Tracker(model, variables, settings)
  expected = {s.name: tracker_lib.track_sequence(single, s).boxes for s in sequences}
  counted = []
  with tracker_lib.BatchedRunner(model, variables, settings, slots=slots,
                                 devices=jax.devices()[:n_devices]) as runner:
    got = {r.sequence.name: r for r in runner.run(sequences, on_frames=counted.append)}
  assert sorted(got) == sorted(expected)
  for name, result in got.items():
    np.testing.assert_allclose(result.boxes, expected[name], atol=1e-3)
    assert result.times.shape == (len(result.boxes),) and (result.times > 0).all()
  assert sum(counted) == sum(len(s.frames) - 1 for s in sequences)
  assert max(counted) == 2


def test_run_then_evaluate(got10k, weights, tmp_path, capsys):
  _, _, d = weights
  out = str(tmp_path / "results")
  argv = ["run", f"--config={d / 'tracker_config.py'}", f"--weights={d / 'dir'}",
          "--benchmark=got10k", "--split=val", f"--root={got10k}", f"--out={out}",
          "--batch-sequences=2"]
  assert track_main(argv) == 0
  sequences = datasets.load_dataset("got10k", got10k, "val")
  for seq in sequences:
    boxes = results.read_boxes(os.path.join(out, seq.name, f"{seq.name}_001.txt"), len(seq.frames))
    np.testing.assert_array_equal(boxes[0], np.trunc(seq.ground_truth[0]))
    assert len(results.read_times(os.path.join(out, seq.name, f"{seq.name}_time.txt"))) == len(
        seq.frames)
  capsys.readouterr()
  assert track_main(argv) == 0                      # a rerun finds everything done
  assert "3 of 3 sequences already have results" in capsys.readouterr().out
  report = str(tmp_path / "report.json")
  assert track_main(["evaluate", "--benchmark=got10k", f"--root={got10k}", "--split=val",
                     f"--results={out}", f"--json={report}"]) == 0
  assert "AO" in capsys.readouterr().out
  import json
  ao = json.load(open(report))["trackers"]["results"]["metrics"]["AO"]
  assert 0 <= ao <= 100


def test_run_reports_bad_input_in_one_line(got10k, weights, tmp_path, capsys):
  _, _, d = weights
  broken = tmp_path / "broken"
  import shutil
  shutil.copytree(got10k, broken)
  seq = datasets.load_dataset("got10k", str(broken), "val")[1]
  with open(seq.frames[5], "wb") as f:
    f.write(b"not a jpeg")
  out = str(tmp_path / "results")
  base = [f"--weights={d / 'dir'}", "--benchmark=got10k", "--split=val", f"--root={broken}",
          f"--out={out}", "--batch-sequences=1"]
  assert track_main(["run", f"--config={d / 'tracker_config.py'}"] + base) == 2
  err = capsys.readouterr().err
  assert seq.frames[5] in err and "Traceback" not in err
  assert not os.path.exists(os.path.join(out, seq.name, f"{seq.name}_001.txt"))
  leftovers = [f for _, _, fs in os.walk(out) for f in fs if "tmp" in f or "partial" in f]
  assert not leftovers
  # A typo in an override names the field; the released-size config refuses the small weights.
  assert track_main(["run", f"--config={d / 'tracker_config.py'}", "--config.tracker.serch_factor=4"]
                    + base) == 2
  assert "serch_factor" in capsys.readouterr().err
  assert track_main(["run", "--config=droptrack_got10k"] + base) == 2
  assert "holds model.variant='micro/16'" in capsys.readouterr().err
