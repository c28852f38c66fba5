"""Reading one checkpoint step back and proving it intact, before anything is restored from it.

A checkpoint that cannot be read or fails its fingerprint (`fingerprint.py`) is damaged
(DamagedCheckpointError); one that reads fine but does not fit this run's train state is a config
mismatch (CheckpointError). The tree is compared against this run's before orbax is asked for any
array; the input-pipeline position is restored on its own, so a pipeline mismatch is not blamed on
the model.
"""
from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

from dropmae_jax.train import fingerprint as fingerprints
from dropmae_jax.train.checkpoint.errors import CheckpointError, DamagedCheckpointError, short

# Shown per kind of difference when a checkpoint does not fit: enough to see the pattern.
_MAX_LISTED = 5


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


class CheckedReader:
  """Reads the checkpoint steps of one orbax manager on this process, checked against their
  fingerprints.

  Every method raises DamagedCheckpointError for files that cannot be read or fail the fingerprint,
  CheckpointError for a checkpoint that does not fit this run; agreeing across processes is the
  caller's job (`Checkpointer.restore`).
  """

  def __init__(self, manager: ocp.CheckpointManager, directory: str):
    self._manager, self.directory = manager, directory

  def step_directory(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _damaged(self, step: int, reason: str) -> DamagedCheckpointError:
    return DamagedCheckpointError(step, reason, self.directory)

  def read(self, step: int, abstract_state: Any, data_iterator: Any) -> tuple[Any, dict]:
    """`Checkpointer.restore` on this process alone: (state, meta), or the error of the first check
    that fails."""
    # Any exception from orbax while *reading* means damaged files, never a crash: the tree
    # itself is compared against this run's below, before orbax is asked for any array.
    try:
      saved_items = self._manager.item_metadata(step)
    except Exception as e:  # pylint: disable=broad-except
      raise self._damaged(step, f"its metadata cannot be read ({short(e)})") from e
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
      raise self._damaged(step, f"its meta file cannot be read ({short(e)})") from e
    fingerprint = meta.pop(fingerprints.FINGERPRINT_KEY, None)
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
      raise self._damaged(step, f"its arrays cannot be read ({short(e)})") from e
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
      raise self._damaged(step, f"data/{name} cannot be read ({short(e)})") from e
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
      raise self._damaged(step, f"its input-pipeline position cannot be read ({short(e)})") from e
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
