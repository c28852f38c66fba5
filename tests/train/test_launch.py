"""Launch scripts assemble the right command; main decides when to join a distributed run."""
import os
import subprocess

import pytest
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fake_bin(tmp_path, *names):
  """Stand-ins that print their arguments, one per line, instead of running anything."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  for name in names:
    tool = bin_dir / name
    tool.write_text(f'#!/usr/bin/env bash\necho "{name}"; for a in "$@"; do echo "$a"; done\n')
    tool.chmod(0o755)
  return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")


def run(script, args, env):
  return subprocess.run(["bash", os.path.join(ROOT, "launch", script), *args], env=env,
                        capture_output=True, text=True)


def test_tpu_pod_runs_main_on_every_worker(tmp_path):
  out = run("tpu_pod.sh", ["my-tpu", "us-central2-b", "gs://b/w", "configs/k700.py",
                           "--config.batch_size=8192"], fake_bin(tmp_path, "gcloud"))
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert lines[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
  assert "--worker=all" in lines and "--zone=us-central2-b" in lines
  command = next(l for l in lines if l.startswith("--command="))
  assert ("python -m dropmae_jax.main --config=configs/k700.py --workdir=gs://b/w "
          "--jax_distributed --config.batch_size=8192") in command


def test_tpu_pod_usage_error(tmp_path):
  out = run("tpu_pod.sh", ["only-one"], fake_bin(tmp_path, "gcloud"))
  assert out.returncode == 2 and "usage" in out.stderr


def test_slurm_script_runs_one_main_per_task(tmp_path):
  env = fake_bin(tmp_path, "srun")
  env["SLURM_CPUS_PER_TASK"] = "12"
  out = run("slurm.sbatch", ["configs/k400.py", "/nfs/w", "--config.seed=3"], env)
  assert out.returncode == 0, out.stderr
  assert out.stdout.splitlines() == [
      "srun", "--kill-on-bad-exit=1", "python", "-m", "dropmae_jax.main",
      "--config=configs/k400.py", "--workdir=/nfs/w", "--config.data.num_workers=12",
      "--config.seed=3"]


def test_single_node_script(tmp_path):
  out = run("single_node.sh", ["configs/k700.py", "/w", "--config.mesh.fsdp=2"],
            fake_bin(tmp_path, "python"))
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert lines[:5] == ["python", "-m", "dropmae_jax.main", "--config=configs/k700.py",
                       "--workdir=/w"]
  assert lines[-1] == "--config.mesh.fsdp=2"
  workers = max(1, os.cpu_count() - 2) if os.cpu_count() > 3 else 1
  assert lines[5] == f"--config.data.num_workers={workers}"


@pytest.mark.parametrize("env,expected", [
    ({}, False),
    ({"SLURM_NTASKS": "1"}, False),
    ({"SLURM_NTASKS": "16"}, True),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, True),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1"}, True),
    ({"TPU_WORKER_HOSTNAMES": "t0"}, False),
])
def test_main_joins_distributed_runs_when_the_environment_says_so(monkeypatch, env, expected):
  from dropmae_jax import main
  for var in ("SLURM_NTASKS", "JAX_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE",
              "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(var, raising=False)
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  assert flags.FLAGS.is_parsed()
  assert main._wants_distributed() is expected
