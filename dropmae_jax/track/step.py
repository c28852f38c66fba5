"""DropTrack's pure steps: train (with the CE warm-up's keep ratio), validation loss, prediction.

The state is `train.state.TrainState` plus the tracker's BatchNorm running statistics.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from dropmae_jax.train.state import TrainState, micro_batches, step_rng  # noqa: F401  (step_lib.step_rng)


class TrackTrainState(TrainState):
  """TrainState + the tracker's BatchNorm running statistics (flax 'batch_stats')."""
  batch_stats: Any = None


def create_track_state(model, tx: optax.GradientTransformation, seed: int) -> TrackTrainState:
  """Fresh OSTrackCE variables (released init, `ostrack.init_variables`'s values) + optimizer.

  The run key is split off the seed as in `create_state`; the params come from
  `jax.random.key(seed)` exactly as `ostrack.init_variables(model, seed)` draws them.
  """
  from dropmae_jax.track import ostrack
  variables = model.init({"params": jax.random.key(seed)}, *ostrack._dummy_inputs(model))
  params = variables["params"]
  _, run_rng = jax.random.split(jax.random.key(seed))
  return TrackTrainState(step=jnp.zeros((), jnp.int32), params=params,
                         opt_state=tx.init(params), rng=jax.random.key_data(run_rng),
                         batch_stats=variables["batch_stats"])


# The batch entries that carry a masked-CE step's keep counts ((n_ce,) int32) and ratio (()
# float32): replicated values, not split over the batch axis.
CE_COUNTS, CE_RATIO = "ce_keep_counts", "ce_keep_ratio"


def _ce_arguments(keep_ratio: float | None, batch: dict) -> dict:
  """OSTrackCE's CE arguments: a static ratio, or (keep_ratio None) the batch's traced counts."""
  if keep_ratio is None:
    return {"keep_counts": batch[CE_COUNTS]}
  return {"keep_ratio": keep_ratio}


def make_track_loss(model, loss_config, keep_ratio: float | None, *, train: bool) -> Callable:
  """`loss(params, batch_stats, batch, rng) -> (total, (metrics, new_batch_stats, outputs))`.

  The released `OSTrackActor`: model_inputs (brightness, ImageNet normalisation) -> OSTrackCE at
  this epoch's CE keep ratio -> focal + 2 GIoU + 5 L1. train=True: drop-path (rng 'dropout') and
  BatchNorm on batch statistics (the running averages come back updated); train=False: the
  evaluation forward (running statistics, no drop-path), as the released validation runs.
  keep_ratio None: masked CE with the keep counts in batch[CE_COUNTS] (one compile serves every
  ratio; see `vit_ce.VisionTransformerCE`).
  """
  from dropmae_jax.track.inputs import pipeline as tracking_pipeline
  from dropmae_jax.track import losses as tracking_losses

  def loss_fn(params, batch_stats, batch, rng):
    template, search = tracking_pipeline.model_inputs(batch)
    variables = {"params": params, "batch_stats": batch_stats}
    ce = _ce_arguments(keep_ratio, batch)
    if train:
      out, mutated = model.apply(variables, template, search, train=True,
                                 rngs={"dropout": rng}, mutable=["batch_stats"], **ce)
      new_stats = mutated["batch_stats"]
    else:
      out = model.apply(variables, template, search, train=False, **ce)
      new_stats = batch_stats
    total, metrics = tracking_losses.tracking_loss(out, batch["search_box"], loss_config)
    return total, (metrics, new_stats, out)

  return loss_fn


def make_track_train_step(model, tx: optax.GradientTransformation, lr_schedule: optax.Schedule,
                          loss_config, keep_ratio: float | None, *,
                          accum_steps: int = 1) -> Callable:
  """The fine-tuning step at a fixed CE keep ratio (a static python float in OSTrackCE), or,
  with keep_ratio None, masked CE at the batch's CE_COUNTS / CE_RATIO (one compile for all).

  batch: 'template' uint8 (B, Hz, Wz, 3), 'search' uint8 (B, Hx, Wx, 3), '*_brightness' (B,),
  'search_box' (B, 4) normalised xywh, optional 'skip_count' (B,) int32.
  Returns (state, metrics: loss, focal, giou, l1, iou, lr, grad_norm, keep_ratio, skipped).
  With accum_steps > 1 the micro-batches run one after another and BatchNorm's running
  statistics are updated by each in turn (as that many smaller steps would).
  """
  loss_fn = make_track_loss(model, loss_config, keep_ratio, train=True)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  keys = ("template", "search", "template_brightness", "search_brightness", "search_box")

  def train_step(state: TrackTrainState, batch: dict, rng: jax.Array):
    inputs = {k: batch[k] for k in keys}
    ce = {} if keep_ratio is not None else {CE_COUNTS: batch[CE_COUNTS]}
    if accum_steps == 1:
      (_, (metrics, stats, _)), grads = grad_fn(state.params, state.batch_stats,
                                                {**inputs, **ce}, rng)
    else:
      micro = jax.tree.map(lambda x: micro_batches(x, accum_steps), inputs)

      def accumulate(carry, xs):
        metric_sum, grad_sum, stats = carry
        mb, k = xs
        (_, (metrics, stats, _)), grads = grad_fn(state.params, stats, {**mb, **ce},
                                                  jax.random.fold_in(rng, k))
        return (jax.tree.map(jnp.add, metric_sum, metrics), jax.tree.map(jnp.add, grad_sum, grads),
                stats), None

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      metric_zeros = jax.eval_shape(lambda: grad_fn(state.params, state.batch_stats,
                                                    {**jax.tree.map(lambda x: x[0], micro), **ce},
                                                    rng)[0][1][0])
      metric_zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_zeros)
      (metrics, grads, stats), _ = jax.lax.scan(
          accumulate, (metric_zeros, zeros, state.batch_stats), (micro, jnp.arange(accum_steps)))
      metrics = jax.tree.map(lambda m: m / accum_steps, metrics)
      grads = jax.tree.map(lambda g: g / accum_steps, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics)
    metrics.update({
        "lr": lr_schedule(state.step),
        "grad_norm": optax.tree.norm(grads),
        "keep_ratio": jnp.float32(keep_ratio) if keep_ratio is not None else batch[CE_RATIO],
    })
    if "skip_count" in batch:  # summed over the global batch, so every host's skips count
      metrics["skipped"] = jnp.sum(batch["skip_count"])
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              batch_stats=stats)
    return new_state, metrics

  return train_step


def make_track_eval_step(model, loss_config, keep_ratio: float | None) -> Callable:
  """`eval_step(params, batch_stats, batch) -> metrics` (loss, focal, giou, l1, iou): validation."""
  loss_fn = make_track_loss(model, loss_config, keep_ratio, train=False)

  def eval_step(params, batch_stats, batch):
    _, (metrics, _, _) = loss_fn(params, batch_stats, batch, jax.random.key(0))
    return metrics

  return eval_step


def make_track_predict(model, keep_ratio: float | None) -> Callable:
  """`predict(params, batch_stats, batch) -> outputs` (eval forward) for figures."""
  from dropmae_jax.track.inputs import pipeline as tracking_pipeline

  def predict(params, batch_stats, batch):
    template, search = tracking_pipeline.model_inputs(batch)
    return model.apply({"params": params, "batch_stats": batch_stats}, template, search,
                       train=False, **_ce_arguments(keep_ratio, batch))

  return predict
