"""The Task interface of the one trainer (`train/loop.py`), and the registry `config.task` names.

A task supplies the model, optimizer, train state, input pipeline, jitted step, figures and
optional periodic evaluation; the loop supplies everything around them (mesh and shardings,
resume, orbax checkpoints with the data position, NaN stop, SIGTERM save, metrics.jsonl,
TensorBoard, progress bar, closing summary). `config.task` picks one:

  'pretrain'   pretrain/task.py   DropMAE (masked two-frame reconstruction with ASAD)
  'droptrack'  track/task.py      DropTrack / OSTrack-CE fine-tuning on tracking pairs
  'dropseg'    vos/task.py        DropSeg fine-tuning on video object segmentation pairs

Tasks are found by module name and imported only when chosen, so `train/` imports no task.
"""
from __future__ import annotations

import abc
import importlib
from typing import Any, Callable

import jax
import ml_collections

from dropmae_jax.config.loading import ConfigError


class Task(abc.ABC):
  """The task side of a training run. The loop calls, in order:

    num_examples() -> steps_per_epoch basis, then build(plan), create_state (traced under jit),
    load_initial(state, shardings) on a fresh run, make_iterator(plan) / close_iterator,
    compile_step(...), and per step: device_batch(local) -> step(state, batch, step_no) ->
    settle(host metrics) -> log_row(...) / figure(...) / evaluate(...).

  Attributes:
    counters: running totals saved in each checkpoint's meta (resumed runs continue them).
    mean_keys: metrics averaged over the log interval (the rest are the interval's last value).
  """
  counters: tuple[str, ...] = ()
  mean_keys: tuple[str, ...] = ("loss",)

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir

  @abc.abstractmethod
  def num_examples(self) -> int:
    """Examples per epoch before the batch split (videos, or pairs per epoch); opens the data."""

  @abc.abstractmethod
  def build(self, plan) -> None:
    """Model, lr schedule and optimizer for the run's `plan` (loop.RunPlan)."""

  @abc.abstractmethod
  def create_state(self) -> Any:
    """A fresh train state (pure: the loop jits it with the state shardings)."""

  def load_initial(self, state: Any, shardings: Any) -> Any:
    """Apply config.init_from to a fresh state (default: nothing to load)."""
    return state

  @abc.abstractmethod
  def make_iterator(self, plan) -> Any:
    """This host's grain iterator of numpy batches (get_state / set_state)."""

  @abc.abstractmethod
  def close_iterator(self, iterator) -> None:
    """Stop the iterator's workers and release its shared memory."""

  @abc.abstractmethod
  def compile_step(self, mesh, state_shardings, replicated) -> Callable:
    """-> step(state, global_batch, step_no) -> (state, device metrics); donates the state."""

  @abc.abstractmethod
  def device_batch(self, local: dict, counters: dict, warn: Callable[[str], None]) -> dict:
    """The numpy arrays of a host batch that go to the devices (and note skipped inputs)."""

  @abc.abstractmethod
  def settle(self, host: dict[str, float], counters: dict[str, int]) -> dict[str, float]:
    """Fold a step's input-side counts into `counters`; return the remaining metrics."""

  @abc.abstractmethod
  def log_row(self, host: dict[str, float], means: dict[str, float], counters: dict[str, int],
              step_no: int, plan) -> dict[str, float]:
    """The metrics.jsonl row for a log step (without pairs_per_sec, which the loop adds)."""

  def report(self, step_no: int, counters: dict[str, int], warn: Callable[[str], None]) -> None:
    """At a log step: say what was skipped since the last report (default: nothing)."""

  def figure(self, state: Any, batch: dict, step_no: int, is_main: bool) -> None:
    """Write this step's figure under WORKDIR/figures (every config.figure_every steps)."""

  def evaluate(self, state: Any, step_no: int, plan, *, is_last: bool) -> dict[str, float] | None:
    """Periodic evaluation after step `step_no` (None: not due)."""
    return None

  def finish(self, state: Any, step_no: int, plan) -> list[str]:
    """At the end of the run (every process): extra outputs; returns 'what: where' strings."""
    return []


# config.task -> "module:class" of its Task; the module is imported when the task is chosen.
TASKS = {
    "pretrain": "dropmae_jax.pretrain.task:PretrainTask",
    "droptrack": "dropmae_jax.track.task:DropTrackTask",
    "dropseg": "dropmae_jax.vos.task:DropSegTask",
}


def get_task(config: ml_collections.ConfigDict, workdir: str) -> Task:
  """The Task for `config.task`."""
  name = config.get("task", "pretrain")
  if name not in TASKS:
    known = " or ".join(repr(k) for k in TASKS)
    raise ConfigError(f"config.task={name!r}: expected {known}")
  module_name, class_name = TASKS[name].split(":")
  return getattr(importlib.import_module(module_name), class_name)(config, workdir)


def host_tree(tree: Any) -> Any:
  """A (possibly sharded, possibly multi-host) pytree of arrays -> numpy on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)
