"""Reading the newest usable checkpoint of a run from outside it: export, import, tracking.

Read-only: a damaged checkpoint is reported and skipped, never moved (the run that owns the folder
may still be writing to it); the trainer's own restore (`Checkpointer.restore_newest_good`) is the
one that quarantines. Arrays come back as numpy, so a checkpoint written on another device topology
reads too. Only `state` and `meta` are read; the input-pipeline position (`data`) is the
trainer's business.
"""
from __future__ import annotations

import contextlib
import logging as py_logging
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from dropmae_jax.train import fingerprint
from dropmae_jax.train.checkpoint.errors import CheckpointError, short  # noqa: F401  (readonly.CheckpointError)


class _SkipUnrequestedItems(py_logging.Filter):
  # orbax warns about every saved item a restore does not ask for ('data' here); a reader that
  # wants only the weights has nothing to do about it.
  def filter(self, record: py_logging.LogRecord) -> bool:
    return "could not be restored" not in record.getMessage()


@contextlib.contextmanager
def _quiet_about_unrequested_items() -> Iterator[None]:
  quiet = _SkipUnrequestedItems()
  logger = py_logging.getLogger("absl")
  logger.addFilter(quiet)
  try:
    yield
  finally:
    logger.removeFilter(quiet)


def read_newest_good(directory: str, *,
                     check_meta: Callable[[int, dict], None] | None = None,
                     check_state: Callable[[Any, dict], str | None] | None = None,
                     ) -> tuple[Any, dict, int]:
  """(state as numpy, meta, step) of the newest step under `directory` (WORKDIR/checkpoints)
  that reads, passes the fingerprint saved with it and `check_state`.

  Args:
    check_meta: called with (step, meta) before any array is read; raise to stop (e.g. a
      checkpoint of another task: no older one will be of this task either).
    check_state: (state, meta) -> None, or why this step is unusable (an older one is tried).
  Raises:
    CheckpointError: no finished checkpoint, or none usable (each step named with its reason).
  """
  manager = ocp.CheckpointManager(directory, item_handlers={
      "state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})
  try:
    with _quiet_about_unrequested_items():
      steps = sorted(manager.all_steps(), reverse=True)
      if not steps:
        raise CheckpointError(f"{directory} holds no finished checkpoint")
      damaged = []
      for step in steps:
        try:
          meta = dict(manager.restore(step, args=ocp.args.Composite(
              meta=ocp.args.JsonRestore()))["meta"] or {})
        except Exception as e:  # pylint: disable=broad-except  (orbax raises many types)
          damaged.append(f"step {step}: its meta cannot be read ({short(e)})")
          continue
        if check_meta is not None:
          check_meta(step, meta)
        try:
          saved = manager.item_metadata(step)["state"]
          target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype),
                                getattr(saved, "tree", saved))
          state = manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(target)))["state"]
          problem = fingerprint.fingerprint_problem(state, meta)
        except Exception as e:  # pylint: disable=broad-except
          problem = f"it cannot be read ({short(e)})"
        if problem is None and check_state is not None:
          problem = check_state(state, meta)
        if problem is None:
          if damaged:
            logging.warning("%s: using checkpoint step %d; newer ones are damaged: %s",
                            directory, step, "; ".join(damaged))
          return jax.tree.map(np.asarray, state), meta, step
        damaged.append(f"step {step}: {problem}")
      raise CheckpointError(f"{directory}: no checkpoint can be used — " + "; ".join(damaged))
  finally:
    manager.close()
