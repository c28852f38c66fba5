"""Entry point: python -m dropmae_jax.main --config=configs/k700.py --workdir=DIR [--config.x=...]

Multi-host: launched once per process (see launch/); `jax.distributed.initialize()` runs first
when the environment describes several processes (or with --jax_distributed).
"""
from __future__ import annotations

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and figures go.")
_DISTRIBUTED = flags.DEFINE_bool(
    "jax_distributed", None,
    "Call jax.distributed.initialize() (default: only when the environment names a coordinator, "
    "SLURM runs several tasks, or on a multi-host TPU VM).")
flags.mark_flags_as_required(["config", "workdir"])


def _wants_distributed() -> bool:
  if _DISTRIBUTED.value is not None:
    return _DISTRIBUTED.value
  env = os.environ
  return bool(env.get("JAX_COORDINATOR_ADDRESS")
              or int(env.get("SLURM_NTASKS", "1")) > 1
              or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
              or "," in env.get("TPU_WORKER_HOSTNAMES", ""))


def main(argv):
  del argv
  if _wants_distributed():
    import jax  # imported here: nothing may touch devices before initialize()
    jax.distributed.initialize()
  import jax
  from dropmae_jax.train import loop
  logging.info("JAX %s, process %d/%d, %d devices (%s)", jax.__version__, jax.process_index(),
               jax.process_count(), jax.device_count(), jax.default_backend())
  config = _CONFIG.value
  if config.task != "pretrain":
    raise app.UsageError(f"config.task={config.task!r}: this entry point runs 'pretrain'")
  loop.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
