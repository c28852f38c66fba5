"""Reading the newest usable checkpoint of a run from outside it: export, import, tracking.

Read-only: a damaged checkpoint is reported and skipped, never moved (the run that owns the folder
may still be writing to it); the trainer's own restore (`Checkpointer.restore_newest_good`) is the
one that quarantines. Arrays come back as numpy, so a checkpoint written on another device topology
reads too. Only `state` and `meta` are read; the input-pipeline position (`data`) is the
trainer's business.
"""
from __future__ import annotations

import contextlib
import json
import logging as py_logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
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


def finished_steps(directory: str) -> list[int]:
  """Step folders (all-digit names) under `directory` (WORKDIR/checkpoints), newest first; []
  when there is no such folder. Read from the listing alone: nothing is opened."""
  if not os.path.isdir(directory):
    return []
  return sorted((int(n) for n in os.listdir(directory)
                 if n.isdigit() and os.path.isdir(os.path.join(directory, n))), reverse=True)


def modified(path: str) -> float:
  """`path`'s modification time, 0.0 when it does not exist (to compare an export with the
  newest checkpoint)."""
  try:
    return os.path.getmtime(path)
  except OSError:
    return 0.0


def read_newest_of_task(directory: str, *, task: str, collections: tuple[str, ...], what: str,
                        wrong_task: Callable[[int, str], str], default_task: str = ""
                        ) -> tuple[dict, ml_collections.ConfigDict, int]:
  """({collection: numpy tree}, the run's config, step) of the newest good checkpoint of a
  `task` run (`read_newest_good`): the fine-tuning workdirs `--weights` accepts.

  Args:
    task: the config.task the run must have (a config without one counts as `default_task`).
    collections: the train-state entries returned, each required (e.g. 'params', 'frozen').
    what: whose train state, for the message of a state without them ("a tracker's").
    wrong_task: (step, found task) -> the one-line message when the run is another task's.
  Raises:
    CheckpointError: another task's run (`wrong_task`'s line), or no usable checkpoint.
  """
  def check_meta(step: int, meta: dict) -> None:
    try:
      found = json.loads(meta["config"]).get("task", default_task)
    except (KeyError, TypeError, ValueError, AttributeError):
      return   # check_state names it
    if found != task:
      raise CheckpointError(wrong_task(step, found))

  def check_state(state, meta) -> str | None:
    try:
      json.loads(meta["config"])
    except (KeyError, TypeError, ValueError):
      return "its meta holds no readable config"
    if not (isinstance(state, dict) and all(state.get(c) for c in collections)):
      return (f"it holds no {' or no '.join(repr(c) for c in collections)} (not {what} train "
              "state)")
    return None

  state, meta, step = read_newest_good(directory, check_meta=check_meta, check_state=check_state)
  config = ml_collections.ConfigDict(json.loads(meta["config"]))
  return {c: state[c] for c in collections}, config, step
