"""The synthetic DAVIS set (exact masks), the maker and `vos propagate` / `vos evaluate` command
lines, and label propagation during pre-training."""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from dropmae_jax.vos import __main__ as vos_cli
from dropmae_jax.vos import davis
from dropmae_jax.vos import during_training

from vos_cases import micro_params, released_file, synthetic_root  # noqa: F401,I100  (fixtures)


# ------------------------------------------------------------------------------------------
# synthetic set, CLI, during training


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

