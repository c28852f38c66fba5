"""Orbax checkpoints of (train state, grain iterator state, JSON meta) under WORKDIR/checkpoints.

Layout: WORKDIR/checkpoints/<step>/{state, data, meta}. `state` is any pytree of arrays (the
TrainState: params, opt_state, int32 step, uint32 raw key data); `data` is grain's per-process
iterator state; `meta` is a JSON dict (counters, the config).
"""
from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

# Shown per kind of difference when a checkpoint does not fit: enough to see the pattern.
_MAX_LISTED = 5


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored into the structure this run expects."""


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


def _path_str(path: tuple) -> str:
  """'params/blocks_0/attn/qkv/kernel' for a pytree path.

  Dict keys, attribute names and sequence indices all become plain names, because orbax stores
  a flax struct / namedtuple as a dict and reads tuples back as lists.
  """
  parts = []
  for entry in path:
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        parts.append(str(getattr(entry, attr)))
        break
    else:
      parts.append(str(entry))
  return "/".join(parts)


def _flat_shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], Any]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  # getattr: orbax describes saved Python scalars with metadata that may lack shape/dtype.
  return {_path_str(p): (tuple(getattr(x, "shape", ())), getattr(x, "dtype", None))
          for p, x in leaves}


def describe_mismatch(saved: Any, wanted: Any) -> list[str]:
  """Human-readable differences between two pytrees of shaped leaves (empty if they fit).

  Dtype differences are not listed: orbax casts on restore.
  """
  a, b = _flat_shapes(saved), _flat_shapes(wanted)
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
  """

  def __init__(self, workdir: str, *, keep: int, async_save: bool = True):
    self.directory = _checkpoint_dir(workdir)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    # Registering the handlers up front lets a fresh process read an existing checkpoint's
    # metadata (which items it has, the saved tree) before restoring; without them orbax
    # reports None for every item until something was saved or restored.
    handlers = {"state": ocp.StandardCheckpointHandler(),
                "data": grain.checkpoint.CheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler()}
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=handlers)

  def latest_step(self) -> int | None:
    """The newest finished checkpoint's step, or None when there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any = None,
           meta: dict | None = None) -> None:
    """Save `state` (+ the grain iterator's position, + JSON `meta`) as checkpoint `step`.

    Raises orbax's StepAlreadyExistsError (a ValueError) if `step` was already saved.
    """
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    if meta is not None:
      items["meta"] = ocp.args.JsonSave(meta)
    # force: save whenever asked; the loop, not orbax's interval policy, decides when.
    self._manager.save(int(step), args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_state: Any,
              data_iterator: Any = None) -> tuple[Any, dict]:
    """Restore checkpoint `step`.

    Args:
      step: a step in `all_steps()`.
      abstract_state: pytree of jax.ShapeDtypeStruct with `sharding=` (see `abstract_like`);
        arrays come back with those shardings, whatever mesh wrote them. Its structure and
        shapes must match the saved state (dtypes are cast).
      data_iterator: a fresh grain iterator of the same pipeline; its state is set in place.
    Returns:
      (state, meta): the restored pytree and the saved JSON dict ({} if none was saved).
    Raises:
      CheckpointError: no such step, or the saved state does not fit `abstract_state`.
    """
    steps = self.all_steps()
    if step not in steps:
      raise CheckpointError(f"no checkpoint for step {step} in {self.directory} "
                            f"(available: {steps})")
    saved_items = self._manager.item_metadata(step)
    # With every handler registered, the keys are exactly the items on disk (the JSON and grain
    # handlers report None as their metadata, so test keys, not values).
    present = set(saved_items.keys())
    if saved_items.get("state") is None:
      raise CheckpointError(f"checkpoint step {step} in {self.directory} has no 'state' item")
    # Compare trees first: orbax's own shape error does not say which array is wrong.
    saved_tree = getattr(saved_items["state"], "tree", saved_items["state"])
    problems = describe_mismatch(saved_tree, abstract_state)
    if problems:
      raise CheckpointError(self._mismatch_message(step, "\n  ".join(problems)))

    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if "meta" in present:
      items["meta"] = ocp.args.JsonRestore()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(self._mismatch_message(step, str(e))) from e
    if data_iterator is not None:
      if "data" in present:
        self._restore_data_position(step, data_iterator)
      else:
        logging.warning("checkpoint step %d has no data-iterator state; the input pipeline "
                        "starts from its beginning", step)
    meta = restored["meta"] if "meta" in items else None
    return restored["state"], dict(meta or {})

  def _restore_data_position(self, step: int, data_iterator: Any) -> None:
    # Restored on its own so that a pipeline mismatch is not blamed on the model.
    try:
      self._manager.restore(step, args=ocp.args.Composite(
          data=grain.checkpoint.CheckpointRestore(data_iterator)))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
          f"checkpoint step {step} in {self.directory}: the saved input-pipeline position does "
          "not fit this run's pipeline. Resume with the data settings of the run that wrote "
          "it (config.data.num_workers, read_threads, format, root; the same batch size and "
          "process count), or start a new workdir with config.init_from pointing here to keep "
          f"only the weights:\n  {type(e).__name__}: {e}") from e

  def _mismatch_message(self, step: int, detail: str) -> str:
    return (f"checkpoint step {step} in {self.directory} does not fit this run's train state "
            f"(did the model or optimizer config change, e.g. config.model.variant or "
            f"config.grad_clip_norm? Use a new workdir, or config.init_from to start from its "
            f"weights):\n  {detail}")

  def wait_until_finished(self) -> None:
    """Block until every background save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Wait for pending saves and release orbax's resources."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
