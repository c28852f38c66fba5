"""The one trainer: data -> sharded jitted step -> metrics, figures, evaluation, checkpoints.

A task (`train/task.py`'s registry: 'pretrain' = DropMAE, 'droptrack' = tracker fine-tuning,
picked by `config.task`) supplies the model, optimizer, train state, input pipeline, step, figure and
periodic evaluation; this loop does the rest for every task alike: mesh and shardings, a donated
jitted step, orbax checkpoints holding the grain iterator position, resume, the NaN stop (before
anything of that step is saved), a SIGTERM save, metrics.jsonl, TensorBoard, a progress bar,
the closing summary and "already finished".

Resumable: the train state (params, optimizer, step, run key, and any model state such as
BatchNorm statistics), the grain iterator state and the bookkeeping counters are saved together,
and every random draw is a pure function of (seed, step), so a run killed and resumed produces
the same losses as one that was never interrupted.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from dropmae_jax.config.loading import ConfigError
from dropmae_jax.train import checkpoint as ckpt_lib
from dropmae_jax.train import metrics as metrics_lib
from dropmae_jax.train import sharding
from dropmae_jax.train import task as tasks_lib


class NonFiniteLossError(FloatingPointError):
  """Raised when a step produced a NaN/inf loss; nothing from that step is saved."""


@dataclasses.dataclass
class RunPlan:
  """Derived sizes of a run (everything here follows from the config and the dataset)."""
  num_videos: int          # examples an epoch is made of (videos; tracking: pairs per epoch)
  steps_per_epoch: int
  total_steps: int
  per_host_batch: int


def under_mesh(mesh, fn):
  """Calls fn with `mesh` set as JAX's current mesh (visible while tracing)."""
  def call(*args):
    with jax.set_mesh(mesh):
      return fn(*args)
  return call


_under_mesh = under_mesh


@contextlib.contextmanager
def _as_config_errors() -> Iterator[None]:
  """Setup-time ValueErrors (and a missing data root) become ConfigError.

  Everything built before the first step is derived from the config (the model, optimizer,
  mesh, data root), and those errors name the field; as ConfigError the CLI prints them as one
  line and exits 2 instead of a traceback.
  """
  try:
    yield
  except ConfigError:
    raise
  except (ValueError, FileNotFoundError, NotADirectoryError) as e:
    raise ConfigError(str(e)) from e


def due(step_no: int, every: int) -> bool:
  """Is a periodic action (checkpoint, figure) due after `step_no`? every <= 0 means never."""
  every = int(every)
  return every > 0 and step_no % every == 0


