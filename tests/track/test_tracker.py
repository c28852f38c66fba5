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
from dropmae_jax.track import runner as runner_lib
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

  def read(path):   # the released reader (pytracking's opencv_loader)
    import cv2
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

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


@pytest.mark.timeout(300)
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


@pytest.mark.timeout(300)
@pytest.mark.parametrize("slots, n_devices", [(2, 1), (2, 2)])
def test_batched_runner_equals_one_sequence_tracker(got10k, weights, slots, n_devices):
  """3 sequences through 2 slots (a slot is refilled mid-run), on 1 and on 2 devices."""
  model, variables, _ = weights
  settings = tracker_lib.TrackerSettings.from_config(small_config())
  sequences = datasets.load_dataset("got10k", got10k, "val")
  single = tracker_lib.Tracker(model, variables, settings)
  expected = {s.name: tracker_lib.track_sequence(single, s).boxes for s in sequences}
  counted = []
  # Two devices: frames uploaded ahead of each step, as on an accelerator.
  with runner_lib.BatchedRunner(model, variables, settings, slots=slots,
                                 devices=jax.devices()[:n_devices],
                                 upload_ahead=n_devices > 1) as runner:
    got = {r.sequence.name: r for r in runner.run(sequences, on_frames=counted.append)}
  assert sorted(got) == sorted(expected)
  for name, result in got.items():
    np.testing.assert_allclose(result.boxes, expected[name], atol=1e-3)
    assert result.times.shape == (len(result.boxes),) and (result.times > 0).all()
  assert sum(counted) == sum(len(s.frames) - 1 for s in sequences)
  assert max(counted) == 2


@pytest.mark.timeout(300)
def test_batched_runner_pads_frames_of_mixed_sizes(got10k, weights, tmp_path):
  """Sequences of two frame sizes share steps (frames padded to a common bucket) and a
  one-frame sequence passes through: every box is still the one-sequence tracker's."""
  model, variables, _ = weights
  settings = tracker_lib.TrackerSettings.from_config(small_config())
  other = str(tmp_path / "other")
  make_tracking_sequences.make_dataset(other, train=0, val=2, frames=16, size=(136, 100), seed=4,
                                       progress=False)
  small = datasets.load_dataset("got10k", other, "val")
  one_frame = datasets.Sequence(name="single", frames=small[0].frames[:1],
                                ground_truth=small[0].ground_truth[:1], dataset="got10k")
  sequences = [small[0], *datasets.load_dataset("got10k", got10k, "val")[:2], one_frame, small[1]]
  single = tracker_lib.Tracker(model, variables, settings)
  expected = {s.name: tracker_lib.track_sequence(single, s).boxes for s in sequences}
  with runner_lib.BatchedRunner(model, variables, settings, slots=3,
                                 devices=jax.devices()[:1]) as runner:
    got = {r.sequence.name: r for r in runner.run(sequences)}
  assert sorted(got) == sorted(expected)
  for name, result in got.items():
    np.testing.assert_allclose(result.boxes, expected[name], atol=1e-3)
    assert result.times.shape == (len(result.boxes),)
  assert runner.stats.frames == sum(len(s.frames) - 1 for s in sequences)
  assert runner.stats.decode > 0 and runner.stats.host > 0


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
  # A run that finishes no sequence leaves no --out behind (nor the folders above it).
  first = datasets.load_dataset("got10k", str(broken), "val")[0]
  with open(first.frames[3], "wb") as f:
    f.write(b"not a jpeg either")
  fresh = tmp_path / "new" / "results"
  assert track_main(["run", f"--weights={d / 'dir'}", "--benchmark=got10k", "--split=val",
                     f"--root={broken}", f"--out={fresh}", f"--sequences={first.name}"]) == 2
  err = capsys.readouterr().err
  assert first.frames[3] in err.splitlines()[-1] and "Traceback" not in err
  assert not (tmp_path / "new").exists()


def _checkpoint_workdir(workdir, variables, config, step, task="droptrack"):
  """A fine-tuning run's WORKDIR/checkpoints/<step> as the trainer writes it (train state with
  params, batch_stats and optimizer state; meta with the config and the fingerprint)."""
  from dropmae_jax.train import checkpoint
  with config.unlocked():
    config.task = task
  state = {"params": variables["params"], "batch_stats": variables["batch_stats"],
           "opt_state": jax.tree.map(np.zeros_like, variables["params"]),
           "step": np.int32(step)}
  manager = checkpoint.Checkpointer(str(workdir), keep=5, async_save=False)
  manager.save(step, state, meta={"counters": {}, "config": config.to_json_best_effort()})
  manager.wait_until_finished()
  manager.close()


