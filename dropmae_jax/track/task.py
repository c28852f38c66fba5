"""The DropTrack fine-tuning task: tracking pairs -> OSTrack-CE -> focal + GIoU + L1.

The released recipe and where this run deviates from it: docs/tracking.md.

Plugged into the one trainer (`train/loop.py`). Follows the released `OSTrackActor` / `LTRTrainer`:

* model: `OSTrackCE.from_config`; initialised from `config.init_from` (a pre-training WORKDIR,
  an imported DIR or a DropMAE .pth) with the released rule (`pretrain_init.init_from_pretrain`:
  decoder keys dropped, the encoder loaded, pos_embed_z / pos_embed_x bicubic-resized, the head
  fresh), else the released random initialisation.
* train state: params, AdamW state, step, run key and the head's BatchNorm running statistics.
* step: `inputs.pipeline.model_inputs` -> OSTrackCE(train=True: drop-path, batch-statistics BN)
  at the epoch's CE keep ratio -> `losses.tracking_loss` -> grads ->
  `optim.make_tracking_optimizer` (two lr groups, clip 0.1, StepLR per epoch).
* CE keep ratio: `optim.ce_keep_ratio(epoch)`, constant within an epoch
  (ITERS_PER_EPOCH = 1). OSTrackCE removes tokens on static shapes, so each distinct tuple of
  keep counts is its own compiled step (the released code runs these shapes dynamically). With
  `config.ce_warmup_masked` (default) the run compiles three steps: CE off, the warm-up (CE
  masked on a fixed shape, the counts a traced input: the same outputs, every token computed)
  and the final ratio (tokens removed: CE's compute saving for the rest of the run). Without
  it, one step per distinct count tuple (48 for the GOT-10k schedule, 74 for all data).
* every `val_every_epochs` epochs (and at the end of the schedule): loss and IoU on
  `data.val_samples` validation pairs with the evaluation forward (running BN statistics, no
  drop-path, the epoch's keep ratio), as the released log reports them, plus GOT-10k AO / SR of
  the tracker on the validation sequences (`evaluation.validation.val_ao`).
* at the end: the weights in the tracker layout under WORKDIR/tracker_weights
  (`python -m dropmae_jax.track run --weights=WORKDIR/tracker_weights ...`).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from dropmae_jax.track import ostrack
from dropmae_jax.track import pretrain_init
from dropmae_jax.train import sharding
from dropmae_jax.track import step as step_lib
from dropmae_jax.train import task as tasks

EXPORT_DIR = "tracker_weights"


def epoch_of_step(step_no: int, steps_per_epoch: int) -> int:
  """1-based epoch of the `step_no`-th update (1-based): steps 1..spe are epoch 1."""
  return (int(step_no) - 1) // int(steps_per_epoch) + 1


def resolve_root(data_config: ml_collections.ConfigDict, name: str, workdir: str) -> str:
  """config.data.roots[name]; 'synthetic' = WORKDIR/synthetic_tracking (made once, as training)."""
  from dropmae_jax.track.inputs import pipeline as tracking_pipeline
  return tracking_pipeline._source_root(data_config, name, workdir)  # pylint: disable=protected-access


class DropTrackTask(tasks.Task):
  """OSTrack-CE fine-tuning (the released `vitb_384_mae_ce_32x4_*` recipes)."""
  counters = ("skipped_samples",)
  mean_keys = ("loss", "focal", "giou", "l1", "iou")

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    super().__init__(config, workdir)
    # Compiled functions per CE plan (`_ce_plan`: a keep-count tuple or 'masked').
    self._steps: dict[Any, Callable] = {}
    self._evals: dict[Any, Callable] = {}
    self._predicts: dict[Any, Callable] = {}
    self._reported_skips: int | None = None  # set from the (resumed) counter on the first batch

  # ---------------------------------------------------------------------------- setup

  def num_examples(self) -> int:
    c = self.config
    if int(c.data.samples_per_epoch) <= 0 and c.steps_per_epoch <= 0:
      raise ValueError(f"config.data.samples_per_epoch={c.data.samples_per_epoch} must be "
                       "positive (or set config.steps_per_epoch)")
    return int(c.data.samples_per_epoch)

  def build(self, plan) -> None:
    from dropmae_jax.track import optim as tracking_optim
    c = self.config
    self.plan = plan
    self.model = ostrack.OSTrackCE.from_config(c)
    self.tx, self.lr_schedule = tracking_optim.make_tracking_optimizer(c, plan.steps_per_epoch)
    self.model.keep_counts()  # fails early (as a config error) on a bad ce_loc / sizes
    ostrack.variable_shapes(self.model)

  def create_state(self) -> step_lib.TrackTrainState:
    return step_lib.create_track_state(self.model, self.tx, self.config.seed)

  def load_initial(self, state, shardings):
    source = self.config.init_from
    if not source:
      logging.info("config.init_from is empty: the tracker starts from random initialisation")
      return state
    variables = tasks.host_tree({"params": state.params, "batch_stats": state.batch_stats})
    loaded, report = pretrain_init.init_from_pretrain(variables, source)
    for line in report:
      logging.info("init_from: %s", line)
    return state.replace(params=jax.device_put(loaded["params"], shardings.params),
                         batch_stats=jax.device_put(loaded["batch_stats"], shardings.batch_stats))

  def make_iterator(self, plan):
    from dropmae_jax.track.inputs import pipeline as tracking_pipeline
    return tracking_pipeline.make_tracking_iterator(
        self.config, split="train", seed=self.config.seed, process_index=jax.process_index(),
        process_count=jax.process_count(), workdir=self.workdir)

  def close_iterator(self, iterator) -> None:
    from dropmae_jax.track.inputs import pipeline as tracking_pipeline
    tracking_pipeline.close_iterator(iterator)

  # ------------------------------------------------------------------------------ steps

  def keep_ratio(self, step_no: int) -> float:
    """The CE keep ratio of the `step_no`-th update (1-based), from its 1-based epoch."""
    from dropmae_jax.track import optim as tracking_optim
    return float(tracking_optim.ce_keep_ratio(
        epoch_of_step(step_no, self.plan.steps_per_epoch), self.config))

  def _counts(self, ratio: float) -> tuple[int, ...]:
    return tuple(self.model.keep_counts(ratio))

  def _ce_plan(self, ratio: float) -> tuple[Any, float | None, dict]:
    """(cache key, static ratio or None for masked CE, extra batch entries) for `ratio`.

    Equal counts are the same computation, whatever ratio produced them. Warm-up ratios (counts
    neither CE-off's nor the final ratio's) share the masked step when config.ce_warmup_masked.
    """
    counts = self._counts(ratio)
    fixed = {self._counts(1.0), self._counts(float(self.config.model.ce_keep_ratio))}
    if self.config.get("ce_warmup_masked", True) and counts not in fixed:
      extra = {step_lib.CE_COUNTS: np.asarray(counts, np.int32),
               step_lib.CE_RATIO: np.float32(ratio)}
      return "masked", None, extra
    return counts, ratio, {}

  def _with_ce(self, batch: dict, extra: dict) -> dict:
    if not extra:
      return batch
    return {**batch, **jax.device_put(extra, self._replicated)}

  def compile_step(self, mesh, state_shardings, replicated) -> Callable:
    self._mesh, self._state_shardings, self._replicated = mesh, state_shardings, replicated
    self._batch_sharding = sharding.batch_sharding(mesh)

    def step(state, batch, step_no):
      ratio = self.keep_ratio(step_no)
      key, static_ratio, extra = self._ce_plan(ratio)
      if key not in self._steps:
        fn = step_lib.make_track_train_step(self.model, self.tx, self.lr_schedule,
                                            self.config.loss, static_ratio,
                                            accum_steps=self.config.accum_steps)
        self._steps[key] = jax.jit(lambda s, b: fn(s, b, step_lib.step_rng(s)),
                                   donate_argnums=(0,),
                                   out_shardings=(state_shardings, replicated))
        if len(self._steps) > 1:
          what = ("the CE warm-up (masked, every ratio)" if key == "masked"
                  else f"CE keep ratio {ratio:.4f} (search tokens kept {list(key)})")
          logging.info("compiling the step for %s", what)
      return self._steps[key](state, self._with_ce(batch, extra))

    return step

  def device_batch(self, local: dict, counters: dict, warn) -> dict:
    if self._reported_skips is None:
      self._reported_skips = counters["skipped_samples"]
    keys = ("template", "search", "template_brightness", "search_brightness", "search_box",
            "skip_count")
    return {k: local[k] for k in keys if k in local}

  def settle(self, host: dict[str, float], counters: dict[str, int]) -> dict[str, float]:
    counters["skipped_samples"] += int(host.pop("skipped", 0))
    return host

  def log_row(self, host, means, counters, step_no, plan) -> dict[str, float]:
    row = dict(means)
    row.update({"lr": host["lr"], "grad_norm": host["grad_norm"],
                "keep_ratio": host["keep_ratio"], "epoch": step_no / plan.steps_per_epoch,
                "skipped_samples": counters["skipped_samples"]})
    return row

  def report(self, step_no: int, counters: dict[str, int], warn) -> None:
    new = counters["skipped_samples"] - self._reported_skips
    if new > 0 and jax.process_index() == 0:
      warn(f"step {step_no}: {new} tracking sample{'s' if new != 1 else ''} resampled since the "
           f"last report (unusable crop or frame; {counters['skipped_samples']} in all)")
    self._reported_skips = counters["skipped_samples"]

  # ----------------------------------------------------------------------- figures / eval

  def figure(self, state: Any, batch: dict, step_no: int, is_main: bool) -> None:
    """Template, search crop with the GT and predicted boxes, and the score map (first pair)."""
    from dropmae_jax.track import figures as tracking_figures
    key, static_ratio, extra = self._ce_plan(self.keep_ratio(step_no))
    if key not in self._predicts:
      self._predicts[key] = jax.jit(step_lib.make_track_predict(self.model, static_ratio),
                                    out_shardings=self._replicated)
    keys = ("template", "search", "template_brightness", "search_brightness")
    out = self._predicts[key](state.params, state.batch_stats,
                              self._with_ce({k: batch[k] for k in keys}, extra))
    out = jax.device_get({k: out[k] for k in ("pred_boxes", "score_map")})
    first = tasks.host_tree({k: batch[k] for k in ("template", "search", "search_box")})
    if not is_main:
      return
    path = os.path.join(self.workdir, "figures", f"tracking_{step_no:08d}.png")
    cx, cy, w, h = np.asarray(out["pred_boxes"][0], np.float64)
    tracking_figures.tracking_figure(
        np.asarray(first["template"][0]), np.asarray(first["search"][0]),
        np.asarray(first["search_box"][0], np.float64),       # normalised xywh
        np.array([cx - w / 2, cy - h / 2, w, h]),             # normalised xywh
        np.asarray(out["score_map"][0]), path)

  def evaluation_due(self, step_no: int, plan, is_last: bool) -> bool:
    every = int(self.config.val_every_epochs)
    if every <= 0:
      return False
    return step_no % (every * plan.steps_per_epoch) == 0 or is_last

  def evaluate(self, state, step_no: int, plan, *, is_last: bool) -> dict[str, float] | None:
    if not self.evaluation_due(step_no, plan, is_last):
      return None
    ratio = self.keep_ratio(step_no)
    row = self.validation_loss(state, ratio, epoch_of_step(step_no, plan.steps_per_epoch))
    row.update(self.validation_ao(state))
    return row

  def validation_loss(self, state, ratio: float, epoch: int) -> dict[str, float]:
    """Mean loss / focal / giou / l1 / iou over `data.val_samples` validation pairs."""
    from dropmae_jax.track.inputs import pipeline as tracking_pipeline
    c = self.config
    n_batches = int(c.data.val_samples) // int(c.batch_size)
    if n_batches <= 0:
      return {}
    key, static_ratio, extra = self._ce_plan(ratio)
    if key not in self._evals:
      self._evals[key] = jax.jit(step_lib.make_track_eval_step(self.model, c.loss, static_ratio),
                                 out_shardings=self._replicated)
    eval_step = self._evals[key]
    # A fresh iterator per evaluation, seeded by the epoch: the numbers do not depend on when
    # the run was resumed.
    iterator = tracking_pipeline.make_tracking_iterator(
        c, split="val", seed=int(c.seed) + 1_000_003 * epoch, process_index=jax.process_index(),
        process_count=jax.process_count(), workdir=self.workdir)
    keys = ("template", "search", "template_brightness", "search_brightness", "search_box")
    sums: dict[str, float] = {}
    count = 0
    local = batch = None
    try:
      for _ in range(n_batches):
        local = next(iterator, None)
        if local is None:  # the val stream is finite (val_samples items)
          break
        count += 1
        batch = self._with_ce(
            sharding.global_batch({k: local[k] for k in keys}, self._batch_sharding), extra)
        metrics = jax.device_get(eval_step(state.params, state.batch_stats, batch))
        for k, v in metrics.items():
          sums[k] = sums.get(k, 0.0) + float(v)
    finally:
      local = batch = None
      tracking_pipeline.close_iterator(iterator)
    return {f"val_{k}": v / count for k, v in sums.items()} if count else {}

  def validation_ao(self, state) -> dict[str, float]:
    """GOT-10k AO / SR0.5 / SR0.75 (percent) of the tracker on the validation sequences.

    Every process tracks every sequence (`tracking_eval.val_ao`: deterministic, identical).
    """
    c = self.config
    if int(c.get("val_ao_sequences", -1)) == 0:
      return {}
    from dropmae_jax.track import datasets
    from dropmae_jax.track import tracker as tracker_lib
    from dropmae_jax.track.evaluation import validation as tracking_eval
    variables = tasks.host_tree({"params": state.params, "batch_stats": state.batch_stats})
    name = c.data.val_dataset
    root = resolve_root(c.data, name, self.workdir)
    sequences = datasets.open_benchmark(name, root, c.data.val_split)  # lazy: N read
    settings = tracker_lib.TrackerSettings.from_config(c)
    scores = tracking_eval.val_ao(self.model, variables, c, sequences, settings)
    return {f"val_{k}": float(v) for k, v in scores.items()}

  def finish(self, state, step_no: int, plan) -> list[str]:
    """The weights in the tracker layout (for `python -m dropmae_jax.track run --weights`)."""
    variables = tasks.host_tree({"params": state.params, "batch_stats": state.batch_stats})
    if jax.process_index() != 0:
      return []
    from dropmae_jax.convert import io
    out = os.path.join(self.workdir, EXPORT_DIR)
    io.save_tracker(out, variables, self.config)
    return [f"tracker weights {out}"]
