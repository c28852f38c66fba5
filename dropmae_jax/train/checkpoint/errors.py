"""What a checkpoint raises when it cannot be restored, is damaged, or cannot be written."""
from __future__ import annotations


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


def short(e: BaseException, limit: int = 100) -> str:
  """One line of an exception: its type and the first line of its message, cut to `limit`."""
  text = str(e).strip().splitlines()[0] if str(e).strip() else ""
  if len(text) > limit:
    text = text[:limit - 3] + "..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__