def _same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.mark.timeout(300)
def test_weights_source_reads_imported_folders_and_finetuning_workdirs(weights, tmp_path):
  from dropmae_jax.track import task as droptrack
  from dropmae_jax.track import weights_source
  _, variables, d = weights
  got, config, described = weights_source.load_tracker_weights(str(d / "dir"))
  _same(got, variables)
  assert config.model.variant == "micro/16" and "imported tracker" in described

  # A finished fine-tuning run: its tracker_weights export.
  workdir = tmp_path / "run"
  io.save_tracker(str(workdir / droptrack.EXPORT_DIR), variables, small_config())
  got, _, described = weights_source.load_tracker_weights(str(workdir))
  _same(got, variables)
  assert droptrack.EXPORT_DIR in described
  # The run went on after that export (resumed for more steps): its newest checkpoint is newer.
  later = jax.tree.map(lambda x: x + 1, variables)
  old = os.path.getmtime(workdir / droptrack.EXPORT_DIR / io.CONFIG_FILE) - 100
  os.utime(workdir / droptrack.EXPORT_DIR / io.CONFIG_FILE, (old, old))
  _checkpoint_workdir(workdir, later, small_config(), step=7)
  got, config, described = weights_source.load_tracker_weights(str(workdir))
  _same(got, later)
  assert "checkpoint step 7" in described and config.model.variant == "micro/16"
  # A run without an export yet (stopped early, or still training): its checkpoint.
  only_checkpoints = tmp_path / "early"
  _checkpoint_workdir(only_checkpoints, later, small_config(), step=3)
  got, _, described = weights_source.load_tracker_weights(str(only_checkpoints))
  _same(got, later)

  def error(spec):
    with pytest.raises(io.ConvertError) as e:
      weights_source.load_tracker_weights(spec)
    assert "\n" not in str(e.value)
    return str(e.value)

  assert error(str(tmp_path / "missing")) == f"{tmp_path / 'missing'}: no such folder"
  assert "a file, not a tracker folder" in error(str(d / "net.pth.tar"))
  (tmp_path / "empty").mkdir()
  assert "create an imported tracker with `python -m dropmae_jax.convert import-tracker`" in (
      error(str(tmp_path / "empty")))
  pretraining = tmp_path / "pretraining"
  _checkpoint_workdir(pretraining, variables, small_config(), step=2, task="pretrain")
  assert "'pretrain' run's, not a tracker's" in error(str(pretraining))


@pytest.mark.timeout(300)
def test_run_takes_a_workdir_and_the_weights_config(got10k, weights, tmp_path, capsys):
  """`run --weights=WORKDIR` without --config tracks as the imported folder with --config does."""
  _, variables, d = weights
  name = datasets.load_dataset("got10k", got10k, "val")[0].name
  common = ["--benchmark=got10k", "--split=val", f"--root={got10k}", f"--sequences={name}",
            "--batch-sequences=1"]
  reference = tmp_path / "reference"
  assert track_main(["run", f"--config={d / 'tracker_config.py'}", f"--weights={d / 'dir'}",
                     f"--out={reference}"] + common) == 0
  workdir = tmp_path / "finetune"
  _checkpoint_workdir(workdir, variables, small_config(), step=4)
  out = tmp_path / "from_workdir"
  assert track_main(["run", f"--weights={workdir}", f"--out={out}"] + common) == 0
  assert "checkpoint step 4); config: the weights' config.json" in capsys.readouterr().out
  box_file = os.path.join(name, f"{name}_001.txt")
  assert (reference / box_file).read_text() == (out / box_file).read_text()
  # Overrides apply to the weights' config; one that changes the network is refused.
  assert track_main(["run", f"--weights={workdir}", f"--out={tmp_path / 'x'}",
                     "--config.tracker.serch_factor=4"] + common) == 2
  assert "did you mean 'tracker.search_factor'?" in capsys.readouterr().err
  assert track_main(["run", f"--weights={workdir}", f"--out={tmp_path / 'x'}",
                     "--config.model.search_size=256"] + common) == 2
  assert "but --config.model.search_size sets 256" in capsys.readouterr().err
  assert track_main(["run", f"--weights={tmp_path / 'nowhere'}", f"--out={tmp_path / 'x'}"]
                    + common) == 2
  assert f"{tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("argv, unknown, nearest", [
    (["--weigths=W", "--benchmark=got10k", "--root=R", "--out=O"], "--weigths", "--weights"),
    (["--weights=W", "--benchmark=got10k", "--root=R", "--ouput=O"], "--ouput", "--out"),
])
def test_run_names_a_misspelt_flag_and_the_nearest(argv, unknown, nearest, capsys):
  with pytest.raises(SystemExit) as e:
    track_main(["run"] + argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err == (f"python -m dropmae_jax.track run: error: unknown flag {unknown}; did you mean "
                 f"{nearest}?\n")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["run", "evaluate", "pack", "video"])
def test_subcommand_help_describes_every_argument(command, capsys):
  with pytest.raises(SystemExit) as e:
    track_main([command, "--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert f"example:\n  python -m dropmae_jax.track {command} " in out
  options = out.split("options:")[1].split("example:")[0]
  # Every argument's line has a description after its metavar.
  entries = [e for e in options.split("\n  -") if e.strip()][1:]   # [0] is --help
  assert entries and all(len(e.split()) > 2 for e in entries), entries
  assert "(required)" in options and "(default:" in options
