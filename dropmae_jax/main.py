"""Train: python -m dropmae_jax.main --config=k700 --workdir=DIR [--config.X=...]

--config is an installed config (e.g. k700, k400, demo, droptrack_got10k, droptrack_demo,
dropseg_davis_ytvos, dropseg_demo; listed below) or a path to a .py file defining get_config().
Its `task` field picks what runs: 'pretrain' (DropMAE pre-training), 'droptrack' (fine-tuning the
DropTrack tracker) or 'dropseg' (fine-tuning the DropSeg segmenter), the last two e.g. with
--config.init_from=PRETRAIN_WORKDIR. Running the same command again in the same workdir resumes
from its last checkpoint.
Multi-host: launched once per process (see launch/); `jax.distributed.initialize()` runs first
when the environment describes several processes (or with --jax_distributed).
"""
from __future__ import annotations

import os

from absl import app
from absl import flags
from absl import logging

from dropmae_jax.config import cli as cli_config
from dropmae_jax.config import fields as config_fields
from dropmae_jax.config import loading as config_loading

_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and figures go.")
_DISTRIBUTED = flags.DEFINE_bool(
    "jax_distributed", None,
    "Call jax.distributed.initialize() (default: only when the environment names a coordinator, "
    "SLURM runs several tasks, or on a multi-host TPU VM).")
flags.mark_flags_as_required(["workdir"])


# config.task -> the configlib function whose comments document its fields (for --help).
TASK_DEFAULTS = {"pretrain": "pretrain_defaults", "droptrack": "droptrack_defaults",
                 "dropseg": "dropseg_defaults"}
# The task defaults whose data fields live in a function of their own (c.data = ...()).
DATA_DEFAULTS = {"droptrack_defaults": "droptrack_data_defaults",
                 "dropseg_defaults": "dropseg_data_defaults"}


def _check_task(config) -> None:
  if config.get("task") not in TASK_DEFAULTS:
    raise config_loading.ConfigError(f"config.task={config.get('task')!r}: this entry point "
                                     f"runs {' or '.join(repr(t) for t in TASK_DEFAULTS)}")


class _TaskCLI(cli_config.ConfigCLI):
  """--help documents the fields of the named config's task (pre-training by default)."""

  def help_text(self, spec: str | None = None) -> str:
    self.defaults_function = "pretrain_defaults"
    if spec:
      try:
        task = config_loading.load_config(spec).get("task", "pretrain")
      except config_loading.ConfigError:
        task = "pretrain"  # help_text reports the broken config itself
      self.defaults_function = TASK_DEFAULTS.get(task, "pretrain_defaults")
    return super().help_text(spec)

  def field_docs(self) -> dict[str, str]:
    docs = super().field_docs()
    if self.defaults_function in DATA_DEFAULTS:
      # The fine-tuning data fields are documented in their own function (c.data = ...()).
      data = config_fields.parse_field_docs(config_fields.defaults_source(),
                                            DATA_DEFAULTS[self.defaults_function], variable="d")
      docs.update({f"data.{k}": v for k, v in data.items()})
    return docs


CLI = _TaskCLI(
    usage="python -m dropmae_jax.main --config=NAME|PATH --workdir=DIR [--config.FIELD=VALUE ...]",
    description=__doc__.split("\n", 1)[1], flag_names=("workdir", "jax_distributed"),
    defaults_function="pretrain_defaults", validate=_check_task)


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
  from dropmae_jax.train import checkpoint as ckpt_lib
  from dropmae_jax.train import loop
  logging.info("JAX %s, process %d/%d, %d devices (%s)", jax.__version__, jax.process_index(),
               jax.process_count(), jax.device_count(), jax.default_backend())
  try:
    loop.train_and_evaluate(CLI.config, _WORKDIR.value)
  except (config_loading.ConfigError, ckpt_lib.CheckpointError) as e:
    # The user's to fix (a field, the data root, a workdir from another config): the message
    # names it; a traceback would only bury it.
    cli_config.fail(str(e), status=2)
  except loop.NonFiniteLossError as e:
    cli_config.fail(str(e), status=1)


def run() -> None:
  app.run(main, flags_parser=CLI.flags_parser)


if __name__ == "__main__":
  run()
