"""Orbax checkpoints of (train state, grain iterator state, JSON meta) under WORKDIR/checkpoints.

Layout: WORKDIR/checkpoints/<step>/{state, data, meta}. `state` is any pytree of arrays (the
TrainState: params, opt_state, int32 step, uint32 raw key data); `data` is grain's per-process
iterator state; `meta` is a JSON dict (counters, the config) plus a fingerprint of the other two,
checked after every restore.

Faults (see `Checkpointer.restore_newest_good`): a checkpoint that cannot be read or fails its
fingerprint is damaged; it is moved aside to WORKDIR/checkpoints/corrupt-<step> (never deleted;
orbax only lists all-digit names, so it neither restores nor counts it) and the next older one is
tried. A checkpoint that reads fine but does not fit this run's train state is a config mismatch,
not damage: it stays where it is and the run stops with a CheckpointError. A save that cannot be
written (disk full, read-only) stops the run with a CheckpointError naming the directory; old
checkpoints are only deleted (keep-last-N) after a newer one is known to be complete.
"""
from __future__ import annotations

import errno
import json
import logging as py_logging
import os
import threading
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from dropmae_jax.train import fingerprint as fingerprints

# Shown per kind of difference when a checkpoint does not fit: enough to see the pattern.
_MAX_LISTED = 5
QUARANTINE_PREFIX = "corrupt-"
# Part of this module's surface (tests and tools check a state or a meta with them).
FINGERPRINT_KEY = fingerprints.FINGERPRINT_KEY
state_fingerprint = fingerprints.state_fingerprint


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored into the structure this run expects.

  Also: no checkpoint could be restored at all, or one could not be written.
  """


class DamagedCheckpointError(CheckpointError):
  """The checkpoint's files cannot be read, or what they hold fails the saved fingerprint."""

  def __init__(self, step: int, reason: str, directory: str):
    super().__init__(f"checkpoint step {step} in {directory} is damaged: {reason}")
    self.step, self.reason = step, reason


class CheckpointWriteError(CheckpointError):
  """A save could not be written (disk full, read-only file system, no permission)."""


def abstract_like(tree: Any, shardings: Any) -> Any:
  """Restore target: jax.ShapeDtypeStruct(shape, dtype, sharding=...) for every leaf.

  Args:
    tree: pytree of arrays or shape/dtype structs (e.g. `jax.eval_shape(create_state)`).
    shardings: one `jax.sharding.Sharding` for every leaf, or a pytree of them matching `tree`.
  """
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shardings), tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def _flat_shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], Any]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  # getattr: orbax describes saved Python scalars with metadata that may lack shape/dtype.
  return {fingerprints.path_str(p): (tuple(getattr(x, "shape", ())), getattr(x, "dtype", None))
          for p, x in leaves}


def describe_mismatch(saved: Any, wanted: Any) -> list[str]:
  """Human-readable differences between two pytrees of shaped leaves (empty if they fit).

  Dtype differences are not listed: orbax casts on restore.
  """
  return _describe_flat(_flat_shapes(saved), _flat_shapes(wanted))


def _describe_flat(a: dict[str, tuple], b: dict[str, tuple]) -> list[str]:
  """`describe_mismatch` of two {path: (shape, dtype)} dicts."""
  # Optimizer-state entries last: they mirror the params, which say more about the cause.
  order = lambda keys: sorted(keys, key=lambda k: (k.startswith("opt_state"), k))
  missing = order(set(b) - set(a))
  unexpected = order(set(a) - set(b))
  reshaped = order(k for k in set(a) & set(b) if a[k][0] != b[k][0])
  lines = []
  if missing:
    lines.append(f"{len(missing)} key(s) this run expects are not in the checkpoint: "
                 f"{missing[:_MAX_LISTED]}")
  if unexpected:
    lines.append(f"{len(unexpected)} key(s) in the checkpoint are unknown to this run: "
                 f"{unexpected[:_MAX_LISTED]}")
  if reshaped:
    lines.append(f"{len(reshaped)} shape mismatch(es) (checkpoint vs this run): " + ", ".join(
        f"{k}: {a[k][0]} vs {b[k][0]}" for k in reshaped[:_MAX_LISTED]))
  return lines


def _gather(value: int) -> list[int]:
  """`value` of every process, in process order (a collective: every process calls it)."""
  if jax.process_count() == 1:
    return [int(value)]
  from jax.experimental import multihost_utils
  return [int(v) for v in np.asarray(
      multihost_utils.process_allgather(np.asarray(value, np.int64))).reshape(-1)]


def _all_processes_agree(ok: bool) -> bool:
  return all(_gather(int(ok)))


# --------------------------------------------------------------------------- write failures

_WRITE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
                 errno.EROFS: "the file system is read-only",
                 errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


