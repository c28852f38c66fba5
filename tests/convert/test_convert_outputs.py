"""convert's outputs: a finished one is kept unless --overwrite, every write goes to a temporary
sibling renamed into place (never half-written, no leftovers), and each subcommand's --help."""
import os

import numpy as np
import pytest

from dropmae_jax.convert import io
from dropmae_jax.convert import layout
from dropmae_jax.convert import outputs
from dropmae_jax.convert.__main__ import build_parser, main as convert_main

from test_convert import GRID, fresh_params, randomized, save_pth, tiny_config  # noqa: I100


class Boom(RuntimeError):
  pass


@pytest.mark.timeout(60)
def test_staged_file_replaces_at_once_or_not_at_all(tmp_path):
  path = tmp_path / "sub" / "out.pth"
  with outputs.staged_file(str(path)) as tmp:
    assert os.path.dirname(tmp) == str(path.parent) and not os.path.exists(tmp)
    open(tmp, "w").write("first")
    assert not path.exists()
  assert path.read_text() == "first"
  with pytest.raises(Boom):
    with outputs.staged_file(str(path)) as tmp:
      open(tmp, "w").write("half")
      raise Boom()
  assert path.read_text() == "first"
  assert os.listdir(path.parent) == ["out.pth"]


@pytest.mark.timeout(60)
def test_staged_dir_swaps_whole_keeps_other_files_and_never_half_writes(tmp_path):
  out = tmp_path / "imp"
  ours = ("params", "config.json", "extra.json")

  def write(staging, tag, extra=False):
    os.makedirs(os.path.join(staging, "params"))
    open(os.path.join(staging, "params", "data"), "w").write(tag)
    open(os.path.join(staging, "config.json"), "w").write(tag)
    if extra:
      open(os.path.join(staging, "extra.json"), "w").write(tag)

  with outputs.staged_dir(str(out), ours) as staging:
    write(staging, "one", extra=True)
    assert not out.exists()
  assert sorted(os.listdir(out)) == ["config.json", "extra.json", "params"]
  with pytest.raises(Boom):
    with outputs.staged_dir(str(out), ours) as staging:
      write(staging, "two")
      raise Boom()
  assert (out / "config.json").read_text() == "one" and (out / "params" / "data").read_text() == "one"
  with outputs.staged_dir(str(out), ours) as staging:   # only ours inside: replaced whole
    write(staging, "three")
  assert sorted(os.listdir(out)) == ["config.json", "params"]
  assert (out / "params" / "data").read_text() == "three"
  (out / "notes.txt").write_text("mine")                # a file of the user's: it stays
  (out / "extra.json").write_text("stale")
  with outputs.staged_dir(str(out), ours) as staging:
    write(staging, "four")
  assert sorted(os.listdir(out)) == ["config.json", "notes.txt", "params"]
  assert (out / "notes.txt").read_text() == "mine" and (out / "config.json").read_text() == "four"
  empty = tmp_path / "empty"
  empty.mkdir()
  with outputs.staged_dir(str(empty), ours) as staging:
    write(staging, "five")
  assert (empty / "config.json").read_text() == "five"
  assert sorted(os.listdir(tmp_path)) == ["empty", "imp"]   # no staging or old folders left


@pytest.mark.timeout(60)
def test_a_failed_save_keeps_the_earlier_output(tmp_path, monkeypatch):
  config = tiny_config()
  params = {"w": np.arange(4, dtype=np.float32)}
  io.save_params(str(tmp_path / "imp"), params, config)
  real_wait = io.ocp.StandardCheckpointer.wait_until_finished

  def failing_wait(self):   # the arrays were written, then the save failed (a full disk...)
    real_wait(self)
    raise Boom("disk full")

  monkeypatch.setattr(io.ocp.StandardCheckpointer, "wait_until_finished", failing_wait)
  with pytest.raises(Boom):
    io.save_params(str(tmp_path / "imp"), {"w": np.zeros(4, np.float32)}, config)
  monkeypatch.undo()
  back, _ = io.load_params(str(tmp_path / "imp"))
  np.testing.assert_array_equal(back["w"], params["w"])
  assert sorted(os.listdir(tmp_path)) == ["imp"]


@pytest.mark.timeout(120)
def test_import_and_export_keep_finished_outputs(tmp_path, capsys):
  state = layout.params_to_state_dict(randomized(fresh_params(tiny_config()), seed=9), grid=GRID)
  src = str(tmp_path / "released.pth")
  save_pth(src, state)
  imp = tmp_path / "imp"
  assert convert_main(["import", src, "--out", str(imp)]) == 0
  stamp = os.path.getmtime(imp / "config.json")
  assert convert_main(["import", src, "--out", str(imp)]) == 2
  err = capsys.readouterr().err
  assert err.strip() == (f"error: --out {imp}: already holds an earlier output (config.json, "
                         "params); pass --overwrite to replace it (nothing was written)")
  assert os.path.getmtime(imp / "config.json") == stamp
  assert convert_main(["import", src, "--out", str(imp), "--overwrite"]) == 0

  out = tmp_path / "out.pth"
  out.write_bytes(b"someone else's file")
  assert convert_main(["export", str(imp), "--out", str(out)]) == 2
  assert "already exists; pass --overwrite" in capsys.readouterr().err
  assert out.read_bytes() == b"someone else's file"
  assert convert_main(["export", str(imp), "--out", str(out), "--overwrite"]) == 0
  # --safetensors writes out.safetensors: that file is the one checked.
  assert convert_main(["export", str(imp), "--out", str(out), "--safetensors"]) == 0
  assert convert_main(["export", str(imp), "--out", str(out), "--safetensors"]) == 2
  assert "out.safetensors: already exists" in capsys.readouterr().err
  # A folder where a file goes (and the other way round) is refused whatever --overwrite says.
  assert convert_main(["export", str(imp), "--out", str(imp), "--overwrite"]) == 2
  assert "is a folder" in capsys.readouterr().err
  assert convert_main(["import", src, "--out", str(out), "--overwrite"]) == 2
  assert "is a file" in capsys.readouterr().err
  leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".")]
  assert not leftovers


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["import", "export", "import-tracker", "export-tracker"])
def test_help_names_every_argument_its_default_and_an_example(command, capsys):
  with pytest.raises(SystemExit) as exit_info:
    convert_main([command, "--help"])
  assert exit_info.value.code == 0
  text = capsys.readouterr().out
  assert f"example:\n  python -m dropmae_jax.convert {command} " in text
  sub = build_parser()._subparsers._group_actions[0].choices[command]  # pylint: disable=protected-access
  for action in sub._actions:  # pylint: disable=protected-access
    if action.dest == "help":
      continue
    assert action.help, action.dest
    if action.option_strings:
      assert "default" in action.help or "required" in action.help, action.dest
