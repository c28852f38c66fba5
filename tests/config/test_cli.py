"""The command line a new user meets: configs from anywhere, one-line errors, --help, quiet logs,
skipped videos summarised, a closing summary, an honest exit from build_frame_store."""
import json
import logging
import os
import re
import subprocess
import sys

import ml_collections
import pytest

from conftest import FAST_COMPILE_XLA_FLAGS
from conftest import write_video
from dropmae_jax.config import cli as cli_config
from dropmae_jax.config import fields as config_fields
from dropmae_jax.config import loading as config_loading
from dropmae_jax.config import defaults as configlib
from dropmae_jax.config.loading import ConfigError
from dropmae_jax.data import build_frame_store
from dropmae_jax.train import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "configs")


def cli_env() -> dict:
  # One CPU device (the tiny batch need not divide conftest's 8 fake ones), no TPU probing;
  # conftest's fast-compile XLA options (compiling is most of a tiny run's time).
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  env["XLA_FLAGS"] = FAST_COMPILE_XLA_FLAGS
  return env


def run_main(args, cwd, timeout=120):
  return subprocess.run([sys.executable, "-m", "dropmae_jax.main", *args], cwd=cwd,
                        env=cli_env(), capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------- finding configs

def test_configs_load_by_name_and_by_path_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)   # not the repository root
  names = config_loading.installed_configs()
  assert {"demo", "k400", "k400_400ep", "k700"} <= set(names)
  assert config_loading.load_config("k700").epochs == 800
  # The README's relative path works outside the repository too; an absolute path as well.
  assert config_loading.load_config("configs/demo.py").model.variant == "micro/16"
  assert config_loading.load_config(
      os.path.join(CONFIGS, "k700.py")).data.root.endswith("700/train")
  own = tmp_path / "mine.py"
  own.write_text("from dropmae_jax.config import defaults as configlib\n\ndef get_config():\n"
                 "  c = configlib.pretrain_defaults()\n  c.seed = 7\n  return c\n")
  assert config_loading.load_config("mine.py").seed == 7


def test_k400_is_the_released_1600_epoch_recipe():
  k400, k400_400, k700 = (config_loading.load_config(n) for n in ("k400", "k400_400ep", "k700"))
  # jimmy-dq/DropMAE: the released K400 checkpoint and its log (`k400_1600E_training_log.txt`)
  # are 1600 epochs; its README's example command says 400.
  assert k400.epochs == 1600 and k400_400.epochs == 400
  for c in (k400, k400_400):
    assert c.data.root == "/data/kinetics400/train"
    # Everything but the schedule is the released recipe shared with K700.
    for field in ("batch_size", "blr", "warmup_epochs", "model.variant", "model.mask_ratio",
                  "asad.drop_ratio", "asad.temporal", "data.max_gap", "weight_decay", "b2"):
      get = lambda cfg: eval("cfg." + field, {"cfg": cfg})  # noqa: E731
      assert get(c) == get(k700), field


def test_missing_config_names_what_exists(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ConfigError) as err:
    config_loading.load_config("k7000")
  message = str(err.value)
  assert "\n" not in message and "'k7000'" in message
  assert "demo" in message and "k700" in message and "did you mean 'k700'?" in message
  with pytest.raises(ConfigError, match=r"config file 'elsewhere/x\.py' does not exist"):
    config_loading.load_config("elsewhere/x.py")