def plan_run(config: ml_collections.ConfigDict, num_videos: int) -> RunPlan:
  """Check the batch arithmetic against the machine and derive steps.

  Args:
    num_videos: examples per epoch (steps_per_epoch = num_videos // batch_size unless set).
  Raises:
    ConfigError (a ValueError): naming config.batch_size or config.accum_steps.
  """
  processes, devices = jax.process_count(), jax.device_count()
  gb = int(config.batch_size)
  if gb <= 0 or gb % processes:
    raise ConfigError(f"config.batch_size={gb} must be a positive multiple of the "
                      f"{processes} processes")
  if gb % devices:
    raise ConfigError(f"config.batch_size={gb} must be divisible by the {devices} devices")
  if int(config.log_every) < 1:
    raise ConfigError(f"config.log_every={config.log_every} must be >= 1 (steps between "
                      "metrics rows; the last step is always logged)")
  if int(config.keep_ckpts) < 1:
    raise ConfigError(f"config.keep_ckpts={config.keep_ckpts} must be >= 1 (the run's own "
                      "checkpoints are what resume and export read)")
  if config.accum_steps < 1 or (gb // devices) % config.accum_steps:
    raise ConfigError(f"config.accum_steps={config.accum_steps} must divide the per-device "
                      f"batch {gb // devices}")
  steps_per_epoch = (config.steps_per_epoch if config.steps_per_epoch > 0
                     else max(1, num_videos // gb))
  total = (config.total_steps if config.total_steps > 0
           else int(math.ceil(config.epochs * steps_per_epoch)))
  return RunPlan(num_videos, steps_per_epoch, total, gb // processes)


class _Preemption:
  """Turns SIGTERM (preemption) into a flag the loop checks, so it saves and exits cleanly."""

  def __init__(self):
    self.requested = False
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. a notebook worker): no handler
      pass

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping")
    self.requested = True


# A non-finite loss this many steps or fewer after a restore names the checkpoint first.
SUSPECT_STEPS_AFTER_RESTORE = 10


@dataclasses.dataclass(frozen=True)
class Restored:
  """The checkpoint this run resumed from (for the NaN message)."""
  step: int
  path: str
  older_steps: tuple[int, ...]  # checkpoints older than it, still on disk


def _check_finite(metrics: dict[str, float], step: int, last_saved: int | None,
                  restored: Restored | None = None) -> None:
  bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
  if not bad:
    return
  head = (f"non-finite values at step {step}: {bad}. Training stopped; nothing from this step "
          f"was saved (last checkpoint: step {last_saved}).")
  lr_advice = ("Lower the learning rate (config.blr / config.lr) or set config.grad_clip_norm, "
               "then resume.")
  if restored is not None and 0 < step - restored.step <= SUSPECT_STEPS_AFTER_RESTORE:
    # Right after a restore the first suspect is what was restored: values that were already
    # bad when saved pass the fingerprint (it proves the files are as written, not sane).
    older = (f"--config.restore_step={restored.older_steps[-1]} (older checkpoints: "
             f"{list(restored.older_steps)})" if restored.older_steps else
             "--config.restore_step=<an older step> (none is left in this workdir)")
    raise NonFiniteLossError(
        f"{head} This run resumed from checkpoint step {restored.step} ({restored.path}) "
        f"{step - restored.step} step(s) before: suspect that checkpoint first. Resume from an "
        f"older one with {older}; if the loss still diverges there, the cause is the "
        f"optimisation: {lr_advice}")
  raise NonFiniteLossError(f"{head} {lr_advice}")


def _restore_plan(checkpointer: ckpt_lib.Checkpointer,
                  requested: int) -> tuple[list[int], int | None]:
  """(candidate steps to restore, newest first; the step rolled back to, or None).

  requested < 0: every checkpoint, newest first (damaged ones are skipped). requested >= 0: that
  step only, and the newer ones are set aside after it restored -- unless the newest checkpoint
  was written by a run that already rolled back to it (a relaunch of the same command, e.g.
  after a preemption): that run goes on.
  Raises:
    ConfigError: config.restore_step names no checkpoint.
  """
  steps = checkpointer.all_steps()
  if requested < 0:
    return steps[::-1], None
  if steps and steps[-1] > requested:
    meta = checkpointer.read_meta(steps[-1])
    if meta and meta.get("restored_from") == requested:
      logging.info("config.restore_step=%d was applied by an earlier run of this command; "
                   "resuming from its newest checkpoint, step %d", requested, steps[-1])
      return steps[::-1], None
  if requested not in steps:
    raise ConfigError(f"config.restore_step={requested}: there is no checkpoint for that step in "
                      f"{checkpointer.directory} (available: {steps}; -1 = the newest)")
  return [requested], requested


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       task: tasks_lib.Task | None = None) -> dict[str, float]:
  """Runs `config.task` into `workdir`. Returns the last logged metrics.

  A workdir whose last checkpoint is already at the end of the schedule is left alone: it
  says so ("already finished at step N") and returns that run's last metrics.

  Args:
    task: the task to run (default: `tasks.get_task(config, workdir)`).
  Raises:
    ConfigError: a config mistake found while setting up (before any step ran).
    NonFiniteLossError: a step produced NaN/inf.
    checkpoint.CheckpointError: the workdir holds a checkpoint of another config, every
      checkpoint in it is damaged, or a checkpoint could not be written (disk full, read-only).
  """
  run_start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  if task is None:
    task = tasks_lib.get_task(config, workdir)
  with _as_config_errors():
    num_examples = task.num_examples()
  plan = plan_run(config, num_examples)

  with _as_config_errors():
    task.build(plan)
    mesh = sharding.make_mesh(config.mesh)

  checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.keep_ckpts)
  requested = int(config.get("restore_step", -1))
  try:
    candidates, rollback = _restore_plan(checkpointer, requested)
  except BaseException:
    checkpointer.close()
    raise
  latest = candidates[0] if candidates else None
  if rollback is None and latest is not None and latest >= plan.total_steps:
    checkpointer.close()
    if is_main:
      logging.info("already finished at step %d of %d (workdir %s): nothing to do; checkpoint %s",
                   latest, plan.total_steps, workdir,
                   os.path.join(checkpointer.directory, str(latest)))
    return metrics_lib.read_last_row(workdir)
  unit = "videos" if config.get("task", "pretrain") == "pretrain" else "pairs/epoch"
  logging.info("%d %s, %d steps/epoch, %d steps in all, %d pairs/host/step",
               plan.num_videos, unit, plan.steps_per_epoch, plan.total_steps, plan.per_host_batch)
  batch_sharding = sharding.batch_sharding(mesh)
  repl = sharding.replicated(mesh)

  abstract_state = jax.eval_shape(task.create_state)
  state_shardings = sharding.state_shardings(abstract_state, mesh)

  try:
    with _as_config_errors():  # e.g. a dataset root that is not there
      data_iter = task.make_iterator(plan)
  except BaseException:
    checkpointer.close()
    raise
  counters = {k: 0 for k in task.counters}
  restored: Restored | None = None
  if latest is not None:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, state_shardings)
    try:
      # The newest checkpoint that is not damaged (those newer are moved to corrupt-<step>).
      resumed_step, state, meta = checkpointer.restore_newest_good(target, data_iter,
                                                                   steps=candidates)
      if rollback is not None:
        # Kept, not deleted, and out of the way of this run's saves of the same steps.
        newer = [s for s in checkpointer.all_steps() if s > rollback]
        moved = [checkpointer.quarantine(s, prefix="superseded-") for s in newer]
        if newer:
          logging.warning("config.restore_step=%d: the newer checkpoints %s were moved to %s",
                          rollback, newer, ", ".join(moved))
    except BaseException:
      # Stop the worker processes before the error reaches the user (they would outlive it).
      checkpointer.close()
      task.close_iterator(data_iter)
      raise
    counters.update({k: int(v) for k, v in (meta or {}).get("counters", {}).items()})
    restored = Restored(resumed_step, checkpointer.step_directory(resumed_step),
                        tuple(s for s in checkpointer.all_steps() if s < resumed_step))
    logging.info("resumed from step %d", resumed_step)
  else:
    try:
      state = jax.jit(task.create_state, out_shardings=state_shardings)()
      with _as_config_errors():
        state = task.load_initial(state, state_shardings)
    except BaseException:
      checkpointer.close()
      task.close_iterator(data_iter)
      raise

  train_step = task.compile_step(mesh, state_shardings, repl)

  writer = metrics_lib.MetricWriter(workdir, is_main_process=is_main)
  first_step = int(jax.device_get(state.step))
  last_step = plan.total_steps
  if config.max_steps > 0:
    last_step = min(last_step, first_step + config.max_steps)
  progress = metrics_lib.ProgressBar(total=last_step, initial=first_step, enabled=is_main)

  def warn(line: str) -> None:
    with progress.above():
      logging.warning("%s", line)

  preemption = _Preemption()
  last_saved = restored.step if restored is not None else None
  interval: dict[str, list[float]] = {k: [] for k in task.mean_keys}
  pending: tuple[int, Any] | None = None  # metrics of the step before, fetched one step late
  timer_start, timer_steps = None, 0
  run_steps, run_seconds = 0, 0.0  # timed steps (compilation excluded), for the summary
  logged: dict[str, float] = {}
  step_no = first_step
  local = batch = None
  extra_outputs: list[str] = []

  def meta() -> dict:
    saved = {"counters": dict(counters), "config": config.to_json_best_effort()}
    if requested >= 0:  # a relaunch of this command resumes instead of rolling back again
      saved["restored_from"] = requested
    return saved

  def settle(item) -> dict[str, float]:
    step_no, device_metrics = item
    host = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    _check_finite(host, step_no, last_saved, restored)
    for k in task.mean_keys:
      interval[k].append(host[k])
    return task.settle(host, counters)

  failed = True
  try:
    for step_no in range(first_step + 1, last_step + 1):
      local = next(data_iter)
      batch = sharding.global_batch(task.device_batch(local, counters, warn), batch_sharding)
      state, device_metrics = train_step(state, batch, step_no)
      # Fetch the previous step's metrics now: the device already runs this step, so the
      # NaN check costs no pipeline stall.
      if pending is not None:
        settle(pending)
      pending = (step_no, device_metrics)
      if timer_start is None:  # exclude compilation from throughput
        jax.block_until_ready(device_metrics)
        timer_start, timer_steps = time.perf_counter(), 0
      else:
        timer_steps += 1

      is_last = step_no == last_step or preemption.requested
      checkpoint_due = due(step_no, config.ckpt_every) or is_last
      if step_no % config.log_every == 0 or checkpoint_due:
        host = settle(pending)
        pending = None
        if step_no % config.log_every == 0 or is_last:
          elapsed = time.perf_counter() - timer_start
          pairs_per_sec = (timer_steps * config.batch_size / elapsed) if timer_steps else float("nan")
          means = {k: float(np.mean(v)) for k, v in interval.items()}
          logged = task.log_row(host, means, counters, step_no, plan)
          logged["pairs_per_sec"] = pairs_per_sec
          writer.write(step_no, logged)
          progress.update(step_no, loss=logged["loss"], pairs_per_sec=pairs_per_sec)
          task.report(step_no, counters, warn)
          for v in interval.values():
            v.clear()
          run_steps, run_seconds = run_steps + timer_steps, run_seconds + elapsed
          timer_start, timer_steps = time.perf_counter(), 0

      if due(step_no, config.figure_every):
        task.figure(state, batch, step_no, is_main)

      evaluation = task.evaluate(state, step_no, plan, is_last=step_no == plan.total_steps)
      if evaluation:
        if pending is not None:  # the step's loss is checked before its evaluation is kept
          settle(pending)
          pending = None
        writer.write(step_no, evaluation)
        with progress.above():
          logging.info("step %d: %s", step_no, ", ".join(f"{k} {v:.4g}"
                                                         for k, v in evaluation.items()))
        # Evaluation time is not training time.
        if timer_start is not None:
          timer_start, timer_steps = time.perf_counter(), 0

      if checkpoint_due:
        checkpointer.save(step_no, state, data_iter, meta())
        last_saved = step_no
      if preemption.requested:
        break
    extra_outputs = task.finish(state, step_no, plan)
    failed = False
  finally:
    close_error = None
    try:
      checkpointer.close()  # waits for the last save: a failed write is reported here
    except ckpt_lib.CheckpointError as e:
      close_error = e
    writer.close()
    progress.close()
    # Our references to the last batch go first, so that closing frees its shared memory.
    local = batch = None
    task.close_iterator(data_iter)
    if close_error is not None:
      if not failed:
        raise close_error  # pylint: disable=lost-exception
      logging.error("%s", close_error)  # the error already on its way says more
  if is_main:
    logging.info("%s", _summary(
        config, plan, workdir, first_step=first_step, step=step_no,
        preempted=preemption.requested, logged=logged,
        pairs_per_sec=run_steps * config.batch_size / run_seconds if run_seconds else None,
        seconds=time.perf_counter() - run_start,
        checkpoint=(os.path.join(checkpointer.directory, str(last_saved))
                    if last_saved is not None else None),
        extra=extra_outputs))
  return logged


