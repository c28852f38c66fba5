"""The Checkpointer: orbax saves and restores of (train state, grain iterator state, JSON meta).

Saves are keep-last-N and optionally asynchronous; a failed background write is confirmed (and its
disk cause named, `disk.py`) before anything old is deleted. Restores are checked step by step
(`restore.py`) and agreed on by every process; `restore_newest_good` falls back past damaged
checkpoints and moves them aside (`quarantine`).
"""
from __future__ import annotations

import logging as py_logging
import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from dropmae_jax.train import fingerprint as fingerprints
from dropmae_jax.train.checkpoint import disk
from dropmae_jax.train.checkpoint.errors import CheckpointError, DamagedCheckpointError
from dropmae_jax.train.checkpoint.restore import CheckedReader

QUARANTINE_PREFIX = "corrupt-"


def _gather(value: int) -> list[int]:
  """`value` of every process, in process order (a collective: every process calls it)."""
  if jax.process_count() == 1:
    return [int(value)]
  from jax.experimental import multihost_utils
  return [int(v) for v in np.asarray(
      multihost_utils.process_allgather(np.asarray(value, np.int64))).reshape(-1)]


def _all_processes_agree(ok: bool) -> bool:
  return all(_gather(int(ok)))


def _checkpoint_dir(workdir: str) -> str:
  # Orbax wants an absolute path; leave remote URLs (gs://...) alone.
  if "://" in workdir:
    return workdir.rstrip("/") + "/checkpoints"
  return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
  """Keep-last-N (optionally async) saves; restores onto the shardings of this run.

  Every process must call `save`/`restore` (orbax synchronises them and writes one shard per
  host; grain writes one iterator-state file per process). `save` copies the arrays to host
  memory before it returns, so the caller may donate or overwrite the state right away; the
  disk writes finish in the background. The iterator state is recorded before `save` returns.
  A background write that failed is reported (CheckpointWriteError) by the next `save`,
  `wait_until_finished` or `close`; checkpoints beyond the newest `keep` are deleted only then,
  once the newer ones are known to be complete.
  """

  def __init__(self, workdir: str, *, keep: int, async_save: bool = True):
    self.directory = _checkpoint_dir(workdir)
    self._keep = max(1, int(keep))
    # max_to_keep=None: orbax would delete old steps even when the newest save failed in the
    # background (its finalize logs the error and goes on); `_collect_garbage` does it instead.
    # cleanup_tmp_directories: a process killed mid-save leaves <step>.orbax-checkpoint-tmp-*,
    # never a checkpoint; orbax removes those leftovers when the next run starts.
    options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                           cleanup_tmp_directories=True,
                                           enable_async_checkpointing=async_save)
    # Registering the handlers up front lets a fresh process read an existing checkpoint's
    # metadata (which items it has, the saved tree) before restoring; without them orbax
    # reports None for every item until something was saved or restored.
    handlers = {"state": ocp.StandardCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler()}
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=handlers)
    self._reader = CheckedReader(self._manager, self.directory)
    self._pending: int | None = None   # a step whose background write is not confirmed yet
    self._background_errors = disk.BackgroundErrors()
    py_logging.getLogger("absl").addHandler(self._background_errors)

  def latest_step(self) -> int | None:
    """The newest finished checkpoint's step, or None when there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def step_directory(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  # ----------------------------------------------------------------------------- saving

  def save(self, step: int, state: Any, data_iterator: Any = None,
           meta: dict | None = None) -> None:
    """Save `state` (+ the grain iterator's position, + JSON `meta`) as checkpoint `step`.

    `meta` gets the fingerprint of the state and iterator position under FINGERPRINT_KEY.
    Raises:
      CheckpointWriteError: this save, or the previous background one, could not be written.
      orbax's StepAlreadyExistsError (a ValueError) if `step` was already saved.
    """
    # Orbax waits for the previous save before starting one anyway; confirm it first, so that a
    # failed write stops the run at once instead of one interval later.
    self._confirm_pending()
    meta = dict(meta or {})
    fingerprint = {"state": fingerprints.state_fingerprint(state),
                   "meta": fingerprints.canonical_crc(meta)}
    if data_iterator is not None:
      fingerprint["data"] = _gather(fingerprints.data_state_crc(data_iterator.get_state()))
    meta[fingerprints.FINGERPRINT_KEY] = fingerprint
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    try:
      # force: save whenever asked; the loop, not orbax's interval policy, decides when.
      self._manager.save(int(step), args=ocp.args.Composite(**items), force=True)
    except Exception as e:  # pylint: disable=broad-except
      if disk.os_error_in(e) is None:
        raise
      self._after_failed_write()
      raise disk.write_error(self.directory, step, e, self.all_steps()) from e
    self._pending = int(step)

  def _confirm_pending(self) -> None:
    """Wait for the last background save; raise if it did not end as a checkpoint on disk."""
    # A failed background write surfaces either here (orbax re-raises it) or only in orbax's
    # log (its finalize step logs and goes on); either way the step is then not on disk.
    raised = None
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raised = e
    errors = self._background_errors.take() + ([raised] if raised is not None else [])
    if self._pending is None:
      if raised is not None:
        raise raised
      return
    step, self._pending = self._pending, None
    self._after_failed_write()  # reload: orbax listed the step when the save started
    if step not in self._manager.all_steps():
      cause = next((e for e in map(disk.os_error_in, errors) if e is not None),
                   errors[-1] if errors else None)
      raise disk.write_error(self.directory, step, cause, self.all_steps()) from raised
    if raised is not None:
      raise raised
    self._collect_garbage()

  def _after_failed_write(self) -> None:
    # Orbax listed the step when the save started; a failed one must be forgotten (its tmp
    # directory stays behind and is removed by the next run's manager).
    try:
      self._manager.reload()
    except Exception:  # pylint: disable=broad-except  (the directory may be unreadable too)
      pass

  def _collect_garbage(self) -> None:
    """Delete all but the newest `keep` steps (only called once they are all complete)."""
    steps = self.all_steps()
    for step in steps[:-self._keep]:
      self._manager.delete(step)

  # ---------------------------------------------------------------------------- restoring

  def read_meta(self, step: int) -> dict | None:
    """Checkpoint `step`'s JSON meta (fingerprint removed), or None if it cannot be read."""
    try:
      meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      meta = dict(meta["meta"] or {})
    except Exception:  # pylint: disable=broad-except
      return None
    meta.pop(fingerprints.FINGERPRINT_KEY, None)
    return meta

  def restore(self, step: int, abstract_state: Any,
              data_iterator: Any = None) -> tuple[Any, dict]:
    """Restore checkpoint `step` and check it against its fingerprint.

    Args:
      step: a step in `all_steps()`.
      abstract_state: pytree of jax.ShapeDtypeStruct with `sharding=` (see `abstract_like`);
        arrays come back with those shardings, whatever mesh wrote them. Its structure and
        shapes must match the saved state (dtypes are cast).
      data_iterator: a fresh grain iterator of the same pipeline; its state is set in place.
    Returns:
      (state, meta): the restored pytree and the saved JSON dict ({} if none was saved).
    Raises:
      DamagedCheckpointError (a CheckpointError): a file of the checkpoint cannot be read, or
        the arrays, iterator position or meta differ from the fingerprint saved with them.
      CheckpointError: no such step, the saved state does not fit `abstract_state` (a config
        change), or the saved input-pipeline position does not fit `data_iterator`'s pipeline.
    """
    steps = self.all_steps()
    if step not in steps:
      raise CheckpointError(f"no checkpoint for step {step} in {self.directory} "
                            f"(available: {steps})")
    damage: str | None = None
    try:
      result = self._reader.read(step, abstract_state, data_iterator)
    except DamagedCheckpointError as e:
      damage, result = e.reason, None
    # Every process must take the same branch (the fallback moves directories and restores
    # another step in lockstep), so one process's damaged file condemns the checkpoint for all.
    if not _all_processes_agree(damage is None):
      raise DamagedCheckpointError(step, damage or "damaged on another process", self.directory)
    return result

  # ------------------------------------------------------------------------------ faults

  def restore_newest_good(self, abstract_state: Any, data_iterator: Any = None,
                          steps: list[int] | None = None) -> tuple[int, Any, dict]:
    """Restore the newest checkpoint that is not damaged; move the damaged newer ones aside.

    Each damaged checkpoint is reported in one warning line (step, what failed, where it was
    moved) and moved to `corrupt-<step>` once an older one restored; if none restores, nothing
    is moved and a CheckpointError lists every step tried and why.
    Args:
      steps: the candidates (default: all steps), newest tried first.
    Returns:
      (step, state, meta) of the checkpoint restored.
    Raises:
      CheckpointError: every candidate is damaged, or one does not fit this run (a config
        change: see `restore`; nothing is moved then).
    """
    candidates = sorted(self.all_steps() if steps is None else steps, reverse=True)
    damaged: list[DamagedCheckpointError] = []
    for step in candidates:
      try:
        state, meta = self.restore(step, abstract_state, data_iterator)
      except DamagedCheckpointError as e:
        damaged.append(e)
        continue
      for e in damaged:
        where = self.quarantine(e.step)
        logging.warning("checkpoint step %d is damaged (%s): moved to %s; resuming from step %d",
                        e.step, e.reason, where, step)
      return step, state, meta
    if not damaged:
      raise CheckpointError(f"no checkpoint to restore in {self.directory}")
    raise CheckpointError(
        f"no usable checkpoint in {self.directory}: every one is damaged (nothing was moved or "
        "deleted): " + "; ".join(f"step {e.step}: {e.reason}" for e in damaged)
        + ". Restore a copy of the workdir, or start a new one")

  def quarantine(self, step: int, prefix: str = QUARANTINE_PREFIX) -> str:
    """Move checkpoint `step` to `<prefix><step>` (or `<prefix><step>-<n>`) beside it.

    Orbax lists only all-digit directory names as steps, so the moved one is neither restored
    nor counted toward keep-last-N. Returns the new path.
    """
    self._manager.wait_until_finished()
    source = self.step_directory(step)
    target = os.path.join(self.directory, f"{prefix}{step}")
    if jax.process_index() == 0:
      n = 1
      while epath.Path(target).exists():
        n += 1
        target = os.path.join(self.directory, f"{prefix}{step}-{n}")
      epath.Path(source).rename(target)  # local: os.rename; remote (gs://): the store's move
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"checkpoint quarantine {step}")
      target = os.path.join(self.directory, f"{prefix}{step}")  # as named by process 0
    self._manager.reload()
    return target

  # ------------------------------------------------------------------------------ closing

  def wait_until_finished(self) -> None:
    """Block until every background save is on disk.

    Raises:
      CheckpointWriteError: the last background save could not be written.
    """
    self._confirm_pending()

  def close(self) -> None:
    """Wait for pending saves and release orbax's resources (raises like `wait_until_finished`)."""
    try:
      self._confirm_pending()
    finally:
      self._manager.close()
      py_logging.getLogger("absl").removeHandler(self._background_errors)

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

