"""Orbax checkpoints of (train state, grain iterator state, JSON metadata) under WORKDIR/checkpoints."""
from __future__ import annotations

import os
from typing import Any

import grain
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored into the structure this run expects."""


class Checkpointer:
  """Periodic async saves with keep-last-N; restores with the target shardings of this run."""

  def __init__(self, workdir: str, *, keep: int, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator=None, meta: dict | None = None) -> None:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    if meta is not None:
      items["meta"] = ocp.args.JsonSave(meta)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_state: Any, data_iterator=None) -> tuple[Any, dict]:
    """Restore step `step`.

    Args:
      abstract_state: pytree of jax.ShapeDtypeStruct (with `sharding=`) that the state must match;
        arrays come back with those shardings, whatever mesh wrote them.
      data_iterator: a fresh grain iterator of the same pipeline; its state is set in place.
    Returns:
      (state, meta dict).
    """
    saved = set(self._manager.item_metadata(step).keys()) if hasattr(
        self._manager, "item_metadata") else {"state", "data", "meta"}
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None and "data" in saved:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    if "meta" in saved:
      items["meta"] = ocp.args.JsonRestore()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory} does not match this run's model/optimizer "
          f"(did the config change? e.g. config.model.variant): {e}") from e
    return restored["state"], (restored.get("meta") if "meta" in saved else None) or {}

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
