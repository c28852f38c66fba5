"""What every grain input pipeline of this package needs around grain itself.

grain reads an absl flag in `mp_prefetch`, and hands batches through POSIX shared memory that is
released on a background thread; both need care outside `app.run` and at the end of a run.
"""
from __future__ import annotations

import gc

from absl import flags
from absl import logging


def ensure_absl_flags_parsed() -> None:
  """Mark absl flags parsed (keeping every default) so grain can read its own."""
  # grain's mp_prefetch reads an absl flag, which raises UnparsedFlagAccessError outside
  # `app.run` (notebooks, pytest, library use). Marking them parsed keeps every default.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def close_iterator(iterator) -> None:
  """Stops the pipeline and frees the shared memory of every batch it handed out.

  With worker processes, grain passes each batch through a POSIX shared-memory block that the
  main process unlinks when the batch array is garbage-collected -- on a background thread
  (`SharedMemoryArray.enable_async_del`). A program that exits right after training leaves the
  last batches' unlinks queued on that thread, and Python's resource_tracker then reports
  "leaked shared_memory objects" and unlinks them itself. Callers drop their own references to
  batches first; this closes the iterator (its buffered batches are released), collects cycles
  and waits until the queued unlinks have run.
  """
  close = getattr(iterator, "close", None)
  if close is not None:
    close()
  gc.collect()
  _wait_for_shared_memory_release()


def _wait_for_shared_memory_release(timeout_s: float = 30.0) -> None:
  # grain's deletion pool is private; if a release renames it, skip the wait (the only cost is
  # resource_tracker's warning at exit, whose cleanup still frees the memory).
  try:
    from grain._src.python.ipc import shared_memory_array
    array_type = shared_memory_array.SharedMemoryArray
    pool = array_type._del_thread_pool  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return
  if pool is None:
    return
  try:
    # One thread, first in first out: once this no-op has run, every unlink queued before it has.
    pool.apply_async(int).get(timeout=timeout_s)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("could not wait for grain's shared-memory release: %s", e)
