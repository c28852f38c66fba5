"""The DropMAE pre-training task: videos -> frame pairs -> masked reconstruction with ASAD.

Plugged into the one trainer (`train/loop.py`); behaviour is the pre-training loop's as it was:
the same state, step, metrics, figures and checkpoint meta.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from dropmae_jax.config.loading import ConfigError
from dropmae_jax.data import frame_store
from dropmae_jax.data import index as data_index
from dropmae_jax.pretrain import pipeline as data_pipeline
from dropmae_jax.data import samples
from dropmae_jax.models import mae
from dropmae_jax.pretrain import figures
from dropmae_jax.train import metrics as metrics_lib
from dropmae_jax.pretrain import optim
from dropmae_jax.pretrain import step as step_lib
from dropmae_jax.train import loop
from dropmae_jax.train import task as tasks

def open_videos(data_config: ml_collections.ConfigDict, workdir: str):
  """The run's videos: a list of files ('video'), a FrameStore ('frames') or a TFDS dataset
  ('tfds', data/tfds_reader.py).

  Raises:
    ConfigError: the root, list file or format does not give any video (the message names
      the field).
  """
  with loop._as_config_errors():
    if data_config.format == "video":
      return data_index.list_videos(samples.resolve_data_root(data_config.root, workdir),
                                    data_config.list_file)
    if data_config.format == "frames":
      return frame_store.FrameStore(data_config.root)
    if data_config.format == "tfds":
      from dropmae_jax.data import tfds_reader  # imports tensorflow_datasets only when asked for
      return tfds_reader.TfdsFrames(data_config.tfds_name, data_config.tfds_data_dir)
    raise ConfigError(f"config.data.format must be 'video', 'frames' or 'tfds', "
                      f"got {data_config.format!r}")


def load_initial_params(state: step_lib.TrainState, path: str, shardings) -> step_lib.TrainState:
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


class PretrainTask(tasks.Task):
  """DropMAE pre-training: the released K700 recipe (DropMAE `main_pretrain_kinetics.py`)."""
  counters = ("skipped_videos", "repeated_frames")
  mean_keys = ("loss",)

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    super().__init__(config, workdir)
    self._paths = None
    self._skip_log = None

  def num_examples(self) -> int:
    self._paths = open_videos(self.config.data, self.workdir)
    return len(self._paths)

  def build(self, plan) -> None:
    c = self.config
    self.model = mae.DropMAE.from_config(c)
    self.lr_schedule = optim.make_lr_schedule(c, plan.steps_per_epoch)
    self.tx = optim.make_optimizer(c, plan.steps_per_epoch)

  def create_state(self) -> step_lib.TrainState:
    size = self.config.model.img_size
    init_frames = jnp.zeros((1, 2, size, size, 3), jnp.float32)
    return step_lib.create_state(self.model, self.tx, self.config.seed, init_frames)

  def load_initial(self, state, shardings):
    if not self.config.init_from:
      return state
    return load_initial_params(state, self.config.init_from, shardings)

  def make_iterator(self, plan):
    return data_pipeline.make_train_iterator(
        self.config.data, self._paths, img_size=self.config.model.img_size,
        per_host_batch=plan.per_host_batch, seed=self.config.seed,
        process_index=jax.process_index(), process_count=jax.process_count())

  def close_iterator(self, iterator) -> None:
    data_pipeline.close_iterator(iterator)

  def compile_step(self, mesh, state_shardings, replicated) -> Callable:
    from dropmae_jax.train import loop
    c = self.config
    step_fn = step_lib.make_train_step(self.model, self.tx, self.lr_schedule,
                                       accum_steps=c.accum_steps,
                                       norm_pix_loss=c.model.norm_pix_loss)
    # Traced under the mesh: Pallas ASAD kernels read it to run per batch shard (shard_map).
    jitted = loop.under_mesh(mesh, jax.jit(lambda s, b: step_fn(s, b, step_lib.step_rng(s)),
                                           donate_argnums=(0,),
                                           out_shardings=(state_shardings, replicated)))
    recon_fn = step_lib.make_reconstruct(self.model)
    # Every process runs it (params may span hosts); the result is replicated so process 0 can
    # plot.
    self._reconstruct = loop.under_mesh(mesh, jax.jit(lambda p, f, r: recon_fn(p, f[:1], r),
                                                      out_shardings=replicated))
    return lambda state, batch, step_no: jitted(state, batch)

  def device_batch(self, local: dict, counters: dict, warn) -> dict:
    if self._skip_log is None:
      self._skip_log = metrics_lib.SkippedVideoLog(warn, total=counters["skipped_videos"])
    if jax.process_index() == 0 and local["skipped"].any():
      self._skip_log.name(str(r) for r in local["skip_reason"][local["skipped"] > 0])
    return {k: local[k] for k in ("frames", "skipped", "repeated")}

  def settle(self, host: dict[str, float], counters: dict[str, int]) -> dict[str, float]:
    counters["skipped_videos"] += int(host.pop("skipped"))
    counters["repeated_frames"] += int(host.pop("repeated"))
    return host

  def log_row(self, host, means, counters, step_no, plan) -> dict[str, float]:
    return {"loss": means["loss"], "lr": host["lr"], "grad_norm": host["grad_norm"],
            "param_norm": host["param_norm"], "epoch": step_no / plan.steps_per_epoch,
            "skipped_videos": counters["skipped_videos"],
            "repeated_frames": counters["repeated_frames"]}

  def report(self, step_no: int, counters: dict[str, int], warn) -> None:
    if jax.process_index() == 0 and self._skip_log is not None:
      self._skip_log.report(step_no, counters["skipped_videos"])

  def evaluate(self, state, step_no: int, plan, *, is_last: bool) -> dict[str, float] | None:
    """Zero-shot label propagation every config.eval.label_propagation_every steps (and at the end)."""
    every = self.config.eval.label_propagation_every if "eval" in self.config else 0
    if every <= 0 or not (step_no % every == 0 or is_last):
      return None
    from dropmae_jax.vos import during_training
    return during_training.label_propagation_eval(tasks.host_tree(state.params), self.config,
                                                  step_no, self.workdir)

  def figure(self, state: Any, batch: dict, step_no: int, is_main: bool) -> None:
    """PNG of frame x / frame z, the mask and the reconstruction for the batch's first pair."""
    c = self.config
    rng = jax.random.fold_in(jax.random.key(c.seed + 1), step_no)
    frames, out = jax.device_get(self._reconstruct(state.params, batch["frames"], rng))
    if not is_main:
      return
    path = os.path.join(self.workdir, "figures", f"reconstruction_{step_no:08d}.png")
    figures.reconstruction_figure(np.asarray(frames[0]), np.asarray(out.mask[0]),
                                  np.asarray(out.pred[0]), patch_size=self.model.patch_size,
                                  norm_pix_loss=c.model.norm_pix_loss, mean=mae.IMAGENET_MEAN,
                                  std=mae.IMAGENET_STD, path=path)
