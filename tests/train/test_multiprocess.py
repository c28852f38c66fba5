"""Two JAX processes on this machine (jax.distributed over loopback) train one run together."""
import json
import os
import subprocess
import sys
import textwrap

import portpicker
import pytest

from conftest import FAST_COMPILE_XLA_FLAGS

WORKER = textwrap.dedent("""
    import os, sys
    import jax
    jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                               process_id=int(sys.argv[2]))
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    sys.path.insert(0, sys.argv[5])
    from test_train import tiny_config
    from dropmae_jax.train import loop
    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    config = tiny_config(sys.argv[3])
    # One decoder block: both processes compile the step at once on a small machine, and
    # what is tested here is the processes' plumbing, not the model.
    config.model.decoder_depth = 1
    config.total_steps = 4
    config.ckpt_every = 2
    loop.train_and_evaluate(config, sys.argv[4])
    print("WORKER_OK", jax.process_index())
""")


def test_two_processes_train_and_checkpoint(video_tree, tmp_path):
  port = portpicker.pick_unused_port()
  workdir = tmp_path / "run"
  # Two devices a process, and conftest's fast-compile XLA options (compiling is most of this
  # test's time).
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {FAST_COMPILE_XLA_FLAGS}")
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  procs = [subprocess.Popen([sys.executable, "-c", WORKER, f"127.0.0.1:{port}", str(i),
                             video_tree, str(workdir), tests_dir],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outputs = []
  for p in procs:
    try:
      out, _ = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail("two-process run timed out")
    outputs.append(out)
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0 and f"WORKER_OK {i}" in out, out[-3000:]
  with open(workdir / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]  # written once, by process 0
  assert all(r["loss"] > 0 for r in rows)
  assert sorted(os.listdir(workdir / "checkpoints"))[:2] == ["2", "4"]
