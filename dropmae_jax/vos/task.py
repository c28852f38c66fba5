"""The DropSeg fine-tuning task: VOS frame pairs -> DropSeg -> bootstrapped CE (config.task =
'dropseg'; `python -m dropmae_jax.main --config=dropseg_davis_ytvos --workdir=DIR`).

Plugged into the one trainer (`train/loop.py`). Follows jimmy-dq/DropSeg `train_dropseg.py` and
`model/model.py` (`ViTSTCNModel`), stage 3:

* model: `DropSeg.from_config` (compute in config.model.dtype; the released run trains under
  AMP); started from `config.init_from` (a pre-training WORKDIR, an imported DIR or a DropMAE
  .pth) with the released rule (`dropseg/pretrain_init.init_from_pretrain`: decoder keys
  dropped, the encoder loaded, the frozen two-frame position table derived from the loaded
  pos_embed, the new modules fresh), else the released random initialisation.
* train state: 'params' (trained), 'frozen' (never updated), Adam state, step, run key.
* input: `inputs/pipeline.py` (pairs of a memory frame with the target's and a second object's
  masks and a query frame, as `dataset/vos_dataset.py` draws and augments them).
* step: `step.make_seg_train_step` — both objects in one model call, soft aggregation,
  `losses.BootstrappedCE` at the 0-based iteration, Adam with L2 decay, MultiStepLR per
  iteration (`optim.py`).
* every config.val_every steps and at the end: J&F of one-shot segmentation (`validation.py`)
  on the first config.val_sequences of data.val_root's data.val_subset (val_jf, val_j, val_f).
  The released trainer validates nothing; its evaluation scripts score saved checkpoints.
* figures every config.figure_every steps: WORKDIR/figures/segmentation_<step>.png.
* at the end: the weights as a segmenter folder WORKDIR/segmenter_weights
  (`dropseg/weights.save_segmenter`; `python -m dropmae_jax.convert export-segmenter` writes
  the released state dict from it).

steps_per_epoch = videos // batch_size is only a schedule unit ('epoch' in the metrics); the
run is config.total_steps updates, as the released `--iterations`.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from dropmae_jax.train import sharding
from dropmae_jax.train import task as tasks
from dropmae_jax.vos import losses as losses_lib
from dropmae_jax.vos import step as step_lib

EXPORT_DIR = "segmenter_weights"
FIGURE_KEYS = ("memory_frame", "query_frame", "memory_masks", "query_labels", "selector")


class DropSegTask(tasks.Task):
  """DropSeg fine-tuning (jimmy-dq/DropSeg stage 3: DAVIS-2017 x5 + YouTube-VOS 2019)."""
  counters = ("skipped_samples",)
  mean_keys = ("loss", "iou", "sec_iou")

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    super().__init__(config, workdir)
    self._predict: Callable | None = None
    self._segmenter = None
    self._val_dataset: Any = False   # False: not opened yet; None: nothing to score
    self._reported_skips: int | None = None

  # ---------------------------------------------------------------------------- setup

  def num_examples(self) -> int:
    from dropmae_jax.vos.inputs import pipeline as vos_pipeline
    n = int(vos_pipeline.num_videos(self.config, self.workdir))
    if n <= 0:
      raise ValueError("config.data.davis_root / youtube_root: no training videos (set at least "
                       "one root, e.g. --config.data.davis_root=synthetic)")
    return n

  def build(self, plan) -> None:
    from dropmae_jax.vos import optim as seg_optim
    from dropmae_jax.vos.dropseg import model as model_lib
    c = self.config
    self.plan = plan
    self.model = model_lib.DropSeg.from_config(c)
    model_lib.variable_shapes(self.model)   # a bad size fails now, as a config error
    self.tx, self.lr_schedule = seg_optim.make_segmentation_optimizer(c)
    self.bce = losses_lib.BootstrappedCE.from_config(c.loss)

  def create_state(self) -> step_lib.SegTrainState:
    return step_lib.create_seg_state(self.model, self.tx, int(self.config.seed))

  def load_initial(self, state, shardings):
    source = self.config.init_from
    if not source:
      logging.info("config.init_from is empty: the segmenter starts from random initialisation")
      return state
    from dropmae_jax.vos.dropseg import pretrain_init
    variables = tasks.host_tree({"params": state.params, "frozen": state.frozen})
    loaded, report = pretrain_init.init_from_pretrain(variables, source)
    for line in report:
      logging.info("init_from: %s", line)
    return state.replace(params=jax.device_put(loaded["params"], shardings.params),
                         frozen=jax.device_put(loaded["frozen"], shardings.frozen))

  def make_iterator(self, plan):
    from dropmae_jax.vos.inputs import pipeline as vos_pipeline
    return vos_pipeline.make_vos_iterator(
        self.config, seed=int(self.config.seed), process_index=jax.process_index(),
        process_count=jax.process_count(), workdir=self.workdir)

  def close_iterator(self, iterator) -> None:
    from dropmae_jax.vos.inputs import pipeline as vos_pipeline
    vos_pipeline.close_iterator(iterator)

  # ------------------------------------------------------------------------------ steps

  def compile_step(self, mesh, state_shardings, replicated) -> Callable:
    self._replicated = replicated
    fn = step_lib.make_seg_train_step(self.model, self.tx, self.lr_schedule, self.bce,
                                      accum_steps=int(self.config.accum_steps))
    jitted = jax.jit(lambda s, b: fn(s, b, step_lib.step_rng(s)), donate_argnums=(0,),
                     out_shardings=(state_shardings, replicated))

    def step(state, batch, step_no):
      del step_no   # the iteration is the state's step count (resumed runs continue it)
      return jitted(state, batch)

    return step

  def device_batch(self, local: dict, counters: dict, warn) -> dict:
    if self._reported_skips is None:
      self._reported_skips = counters["skipped_samples"]
    missing = [k for k in step_lib.MODEL_KEYS if k not in local]
    if missing:
      raise KeyError(f"the VOS input batch lacks {missing} (has {sorted(local)})")
    keys = step_lib.MODEL_KEYS + ("skip_count",)
    return {k: local[k] for k in keys if k in local}

  def settle(self, host: dict[str, float], counters: dict[str, int]) -> dict[str, float]:
    counters["skipped_samples"] += int(host.pop("skipped", 0))
    return host

  def log_row(self, host, means, counters, step_no, plan) -> dict[str, float]:
    row = dict(means)
    row.update({"lr": host["lr"], "top_p": host["top_p"], "grad_norm": host["grad_norm"],
                "epoch": step_no / plan.steps_per_epoch,
                "skipped_samples": counters["skipped_samples"]})
    return row

  def report(self, step_no: int, counters: dict[str, int], warn) -> None:
    """Re-drawn pairs since the last report, at info level: the released sampling re-draws a
    pair whenever the crop leaves no object in the memory frame, so they are routine (their
    running total is `skipped_samples` in metrics.jsonl)."""
    del warn
    new = counters["skipped_samples"] - self._reported_skips
    if new > 0 and jax.process_index() == 0:
      logging.info("step %d: %d pair draw(s) repeated since the last report (no object in the "
                   "memory frame, or an unreadable video; %d in all)", step_no, new,
                   counters["skipped_samples"])
    self._reported_skips = counters["skipped_samples"]

  # ----------------------------------------------------------------------- figures / eval

  def figure(self, state: Any, batch: dict, step_no: int, is_main: bool) -> None:
    """Memory frame and masks, query, ground truth and prediction of the batch's first pair."""
    from dropmae_jax.vos import figures as seg_figures
    if self._predict is None:
      self._predict = jax.jit(step_lib.make_seg_predict(self.model),
                              out_shardings=self._replicated)
    prob = self._predict(state.params, state.frozen, {k: batch[k] for k in FIGURE_KEYS})
    prediction = np.argmax(np.asarray(jax.device_get(prob)[0]), axis=0)
    first = tasks.host_tree({k: batch[k] for k in FIGURE_KEYS[:4]})
    if not is_main:
      return
    path = os.path.join(self.workdir, "figures", f"segmentation_{step_no:08d}.png")
    seg_figures.segmentation_figure(
        np.asarray(first["memory_frame"][0]), np.asarray(first["memory_masks"][0]),
        np.asarray(first["query_frame"][0]), np.asarray(first["query_labels"][0]), prediction,
        path, title=f"step {step_no}")

  def evaluation_due(self, step_no: int, is_last: bool) -> bool:
    every = int(self.config.val_every)
    return is_last or (every > 0 and step_no % every == 0)

  def evaluate(self, state, step_no: int, plan, *, is_last: bool) -> dict[str, float] | None:
    """J&F on the validation sequences (every process scores them all: deterministic)."""
    if not self.evaluation_due(step_no, is_last):
      return None
    from dropmae_jax.vos import validation
    if self._val_dataset is False:
      self._val_dataset = validation.val_dataset(self.config, self.workdir)
    if self._val_dataset is None:
      return None
    variables = tasks.host_tree({"params": state.params, "frozen": state.frozen})
    self._segmenter = validation.segmenter_for(self.model, variables, self._segmenter)
    return validation.score_segmenter(self._segmenter, self._val_dataset)

  def finish(self, state, step_no: int, plan) -> list[str]:
    """The weights as a segmenter folder (`dropseg/weights.load_segmenter` reads it)."""
    variables = tasks.host_tree({"params": state.params, "frozen": state.frozen})
    if jax.process_index() != 0:
      return []
    from dropmae_jax.vos.dropseg import weights
    out = os.path.join(self.workdir, EXPORT_DIR)
    weights.save_segmenter(out, variables, self.config)
    return [f"segmenter weights {out}"]