def _os_error_in(exc: BaseException | None) -> OSError | None:
  """The first OSError in `exc`'s cause/context chain (orbax wraps the file system's errors)."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if isinstance(exc, OSError) and exc.errno is not None:
      return exc
    for inner in getattr(exc, "exceptions", ()):  # ExceptionGroup from asyncio
      found = _os_error_in(inner)
      if found is not None:
        return found
    exc = exc.__cause__ or exc.__context__
  return None


class _BackgroundErrors(py_logging.Handler):
  """Keeps the exceptions orbax logs from its background save thread.

  Orbax's finalize step catches a failed asynchronous write and only logs it ("Checkpointer
  failed ... Skipping finalization"), so the cause (e.g. ENOSPC) is otherwise lost; the
  Checkpointer notices the missing step itself and names the cause from here.
  """

  def __init__(self):
    super().__init__(level=py_logging.ERROR)
    self.errors: list[BaseException] = []
    self._lock = threading.Lock()

  def emit(self, record: py_logging.LogRecord) -> None:
    if (record.exc_info and record.exc_info[1] is not None
        and "orbax" in (record.pathname or "")):
      with self._lock:
        self.errors.append(record.exc_info[1])

  def take(self) -> list[BaseException]:
    with self._lock:
      errors, self.errors = self.errors, []
    return errors


# ---------------------------------------------------------------------------- the manager

def _checkpoint_dir(workdir: str) -> str:
  # Orbax wants an absolute path; leave remote URLs (gs://...) alone.
  if "://" in workdir:
    return workdir.rstrip("/") + "/checkpoints"
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def _short(e: BaseException, limit: int = 100) -> str:
  """One line of an exception: its type and the first line of its message, cut to `limit`."""
  text = str(e).strip().splitlines()[0] if str(e).strip() else ""
  if len(text) > limit:
    text = text[:limit - 3] + "..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


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
    self._pending: int | None = None   # a step whose background write is not confirmed yet
    self._background_errors = _BackgroundErrors()
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
    meta[FINGERPRINT_KEY] = fingerprint
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    try:
      # force: save whenever asked; the loop, not orbax's interval policy, decides when.
      self._manager.save(int(step), args=ocp.args.Composite(**items), force=True)
    except Exception as e:  # pylint: disable=broad-except
      if _os_error_in(e) is None:
        raise
      self._after_failed_write()
      raise self._write_error(step, e) from e
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
      cause = next((e for e in map(_os_error_in, errors) if e is not None),
                   errors[-1] if errors else None)
      raise self._write_error(step, cause) from raised
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

  def _write_error(self, step: int, cause: BaseException | None) -> CheckpointWriteError:
    os_error = _os_error_in(cause)
    if os_error is not None:
      why = _WRITE_ERRNOS.get(os_error.errno, os_error.strerror or errno.errorcode.get(
          os_error.errno, str(os_error.errno)))
      why = f"{why} ({errno.errorcode.get(os_error.errno, os_error.errno)})"
    else:
      why = _short(cause) if cause is not None else "the write did not complete (see the log)"
    kept = self.all_steps()
    return CheckpointWriteError(
        f"could not write checkpoint step {step} to {self.directory}: {why}. Training stopped; "
        f"the checkpoints already there are untouched ({kept or 'none'}). Free space or fix "
        f"the directory (or use another --workdir), then run the same command to resume"
        + (f" from step {kept[-1]}" if kept else ""))

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
    meta.pop(FINGERPRINT_KEY, None)
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
      result = self._restore_checked(step, abstract_state, data_iterator)
    except DamagedCheckpointError as e:
      damage, result = e.reason, None
    # Every process must take the same branch (the fallback moves directories and restores
    # another step in lockstep), so one process's damaged file condemns the checkpoint for all.
    if not _all_processes_agree(damage is None):
      raise DamagedCheckpointError(step, damage or "damaged on another process", self.directory)
    return result

  def _damaged(self, step: int, reason: str) -> DamagedCheckpointError:
    return DamagedCheckpointError(step, reason, self.directory)

  def _restore_checked(self, step: int, abstract_state: Any,
                       data_iterator: Any) -> tuple[Any, dict]:
    # Any exception from orbax while *reading* means damaged files, never a crash: the tree
    # itself is compared against this run's below, before orbax is asked for any array.
    try:
      saved_items = self._manager.item_metadata(step)
    except Exception as e:  # pylint: disable=broad-except
      raise self._damaged(step, f"its metadata cannot be read ({_short(e)})") from e
    # With every handler registered, the keys are exactly the items on disk (the JSON and grain
    # handlers report None as their metadata, so test keys, not values).
    present = set(saved_items.keys())
    if saved_items.get("state") is None:
      raise self._damaged(step, "it has no readable 'state' item")
    if "meta" not in present:
      raise self._damaged(step, "its 'meta' item (counters, config, fingerprint) is missing")
    try:
      meta = dict(self._manager.restore(
          step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"] or {})
    except Exception as e:  # pylint: disable=broad-except
      raise self._damaged(step, f"its meta file cannot be read ({_short(e)})") from e
    fingerprint = meta.pop(FINGERPRINT_KEY, None)
    saved_tree = getattr(saved_items["state"], "tree", saved_items["state"])
    if fingerprint is None:
      logging.warning("checkpoint step %d was written without a fingerprint (an older version); "
                      "restoring it unchecked", step)
    else:
      if fingerprints.canonical_crc(meta) != fingerprint.get("meta"):
        raise self._damaged(step, "its meta (counters, config) fails the fingerprint")
      # The saved tree must be the one the fingerprint describes: a difference is damage to
      # orbax's metadata, while a tree that differs from *this run's* is a config change.
      recorded = {k: (tuple(v[0]), v[1]) for k, v in fingerprint["state"].items()}
      inconsistent = _describe_flat(_flat_shapes(saved_tree), recorded)
      if inconsistent:
        raise self._damaged(step, "its array metadata disagrees with its fingerprint ("
                            + "; ".join(inconsistent) + ")")
    # Compare trees first: orbax's own shape error does not say which array is wrong.
    problems = describe_mismatch(saved_tree, abstract_state)
    if problems:
      raise CheckpointError(self._mismatch_message(step, "\n  ".join(problems)))

    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))
    except Exception as e:  # pylint: disable=broad-except
      raise self._damaged(step, f"its arrays cannot be read ({_short(e)})") from e
    state = restored["state"]
    if fingerprint is not None:
      self._check_arrays(step, state, fingerprint["state"])
    if data_iterator is not None:
      if "data" in present:
        self._restore_data_position(step, data_iterator, fingerprint)
      elif fingerprint is not None and "data" in fingerprint:
        raise self._damaged(step, "its input-pipeline position ('data' item) is missing")
      else:
        logging.warning("checkpoint step %d has no data-iterator state; the input pipeline "
                        "starts from its beginning", step)
    return state, meta

  def _check_arrays(self, step: int, state: Any, recorded: dict[str, list]) -> None:
    problem = fingerprints.arrays_problem(state, recorded)
    if problem:
      raise self._damaged(step, problem)

  def _check_data_file(self, step: int, recorded: list[int]) -> None:
    """This process's iterator-state file (grain: data/process_<i>-of-<n>.json) against the
    fingerprint, before grain parses it: then a grain error can only mean another pipeline."""
    folder = os.path.join(self.step_directory(step), "data")
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    path = os.path.join(folder, name)
    if not os.path.exists(path):
      others = [f for f in os.listdir(folder) if f.startswith("process_")] if os.path.isdir(
          folder) else []
      if others:
        return  # another process count, or a grain version naming its files otherwise
      raise self._damaged(step, f"its input-pipeline position file data/{name} is missing")
    try:
      with open(path, "rb") as f:
        crc = fingerprints.data_state_crc(f.read().decode())
    except (OSError, UnicodeDecodeError) as e:
      raise self._damaged(step, f"data/{name} cannot be read ({_short(e)})") from e
    if len(recorded) != jax.process_count() or crc != recorded[jax.process_index()]:
      raise self._damaged(step, f"its input-pipeline position (data/{name}) fails the "
                          "fingerprint")

  def _restore_data_position(self, step: int, data_iterator: Any,
                             fingerprint: dict | None) -> None:
    if fingerprint is not None and "data" in fingerprint and "://" not in self.directory:
      self._check_data_file(step, fingerprint["data"])
    # Restored on its own so that a pipeline mismatch is not blamed on the model.
    try:
      self._manager.restore(step, args=ocp.args.Composite(
          data=grain.checkpoint.CheckpointRestore(data_iterator)))
    except Exception as e:  # pylint: disable=broad-except
      if isinstance(e, (ValueError, KeyError, TypeError)) and not isinstance(
          e, (json.JSONDecodeError, UnicodeDecodeError)):
        raise CheckpointError(
            f"checkpoint step {step} in {self.directory}: the saved input-pipeline position "
            "does not fit this run's pipeline. Resume with the data settings of the run that "
            "wrote it (config.data.num_workers, read_threads, format, root; the same batch "
            "size and process count), or start a new workdir with config.init_from pointing "
            f"here to keep only the weights:\n  {type(e).__name__}: {e}") from e
      raise self._damaged(step, f"its input-pipeline position cannot be read ({_short(e)})") from e
    if fingerprint is not None and "data" in fingerprint:
      want = fingerprint["data"]
      index = jax.process_index()
      if (len(want) != jax.process_count()
          or fingerprints.data_state_crc(data_iterator.get_state()) != want[index]):
        raise self._damaged(step, "its input-pipeline position fails the fingerprint")

  def _mismatch_message(self, step: int, detail: str) -> str:
    return (f"checkpoint step {step} in {self.directory} does not fit this run's train state "
            f"(did the model or optimizer config change, e.g. config.model.variant or "
            f"config.grad_clip_norm? Use a new workdir, or config.init_from to start from its "
            f"weights):\n  {detail}")

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