def test_broken_config_file_names_file_and_line(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("from dropmae_jax.config import defaults as configlib\n\ndef get_config():\n"
                 "  c = configlib.pretrain_defaults()\n  c.seed = undefined_name\n  return c\n")
  with pytest.raises(ConfigError, match=r"bad\.py:5: NameError: name 'undefined_name'"):
    config_loading.load_config(str(bad))
  empty = tmp_path / "empty.py"
  empty.write_text("x = 1\n")
  with pytest.raises(ConfigError, match="defines no get_config"):
    config_loading.load_config(str(empty))


# ------------------------------------------------------------------------------ overrides

def test_misspelled_field_suggests_the_nearest_name():
  with pytest.raises(ConfigError) as err:
    config_loading.load_config("k700", ["--config.batchsize=8"])
  assert str(err.value) == "no field 'batchsize' in config; did you mean 'batch_size'?"
  with pytest.raises(ConfigError, match="did you mean 'model.variant'"):
    config_loading.load_config("k700", ["model.varient=L/16"])
  with pytest.raises(ConfigError, match="no field 'zzz' in config; run with --help"):
    config_loading.load_config("k700", ["zzz=1"])


@pytest.mark.parametrize("override,message", [
    ("batch_size=eight", "config.batch_size expects an int, got 'eight'"),
    ("blr=fast", "config.blr expects a float, got 'fast'"),
    ("model.remat=maybe", "config.model.remat expects a bool (true/false), got 'maybe'"),
    ("data.crop_scale=big", "config.data.crop_scale expects a tuple like (0.2, 1.0), got 'big'"),
    ("model=1", "config.model is a group of fields"),
    ("batch_size", "--config.batch_size needs a value"),
])
def test_bad_values_name_field_type_and_value(override, message):
  with pytest.raises(ConfigError) as err:
    config_loading.load_config("k700", [override])
  assert message in str(err.value) and "\n" not in str(err.value)


def test_overrides_parse_as_the_field_type_and_lock_the_config():
  c = config_loading.load_config("demo", [
      "batch_size=8", "--config.blr=2", "model.remat", "data.hflip=false",
      "data.crop_scale=(0.5, 1)", "data.root=/x/y", "model.variant=S/16"])
  assert c.batch_size == 8 and isinstance(c.batch_size, int)
  assert c.blr == 2.0 and isinstance(c.blr, float)
  assert c.model.remat is True and c.data.hflip is False
  assert c.data.crop_scale == (0.5, 1.0) and all(isinstance(v, float) for v in c.data.crop_scale)
  assert c.data.root == "/x/y" and c.model.variant == "S/16"
  with pytest.raises(AttributeError):   # locked: a typo in code cannot add a field
    c.batchsize = 8


def test_split_config_args_takes_every_spelling():
  spec, overrides, rest, wants_help = cli_config.split_config_args(
      ["--config", "k700", "--workdir=/w", "--config.seed", "3", "--config.model.remat",
       "--config.batch_size=8", "--verbosity=1"])
  assert spec == "k700" and not wants_help
  assert overrides == ["--config.seed=3", "--config.model.remat", "--config.batch_size=8"]
  assert rest == ["--workdir=/w", "--verbosity=1"]
  assert cli_config.split_config_args(["-h"])[3] and cli_config.split_config_args(["--help"])[3]


# ------------------------------------------------------------------------------------ help

def test_field_docs_come_from_the_source_comments():
  source = '''
import ml_collections

def other():
  c = ml_collections.ConfigDict()
  c.a = 1   # not this function's

def defaults():
  c = ml_collections.ConfigDict()
  # --- a section header, not a field's doc ---
  c.lr = 0.1            # learning rate
  c.name = "x#y"        # a '#' inside the string is not the comment
  c.model = ml_collections.ConfigDict()
  c.model.size = (1,
                  2)    # spans two lines
  c.undocumented = 3
  return c
'''
  docs = config_fields.parse_field_docs(source, "defaults")
  assert docs == {"lr": "learning rate", "name": "a '#' inside the string is not the comment",
                  "model.size": "spans two lines"}
  assert config_fields.parse_field_docs(source, "other") == {"a": "not this function's"}


def test_every_default_field_is_documented():
  docs = cli_config.ConfigCLI("u").field_docs()
  leaves = [name for name, _ in config_fields.leaf_items(configlib.pretrain_defaults())]
  assert sorted(leaves) == sorted(docs)
  assert docs["batch_size"] == "global batch (pairs) per optimizer step"
  assert docs["log_every"] == ("steps between metrics.jsonl / TensorBoard rows (>= 1; the last "
                               "step is always logged)")


def test_help_lists_the_fields_and_exits_0_from_any_directory(tmp_path):
  out = run_main(["--help"], cwd=tmp_path, timeout=60)
  assert out.returncode == 0, out.stderr
  assert "--config.batch_size=4096" in out.stdout
  assert "global batch (pairs) per optimizer step" in out.stdout
  assert "--config.model.variant='B/16'" in out.stdout and "--workdir" in out.stdout
  for name in ("demo", "k400", "k700"):
    assert name in out.stdout
  demo = run_main(["--config=demo", "--help"], cwd=tmp_path, timeout=60)
  assert demo.returncode == 0 and "--config.model.variant='micro/16'" in demo.stdout


# ------------------------------------------------------------------------ one-line errors

@pytest.mark.parametrize("args,message", [
    (["--config=k700", "--config.batchsize=8"],
     "error: no field 'batchsize' in config; did you mean 'batch_size'?"),
    (["--config=configs/nope.py"], "error: config file 'configs/nope.py' does not exist"),
    ([], "error: --config is required: one of demo,"),
])
def test_config_mistakes_exit_2_with_one_line(tmp_path, args, message):
  out = run_main([*args, f"--workdir={tmp_path / 'w'}"], cwd=tmp_path, timeout=90)
  assert out.returncode == 2, out.stderr
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and errors[0].startswith(message), out.stderr
  assert "Traceback" not in out.stderr


def test_mistakes_found_while_setting_up_also_exit_2(tmp_path, monkeypatch, capsys):
  """A bad data root is found by the trainer, not the config loader: same one line, status 2."""
  from absl import flags
  from dropmae_jax import main
  monkeypatch.setattr(main.CLI, "config", config_loading.load_config(
      "demo", ["data.root=/nonexistent/kinetics"]))
  # On the Flag itself: FLAGS.workdir = ... would re-run the required-flag validator on undo.
  monkeypatch.setattr(flags.FLAGS["workdir"], "value", str(tmp_path / "w"))
  with pytest.raises(SystemExit) as exit_info:
    main.main([])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["error: config.data.root='/nonexistent/kinetics' is not a directory"]


# ------------------------------------------------------------------------------------- logs

def _record(name, level, pathname):
  return logging.LogRecord(name, level, pathname, 1, "msg", None, None)


def test_third_party_info_is_filtered_unless_verbose():
  package = os.path.dirname(os.path.dirname(cli_config.__file__))   # dropmae_jax/
  ours = os.path.join(package, "train", "loop.py")
  orbax = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
  quiet, verbose = cli_config.ThirdPartyInfoFilter(0), cli_config.ThirdPartyInfoFilter(1)
  # absl routes orbax and our own modules to one logger named 'absl': the file decides.
  assert quiet.filter(_record("absl", logging.INFO, ours))
  assert not quiet.filter(_record("absl", logging.INFO, orbax))
  assert not quiet.filter(_record("jax._src.xla_bridge", logging.INFO, "/x/jax/xla_bridge.py"))
  assert quiet.filter(_record("absl", logging.WARNING, orbax))   # warnings always pass
  assert verbose.filter(_record("absl", logging.INFO, orbax))
  assert verbose.filter(_record("jax._src.xla_bridge", logging.INFO, "/x/jax/xla_bridge.py"))
  assert not verbose.filter(_record("jax", logging.DEBUG, "/x/jax/a.py"))


def test_console_lines_are_plain_at_the_default_verbosity():
  from absl import logging as absl_logging
  handler = absl_logging.get_absl_handler()
  record = _record("absl", logging.INFO, "/x/dropmae_jax/train/loop.py")
  warning = _record("absl", logging.WARNING, "/x/dropmae_jax/train/loop.py")
  try:
    cli_config.quiet_third_party_logs(0)
    assert handler.python_handler.formatter.format(record) == "msg"
    assert handler.python_handler.formatter.format(warning) == "warning: msg"
    cli_config.quiet_third_party_logs(1)
    assert handler.python_handler.formatter.format(record).endswith("loop.py:1] msg")
  finally:
    cli_config.quiet_third_party_logs(0)


def test_skipped_videos_first_named_then_counted():
  lines = []
  log = metrics.SkippedVideoLog(lines.append, name_first=2, total=10)   # resumed: 10 before
  log.name(["a.mp4: bad"])
  log.report(step=50, total=11)             # all of them named: no count line
  assert lines == ["skipping unreadable video: a.mp4: bad"]
  log.name(["b.mp4: bad", "c.mp4: bad"])    # quota of 2: c is not named
  log.report(step=100, total=14)            # 3 new, 1 named in this interval
  assert lines[1].startswith("skipping unreadable video: b.mp4: bad; further ones are counted")
  assert lines[2] == "step 100: 3 unreadable videos skipped since the last report (14 in all)"
  log.report(step=150, total=14)            # nothing new: silent
  log.name(["d.mp4: bad"])
  log.report(step=200, total=15)
  assert lines[3:] == ["step 200: 1 unreadable video skipped since the last report (15 in all)"]


@pytest.fixture
def mixed_tree(video_tree, tmp_path):
  """Three good clips and four undecodable files."""
  root = tmp_path / "videos"
  (root / "good").mkdir(parents=True)
  (root / "bad").mkdir()
  for k in range(3):
    write_video(root / "good" / f"clip_{k}.mp4", num_frames=12, height=48, width=64, seed=k)
  for k in range(4):
    (root / "bad" / f"broken_{k}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100 + k))
  return root


def tiny_config_file(tmp_path, root) -> str:
  path = tmp_path / "tiny.py"
  path.write_text(f'''from dropmae_jax.config import defaults as configlib

def get_config():
  c = configlib.pretrain_defaults()
  c.model.variant = "micro/16"
  c.model.img_size = 32
  c.model.decoder_embed_dim = 32
  c.model.decoder_depth = 1
  c.model.decoder_num_heads = 4
  c.model.dtype = "float32"
  c.data.root = {str(root)!r}
  c.data.num_workers = 1        # a worker process: batches come through shared memory
  c.data.read_threads = 1
  c.asad.drop_ratio = 0.0       # compiles faster; ASAD has its own tests
  c.batch_size = 4
  c.steps_per_epoch = 2
  c.epochs = 2
  c.warmup_epochs = 1
  c.log_every = 1
  c.ckpt_every = 100
  c.figure_every = 0
  return c
''')
  return str(path)


def test_a_run_is_quiet_summarised_and_a_rerun_says_it_is_finished(mixed_tree, tmp_path):
  config = tiny_config_file(tmp_path, mixed_tree)
  workdir = tmp_path / "run"
  out = run_main([f"--config={config}", f"--workdir={workdir}", "--config.max_steps=2"],
                 cwd=tmp_path, timeout=240)
  assert out.returncode == 0, out.stderr[-3000:]
  log = out.stderr
  # Plain messages at the default verbosity: no absl prefix ("I1205 21:00:46.205062 1396 x.py:86]").
  assert not re.search(r"^[IWEF]\d{4} \d\d:\d\d:\d\d", log, re.M), log[:2000]
  # No third-party INFO (orbax writes ~45 lines per checkpoint, jax probes for a TPU).
  assert "orbax" not in log and "checkpoint_manager.py" not in log
  assert "Unable to initialize backend" not in log and "xla_bridge" not in log
  # The worker's last batches are unlinked before exit (without pipeline.close_iterator the
  # resource_tracker reports "leaked shared_memory objects" here).
  assert "leaked shared_memory" not in log and "resource_tracker" not in log
  # The bar counts to this run's last step (max_steps), not the 4-step schedule.
  assert re.search(r"\b2/2 \[", log) and not re.search(r"\d/4 \[", log)
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  total_skipped = rows[-1]["skipped_videos"]
  named = re.findall(r"skipping unreadable video: (\S+broken_\d\.mp4)", log)
  assert total_skipped > 0 and 1 <= len(named) <= 5
  counted = [int(n) for n in re.findall(r"(\d+) unreadable videos? skipped since", log)]
  assert sum(counted) <= total_skipped and (counted or len(named) == total_skipped)
  summary = [line for line in log.splitlines() if "stopped at step 2 of 4" in line]
  assert len(summary) == 1, log[-3000:]
  assert f"final loss {rows[-1]['loss']:.4g}" in summary[0] and "pairs/s" in summary[0]
  assert f"checkpoint {workdir / 'checkpoints' / '2'}" in summary[0]
  assert "Run the same command again to continue" in summary[0]

  # A finished run started again trains nothing and says so; --verbosity=1 shows library INFO.
  again = run_main([f"--config={config}", f"--workdir={workdir}", "--config.total_steps=2",
                    "--verbosity=1"], cwd=tmp_path, timeout=120)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"already finished at step 2 of 2 (workdir {workdir})" in again.stderr
  assert "checkpoint_manager.py" in again.stderr   # orbax's INFO, shown at verbosity 1
  assert re.search(r"^I\d{4} \d\d:\d\d:\d\d", again.stderr, re.M)  # absl's format there
  assert len((workdir / "metrics.jsonl").read_text().splitlines()) == len(rows)


# ------------------------------------------------------------------------- build_frame_store

def test_build_frame_store_fails_when_no_video_could_be_stored(tmp_path, capsys):
  src = tmp_path / "src" / "class_a"
  src.mkdir(parents=True)
  for k in range(2):
    (src / f"bad_{k}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
  code = build_frame_store.main(["--src", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
                                 "--workers", "1"])
  err = capsys.readouterr().err
  errors = [line for line in err.splitlines() if line.startswith("error:")]  # the rest: the bar
  assert code == 1 and "Traceback" not in err
  assert len(errors) == 1 and errors[0].startswith("error: no video could be stored: all 2 videos")
  assert "report.json" in errors[0]
  code = build_frame_store.main(["--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and "--src" in err[0] and "is not a directory" in err[0]