def _summary(config: ml_collections.ConfigDict, plan: RunPlan, workdir: str, *, first_step: int,
             step: int, preempted: bool, logged: dict[str, float],
             pairs_per_sec: float | None, seconds: float, checkpoint: str | None,
             extra: list[str] = ()) -> str:
  """The closing line: where the run stopped and why, loss, speed, and where its outputs are."""
  if preempted:
    how = f"stopped by SIGTERM at step {step} of {plan.total_steps}"
  elif step >= plan.total_steps:
    how = f"finished: step {step} of {plan.total_steps}"
  else:
    how = (f"stopped at step {step} of {plan.total_steps} (config.max_steps={config.max_steps})")
  parts = [f"{how}, {step - first_step} steps in {metrics_lib.format_duration(seconds)}"]
  if "loss" in logged:
    parts.append(f"final loss {logged['loss']:.4g}")
  if pairs_per_sec is not None:
    parts.append(f"{pairs_per_sec:.4g} pairs/s")
  where = [f"checkpoint {checkpoint}" if checkpoint else "no checkpoint",
           f"metrics {os.path.join(workdir, 'metrics.jsonl')}"]
  where.extend(extra)
  figures_dir = os.path.join(workdir, "figures")
  if os.path.isdir(figures_dir):
    where.append(f"figures {figures_dir}")
  line = "; ".join(parts) + ". " + ", ".join(where)
  if step < plan.total_steps:
    line += ". Run the same command again to continue"
  return line
