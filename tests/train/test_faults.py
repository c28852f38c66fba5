"""Faults a long run must survive: damaged checkpoints, full or read-only disks, SIGKILL, NaN.

One tiny pre-training run (6 steps, checkpoints at 2, 4, 6) is the reference; each test copies
its workdir, injects one fault and checks what the trainer does: falls back to the newest good
checkpoint (moving the damaged one to checkpoints/corrupt-<step>, one log line) and continues
with exactly the reference's losses, or stops with one clear error and touches nothing.
"""
import errno
import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dropmae_jax.config.loading import ConfigError
from dropmae_jax.train import checkpoint as ckpt_lib
from dropmae_jax.train import fingerprint
from dropmae_jax.train import loop
from dropmae_jax.track import step as step_lib
from dropmae_jax.train import task as tasks_lib

from test_train import read_metrics
from test_train import tiny_config

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(TESTS))
STEPS = (2, 4, 6)


def fault_config(root: str):
  c = tiny_config(root)
  # tiny_config's schedule (4 steps an epoch, 2 epochs) cut short at step 6: its compiled train
  # step is test_train.py's (the lr schedule is part of the program), a compilation-cache hit
  # when that file ran first.
  c.total_steps = 6
  c.ckpt_every = 2      # checkpoints 2, 4, 6
  c.keep_ckpts = 5
  return c


@pytest.fixture(scope="module")
def reference(video_tree, tmp_path_factory):
  """An uninterrupted run: its workdir (checkpoints 2, 4, 6) and losses per step."""
  workdir = str(tmp_path_factory.mktemp("faults") / "reference")
  loop.train_and_evaluate(fault_config(video_tree), workdir)
  assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))) == list(STEPS)
  return workdir, {s: r["loss"] for s, r in read_metrics(workdir).items()}


def copy_run(reference_dir: str, dest, upto: int) -> str:
  """The reference workdir as a run killed right after saving step `upto` would leave it."""
  dest = str(dest)
  shutil.copytree(reference_dir, dest)
  for step in STEPS:
    if step > upto:
      shutil.rmtree(os.path.join(dest, "checkpoints", str(step)))
  rows = [line for line in open(os.path.join(dest, "metrics.jsonl"))
          if json.loads(line)["step"] <= upto]
  with open(os.path.join(dest, "metrics.jsonl"), "w") as f:
    f.writelines(rows)
  return dest


def largest_array_file(step_dir: str) -> str:
  """The biggest chunk file of the state's arrays (it holds parameters or Adam moments)."""
  files = glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*"))
  return max(files, key=os.path.getsize)


