"""Disk errors of a save: the file-system cause behind orbax's wrapped (or only logged) failure.

A save that cannot be written (disk full, read-only, no permission) stops the run with a
CheckpointWriteError naming the directory, the cause and the checkpoints left untouched.
"""
from __future__ import annotations

import errno
import logging as py_logging
import threading

from dropmae_jax.train.checkpoint.errors import CheckpointWriteError, short

WRITE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
                errno.EROFS: "the file system is read-only",
                errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


def os_error_in(exc: BaseException | None) -> OSError | None:
  """The first OSError in `exc`'s cause/context chain (orbax wraps the file system's errors)."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if isinstance(exc, OSError) and exc.errno is not None:
      return exc
    for inner in getattr(exc, "exceptions", ()):  # ExceptionGroup from asyncio
      found = os_error_in(inner)
      if found is not None:
        return found
    exc = exc.__cause__ or exc.__context__
  return None


class BackgroundErrors(py_logging.Handler):
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


def write_error(directory: str, step: int, cause: BaseException | None,
                kept: list[int]) -> CheckpointWriteError:
  """The error that stops the run when checkpoint `step` could not be written to `directory`.

  Args:
    cause: what orbax raised or logged (its OSError, if any, names the reason).
    kept: the steps still complete in `directory`, which the message offers to resume from.
  """
  os_error = os_error_in(cause)
  if os_error is not None:
    why = WRITE_ERRNOS.get(os_error.errno, os_error.strerror or errno.errorcode.get(
        os_error.errno, str(os_error.errno)))
    why = f"{why} ({errno.errorcode.get(os_error.errno, os_error.errno)})"
  else:
    why = short(cause) if cause is not None else "the write did not complete (see the log)"
  return CheckpointWriteError(
      f"could not write checkpoint step {step} to {directory}: {why}. Training stopped; "
      f"the checkpoints already there are untouched ({kept or 'none'}). Free space or fix "
      f"the directory (or use another --workdir), then run the same command to resume"
      + (f" from step {kept[-1]}" if kept else ""))