def damage(path: str, how: str) -> None:
  if how == "missing":
    os.remove(path)
    return
  data = bytearray(open(path, "rb").read())
  if how == "truncated":
    data = data[:len(data) // 2]
  elif how == "zeroed":
    data = bytearray(len(data))
  elif how == "bitflip":
    # Bit rot: one bit in each of >= 8 evenly spaced bytes. (One flipped bit is not enough
    # here: OCDBT data files can hold bytes no array refers to -- e.g. an overwritten value --
    # and a flip there restores the very same arrays; single-bit detection in the arrays
    # themselves is test_fingerprint_sees_one_bit_and_not_the_sharding's job.)
    n = max(8, len(data) // 4096)
    for k in range(n):
      data[int((k + 0.5) * len(data) / n)] ^= 0x10
  else:
    raise ValueError(how)
  with open(path, "wb") as f:
    f.write(bytes(data))


def damage_lines(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]


def run_target(config, workdir):
  """(restore target on one device, a fresh iterator, the task) for `config`'s run."""
  task = tasks_lib.get_task(config, workdir)
  plan = loop.plan_run(config, task.num_examples())
  task.build(plan)
  target = ckpt_lib.abstract_like(jax.eval_shape(task.create_state),
                                  jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  return target, task.make_iterator(plan), task


def assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------- fingerprints

def test_fingerprint_sees_one_bit_and_not_the_sharding():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
  rng = np.random.default_rng(0)
  tree = {"w": rng.normal(size=(16, 5)).astype(np.float32),
          "h": rng.normal(size=(8,)).astype(jnp.bfloat16), "n": np.arange(8, dtype=np.int32)}
  on_one = jax.device_put(tree, jax.devices()[0])
  sharded = jax.device_put(tree, NamedSharding(mesh, P("data")))
  want = fingerprint.state_fingerprint(on_one)
  # Exact integer sums modulo 2**32: another summation order (sharding) gives the same bits.
  assert fingerprint.state_fingerprint(sharded) == want
  # Closed form for the int32 leaf: words i = 0..7; s1 = Σ i, s2 = Σ i·(2654435761·i + 1).
  assert want["n"][2:] == [28, sum(i * (2654435761 * i + 1) for i in range(8)) % 2**32]
  for name in ("w", "h"):
    for index, bit in ((0, 0), (7, 15)):
      flipped = dict(tree)
      words = flipped[name].view(np.uint32 if name == "w" else np.uint16).copy()
      words[index] ^= 1 << bit
      flipped[name] = words.view(tree[name].dtype)
      got = fingerprint.state_fingerprint(jax.device_put(flipped, jax.devices()[0]))
      assert got[name] != want[name], (name, index, bit)
      assert {k: v for k, v in got.items() if k != name} == {
          k: v for k, v in want.items() if k != name}


# ------------------------------------------------------------------- damaged checkpoints

@pytest.mark.parametrize("where", ["state/_METADATA", "array"])
@pytest.mark.parametrize("how", ["truncated", "zeroed", "bitflip", "missing"])
def test_damaged_latest_checkpoint_is_set_aside(reference, tmp_path, how, where, caplog):
  """Each damage to the newest checkpoint: restore falls back to the one before, bit-exact."""
  ref_dir, _ = reference
  workdir = str(tmp_path / "w")
  shutil.copytree(ref_dir, workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  path = (largest_array_file(os.path.join(ckpt_dir, "6")) if where == "array"
          else os.path.join(ckpt_dir, "6", where))
  damage(path, how)
  damaged_size = os.path.getsize(path) if how != "missing" else None
  config = fault_config(_data_root(ref_dir))
  target, iterator, task = run_target(config, workdir)
  fresh = task.make_iterator(loop.plan_run(config, task.num_examples()))
  try:
    with caplog.at_level(logging.WARNING):
      with ckpt_lib.Checkpointer(workdir, keep=5) as ckpt:
        step, state, meta = ckpt.restore_newest_good(target, iterator)
    with ckpt_lib.Checkpointer(ref_dir, keep=5) as ckpt:
      want_state, want_meta = ckpt.restore(4, target, fresh)
    assert step == 4
    assert_trees_equal(state, want_state)
    assert meta == want_meta and fingerprint.FINGERPRINT_KEY not in meta
    np.testing.assert_array_equal(next(iterator)["frames"], next(fresh)["frames"])
  finally:
    task.close_iterator(iterator)
    task.close_iterator(fresh)
  lines = damage_lines(caplog)
  assert len(lines) == 1 and "\n" not in lines[0], lines
  assert "step 6" in lines[0] and "corrupt-6" in lines[0] and "step 4" in lines[0]
  assert sorted(os.listdir(ckpt_dir)) == ["2", "4", "corrupt-6"]
  # Moved, never deleted: the damaged file is still there, as damaged as it was.
  moved = os.path.join(ckpt_dir, "corrupt-6", os.path.relpath(path, os.path.join(ckpt_dir, "6")))
  assert (os.path.getsize(moved) if os.path.exists(moved) else None) == damaged_size
  # Orbax lists neither it nor counts it: a new save keeps the newest `keep` real steps.
  with ckpt_lib.Checkpointer(workdir, keep=1) as ckpt:
    assert ckpt.all_steps() == [2, 4]
    ckpt.save(6, want_state)
  assert sorted(os.listdir(ckpt_dir)) == ["6", "corrupt-6"]


def _data_root(ref_dir: str) -> str:
  meta = json.load(open(os.path.join(ref_dir, "checkpoints", "6", "meta", "metadata")))
  return json.loads(meta["config"])["data"]["root"]


@pytest.mark.parametrize("where,how", [("state/_sharding", "zeroed"), ("array", "bitflip")])
def test_training_resumes_from_the_older_checkpoint(reference, tmp_path, where, how, caplog):
  """The issue's two cases: a zeroed metadata file (a crash before) and a flipped bit in an
  array (a silent NaN before). Now: one line, corrupt-4, and the reference's losses."""
  ref_dir, ref_losses = reference
  workdir = copy_run(ref_dir, tmp_path / "w", upto=4)
  step_dir = os.path.join(workdir, "checkpoints", "4")
  damage(largest_array_file(step_dir) if where == "array" else os.path.join(step_dir, where),
         how)
  with caplog.at_level(logging.WARNING):
    loop.train_and_evaluate(fault_config(_data_root(ref_dir)), workdir)
  lines = damage_lines(caplog)
  assert len(lines) == 1 and "checkpoint step 4 is damaged" in lines[0], lines
  assert "resuming from step 2" in lines[0]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6", "corrupt-4"]
  losses = {s: r["loss"] for s, r in read_metrics(workdir).items()}
  assert sorted(losses) == list(range(1, 7))
  for s in range(3, 7):
    assert losses[s] == ref_losses[s], s   # identical, not close: same seeds, same data


def test_every_checkpoint_damaged_is_one_clear_error(reference, tmp_path):
  """Through the CLI: exit status 2, one line naming every step tried; nothing moved."""
  ref_dir, _ = reference
  workdir = copy_run(ref_dir, tmp_path / "w", upto=4)
  for step in (2, 4):
    damage(os.path.join(workdir, "checkpoints", str(step), "state", "_sharding"), "zeroed")
  before = _listing(workdir)
  result = _run_cli(workdir, _data_root(ref_dir), timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, result.stderr[-3000:]
  assert "no usable checkpoint" in errors[0]
  assert "step 4:" in errors[0] and "step 2:" in errors[0]
  assert "Traceback" not in result.stderr
  assert _listing(workdir) == before


def _listing(workdir: str) -> dict[str, int]:
  root = os.path.join(workdir, "checkpoints")
  return {os.path.relpath(os.path.join(d, f), root): os.path.getsize(os.path.join(d, f))
          for d, _, files in os.walk(root) for f in files}


# -------------------------------------------------------- NaN after restore, restore_step

def test_nan_after_restore_names_the_checkpoint_then_restore_step_recovers(
    reference, tmp_path, caplog):
  """A checkpoint whose values were already bad when saved passes its fingerprint (the files
  are as written); the NaN message names it first and restore_step=2 recovers the run."""
  ref_dir, ref_losses = reference
  workdir = copy_run(ref_dir, tmp_path / "w", upto=4)
  config = fault_config(_data_root(ref_dir))
  # Re-save step 4 with one parameter overflowed, through the Checkpointer (so with a valid
  # fingerprint), as a run whose state went bad just before saving would have.
  target, iterator, task = run_target(config, workdir)
  try:
    with ckpt_lib.Checkpointer(workdir, keep=5, async_save=False) as ckpt:
      state, meta = ckpt.restore(4, target, iterator)
      ckpt._manager.delete(4)  # pylint: disable=protected-access
      leaves, tree = jax.tree.flatten(state.params)
      leaves[0] = leaves[0].at[(0,) * leaves[0].ndim].set(jnp.inf)
      ckpt.save(4, state.replace(params=jax.tree.unflatten(tree, leaves)), iterator, meta)
  finally:
    task.close_iterator(iterator)
  with pytest.raises(loop.NonFiniteLossError) as info:
    loop.train_and_evaluate(config, workdir)
  message = str(info.value)
  assert "step 5" in message
  assert os.path.join(workdir, "checkpoints", "4") in message
  assert "--config.restore_step=2" in message
  # The user follows the advice: the run continues from step 2 exactly as the reference did.
  config.restore_step = 2
  with caplog.at_level(logging.WARNING):
    loop.train_and_evaluate(config, workdir)
  losses = {s: r["loss"] for s, r in read_metrics(workdir).items()}
  for s in range(3, 7):
    assert losses[s] == ref_losses[s], s
  ckpt_dir = os.path.join(workdir, "checkpoints")
  assert sorted(os.listdir(ckpt_dir)) == ["2", "4", "6", "superseded-4"]
  assert any("superseded-4" in r.getMessage() for r in caplog.records)
  # The same command again (a relaunch after preemption) does not roll back a second time.
  assert loop.train_and_evaluate(config, workdir)["loss"] == ref_losses[6]
  assert sorted(os.listdir(ckpt_dir)) == ["2", "4", "6", "superseded-4"]


def test_restore_step_that_does_not_exist_names_the_available_ones(reference, tmp_path):
  ref_dir, _ = reference
  workdir = copy_run(ref_dir, tmp_path / "w", upto=4)
  config = fault_config(_data_root(ref_dir))
  config.restore_step = 3
  with pytest.raises(ConfigError, match=r"restore_step=3.*available: \[2, 4\]"):
    loop.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]


# ------------------------------------------------------------------- writes that fail

def _failing_json_write(monkeypatch, error_no: int, step: int):
  """The meta file write of checkpoint `step` fails as the file system would (in orbax's
  background commit, where a real ENOSPC/EROFS surfaces for an asynchronous save)."""
  original = getattr(ocp.JsonCheckpointHandler, "_save_fn", None)
  if original is None:
    pytest.skip("this orbax version writes JSON items elsewhere; nothing to inject the fault in")

  async def save_fn(self, x, directory):
    if os.path.basename(os.path.dirname(str(directory))).split(".")[0] == str(step):
      raise OSError(error_no, os.strerror(error_no), str(directory))
    return await original(self, x, directory)

  monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", save_fn)


def test_disk_full_stops_with_a_clear_error_and_keeps_the_checkpoints(
    reference, tmp_path, monkeypatch):
  ref_dir, _ = reference
  workdir = copy_run(ref_dir, tmp_path / "w", upto=2)
  config = fault_config(_data_root(ref_dir))
  config.keep_ckpts = 1   # the old checkpoint must survive its failed successor anyway
  config.max_steps = 2    # steps 3, 4; the save of step 4 fails
  _failing_json_write(monkeypatch, errno.ENOSPC, step=4)
  with pytest.raises(ckpt_lib.CheckpointError) as info:
    loop.train_and_evaluate(config, workdir)
  message = str(info.value)
  assert "\n" not in message
  assert "step 4" in message and "disk is full" in message
  assert os.path.join(workdir, "checkpoints") in message
  monkeypatch.undo()
  ckpt_dir = os.path.join(workdir, "checkpoints")
  assert [d for d in os.listdir(ckpt_dir) if d.isdigit()] == ["2"]
  target, iterator, task = run_target(config, workdir)
  try:
    with ckpt_lib.Checkpointer(workdir, keep=1) as ckpt:
      ckpt.restore(2, target, iterator)   # intact: passes its fingerprint
  finally:
    task.close_iterator(iterator)


def test_read_only_checkpoint_directory_stops_with_a_clear_error(tmp_path, monkeypatch):
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
  state = {"w": jax.device_put(jnp.arange(16.0), NamedSharding(mesh, P("data")))}
  target = ckpt_lib.abstract_like(state, NamedSharding(mesh, P()))
  ckpt_dir = str(tmp_path / "checkpoints")
  with ckpt_lib.Checkpointer(str(tmp_path), keep=1) as ckpt:
    ckpt.save(1, state)
  if os.geteuid() != 0:   # a real read-only directory (root ignores the mode bits)
    os.chmod(ckpt_dir, 0o555)
    expected = "permission denied"
  else:
    _failing_json_write(monkeypatch, errno.EROFS, step=2)
    expected = "read-only"
  try:
    with pytest.raises(ckpt_lib.CheckpointWriteError, match=rf"step 2 .*{expected}") as info:
      with ckpt_lib.Checkpointer(str(tmp_path), keep=1) as ckpt:
        ckpt.save(2, {"w": state["w"] + 1})
        ckpt.wait_until_finished()
    assert ckpt_dir in str(info.value)
  finally:
    os.chmod(ckpt_dir, 0o755)
  monkeypatch.undo()
  with ckpt_lib.Checkpointer(str(tmp_path), keep=1) as ckpt:
    assert ckpt.all_steps() == [1]
    restored, _ = ckpt.restore(1, target)
  np.testing.assert_array_equal(restored["w"], np.arange(16.0))


# ------------------------------------------------------------------------------- SIGKILL

_CONFIG_FILE = """
import sys
sys.path.insert(0, {tests!r})
from test_faults import fault_config

def get_config():
  return fault_config({root!r})
"""

# Runs main with the meta write of checkpoint FAULT_STEP held up: it writes FAULT_MARKER and
# sleeps, so the parent's SIGKILL lands while that asynchronous save is half written.
_SLOW_SAVE = """
import os, sys, time
import orbax.checkpoint as ocp
original = ocp.JsonCheckpointHandler._save_fn
async def save_fn(self, x, directory):
  if os.path.basename(os.path.dirname(str(directory))).split(".")[0] == os.environ["FAULT_STEP"]:
    open(os.environ["FAULT_MARKER"], "w").write(str(directory))
    time.sleep(120)
  return await original(self, x, directory)
ocp.JsonCheckpointHandler._save_fn = save_fn
from dropmae_jax import main
sys.argv = ["main"] + sys.argv[1:]
main.run()
"""


def _cli_args(workdir: str, root: str) -> list[str]:
  config_file = os.path.join(os.path.dirname(workdir), "fault_config.py")
  with open(config_file, "w") as f:
    f.write(_CONFIG_FILE.format(tests=TESTS, root=root))
  return [f"--config={config_file}", f"--workdir={workdir}"]


def _env() -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([REPO, TESTS, env.get("PYTHONPATH", "")])
  return env


def _run_cli(workdir: str, root: str, timeout: int) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "dropmae_jax.main", *_cli_args(workdir, root)],
                        capture_output=True, text=True, timeout=timeout, env=_env(), cwd=REPO)


def test_sigkill_during_an_asynchronous_save_resumes_exactly(reference, tmp_path):
  if not hasattr(ocp.JsonCheckpointHandler, "_save_fn"):
    pytest.skip("this orbax version writes JSON items elsewhere; cannot hold a save up")
  ref_dir, ref_losses = reference
  root = _data_root(ref_dir)
  workdir = str(tmp_path / "w")
  marker = str(tmp_path / "saving")
  env = _env()
  env.update(FAULT_STEP="4", FAULT_MARKER=marker)
  proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, *_cli_args(workdir, root)],
                          env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 300
    while not os.path.exists(marker):
      assert proc.poll() is None, "the run ended before the save it was to be killed in"
      assert time.time() < deadline, "no save of step 4 within 300 s"
      time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait(timeout=60)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  left = sorted(os.listdir(ckpt_dir))
  # Killed mid-save: checkpoint 2 is complete, 4 only exists as orbax's temporary directory.
  assert "2" in left and "4" not in left, left
  assert any(d.startswith("4.") for d in left), left
  result = _run_cli(workdir, root, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  losses = {s: r["loss"] for s, r in read_metrics(workdir).items()}
  assert sorted(losses) == list(range(1, 7))
  for s in range(1, 7):
    assert losses[s] == ref_losses[s], s
  after = sorted(os.listdir(ckpt_dir))
  assert [d for d in after if d.isdigit()] == ["2", "4", "6"]
  assert not any(d.startswith("4.") for d in after), after   # the leftover was cleaned up


# ----------------------------------------------------------------- fine-tuning workdirs

def test_droptrack_state_with_batch_stats_falls_back(tmp_path, caplog):
  """A fine-tuning (droptrack) train state -- params, Adam moments and BatchNorm statistics --
  takes the same path: the damaged newest checkpoint is set aside, the previous one restored.
  (At the Checkpointer level: a tiny droptrack run compiles for about a minute.)"""
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
  rng = np.random.default_rng(0)
  params = {"head": {"conv": {"kernel": rng.normal(size=(3, 3, 8, 64)).astype(np.float32)},
                     "bn": {"scale": np.ones(64, np.float32), "bias": np.zeros(64, np.float32)}},
            "backbone": {"pos_embed": rng.normal(size=(1, 16, 64)).astype(np.float32)}}
  tx = optax.adamw(1e-3)

  def state_at(step):
    p = jax.tree.map(lambda x: x + step, params)
    stats = {"head": {"bn": {"mean": np.full(64, step, np.float32),
                             "var": np.full(64, 1.0 + step, np.float32)}}}
    return jax.device_put(step_lib.TrackTrainState(
        step=jnp.asarray(step, jnp.int32), params=p, opt_state=tx.init(p),
        rng=np.asarray([0, step], np.uint32), batch_stats=stats), NamedSharding(mesh, P()))

  with ckpt_lib.Checkpointer(str(tmp_path), keep=3) as ckpt:
    for step in (1, 2, 3):
      ckpt.save(step, state_at(step), meta={"counters": {}})
  step_dir = os.path.join(str(tmp_path), "checkpoints", "3")
  damage(largest_array_file(step_dir), "bitflip")
  target = ckpt_lib.abstract_like(jax.eval_shape(lambda: state_at(0)), NamedSharding(mesh, P()))
  with caplog.at_level(logging.WARNING):
    with ckpt_lib.Checkpointer(str(tmp_path), keep=3) as ckpt:
      step, state, _ = ckpt.restore_newest_good(target)
  assert step == 2
  assert_trees_equal(state, state_at(2))
  assert isinstance(state, step_lib.TrackTrainState)
  assert len(damage_lines(caplog)) == 1
  assert sorted(os.listdir(os.path.join(str(tmp_path), "checkpoints"))) == ["1", "2", "corrupt-3"]
