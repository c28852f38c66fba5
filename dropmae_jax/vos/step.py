"""DropSeg's pure training step and prediction (jimmy-dq/DropSeg `model/model.py` `do_pass`).

One released iteration, with the two backbone passes (target mask, second mask) as K = 2 objects
of ONE model call:

  frames (uint8) -> ImageNet normalisation (`inference.normalize`)
  -> DropSeg(memory frame, memory_masks (B, 2, S, S), query frame, train=True: drop-path)
  -> sigmoid -> × selector -> soft aggregation -> (B, 3, S, S) logits
  -> BootstrappedCE at the 0-based iteration = state.step (`losses.segmentation_loss`)
  -> grads of 'params' -> Adam (L2) -> MultiStepLR (`optim.py`).

The 'frozen' collection rides in the state and is never updated. Compute in config.model.dtype
(bfloat16 stands in for the released AMP float16; parameters, loss and optimiser stay float32).
"""
from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import optax

# step_rng is re-exported: the task and the benchmark call step_lib.step_rng.
from dropmae_jax.train.state import TrainState, micro_batches, step_rng  # noqa: F401
from dropmae_jax.vos import losses as losses_lib
from dropmae_jax.vos.dropseg import inference
from dropmae_jax.vos.dropseg import model as model_lib

# What the step reads from a batch (the pipeline's other entries stay on the host).
MODEL_KEYS = ("memory_frame", "query_frame", "memory_masks", "query_labels", "selector")


class SegTrainState(TrainState):
  """TrainState + DropSeg's 'frozen' variables (position tables, unused ViT parts)."""
  frozen: Any = None


def create_seg_state(model: model_lib.DropSeg, tx: optax.GradientTransformation,
                     seed: int) -> SegTrainState:
  """Fresh DropSeg variables (`model_lib.init_variables`'s values for this seed) + Adam state.

  The run key is the second half of split(key(seed)), as every task's state.
  """
  dummy = model_lib._dummy_inputs(model)   # pylint: disable=protected-access
  variables = model.init({"params": jax.random.key(seed)}, *dummy)
  params = variables["params"]
  _, run_rng = jax.random.split(jax.random.key(seed))
  return SegTrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                       rng=jax.random.key_data(run_rng), frozen=variables[model_lib.FROZEN])


def check_batch(batch: dict) -> None:
  """Shapes of the pipeline's batch (module boundary): one line naming the offending key."""
  b, s = batch["memory_frame"].shape[:2]
  chex.assert_shape(batch["memory_frame"], (b, s, s, 3))
  chex.assert_shape(batch["query_frame"], (b, s, s, 3))
  chex.assert_shape(batch["memory_masks"], (b, 2, s, s))
  chex.assert_shape(batch["query_labels"], (b, s, s))
  chex.assert_shape(batch["selector"], (b, 2))


def object_logits(model: model_lib.DropSeg, params, frozen, batch: dict, *, train: bool,
                  rng: jax.Array | None = None) -> jax.Array:
  """(B, 2, S, S) float32 per-object logits of the query frame (both objects in one call)."""
  memory = inference.normalize(batch["memory_frame"])
  query = inference.normalize(batch["query_frame"])
  masks = batch["memory_masks"].astype(jnp.float32)
  variables = {"params": params, model_lib.FROZEN: frozen}
  if train:
    return model.apply(variables, memory, masks, query, train=True, rngs={"dropout": rng})
  return model.apply(variables, memory, masks, query, train=False)


def make_loss(model: model_lib.DropSeg, bce: losses_lib.BootstrappedCE, *, train: bool
              ) -> Callable:
  """`loss(params, frozen, batch, it, rng) -> (loss, metrics)` (`losses.segmentation_loss`)."""

  def loss_fn(params, frozen, batch, it, rng):
    logits = object_logits(model, params, frozen, batch, train=train, rng=rng)
    return losses_lib.segmentation_loss(logits, batch["selector"].astype(jnp.float32),
                                        batch["query_labels"], it, bce)

  return loss_fn


def make_seg_train_step(model: model_lib.DropSeg, tx: optax.GradientTransformation,
                        lr_schedule: optax.Schedule, bce: losses_lib.BootstrappedCE, *,
                        accum_steps: int = 1) -> Callable:
  """`train_step(state, batch, rng) -> (state, metrics)`.

  batch: memory_frame / query_frame uint8 (B, S, S, 3), memory_masks float32 (B, 2, S, S),
  query_labels int32 (B, S, S), selector float32 (B, 2), optional skip_count int32 (B,).
  metrics: loss, iou, sec_iou, top_p, lr, grad_norm (+ skipped with skip_count). With
  accum_steps > 1 the gradients (and metrics) of the micro-batches are averaged (the bootstrapped
  CE's mean over samples makes that the full batch's gradient).
  """
  grad_fn = jax.value_and_grad(make_loss(model, bce, train=True), has_aux=True)

  def train_step(state: SegTrainState, batch: dict, rng: jax.Array):
    check_batch(batch)
    inputs = {k: batch[k] for k in MODEL_KEYS}
    it = state.step   # the released 0-based iteration of this update
    if accum_steps == 1:
      (_, metrics), grads = grad_fn(state.params, state.frozen, inputs, it, rng)
    else:
      micro = jax.tree.map(lambda x: micro_batches(x, accum_steps), inputs)

      def accumulate(carry, xs):
        metric_sum, grad_sum = carry
        mb, k = xs
        (_, metrics), grads = grad_fn(state.params, state.frozen, mb, it,
                                      jax.random.fold_in(rng, k))
        return (jax.tree.map(jnp.add, metric_sum, metrics),
                jax.tree.map(jnp.add, grad_sum, grads)), None

      shapes = jax.eval_shape(lambda: grad_fn(state.params, state.frozen,
                                              jax.tree.map(lambda x: x[0], micro), it, rng)[0][1])
      zeros = (jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
               jax.tree.map(jnp.zeros_like, state.params))
      (metrics, grads), _ = jax.lax.scan(accumulate, zeros, (micro, jnp.arange(accum_steps)))
      metrics = jax.tree.map(lambda m: m / accum_steps, metrics)
      grads = jax.tree.map(lambda g: g / accum_steps, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics)
    metrics.update({"lr": lr_schedule(state.step), "grad_norm": optax.tree.norm(grads)})
    if "skip_count" in batch:   # summed over the global batch, so every host's skips count
      metrics["skipped"] = jnp.sum(batch["skip_count"])
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def make_seg_predict(model: model_lib.DropSeg) -> Callable:
  """`predict(params, frozen, batch) -> (B, 3, S, S)` probabilities over {background, target,
  second} of the evaluation forward (no drop-path), for figures."""

  def predict(params, frozen, batch):
    logits = object_logits(model, params, frozen, batch, train=False)
    prob = jax.nn.sigmoid(logits)
    selector = batch["selector"].astype(jnp.float32)[:, :, None, None]
    return jax.nn.softmax(model_lib.soft_aggregate(prob, axis=1, selector=selector), axis=1)

  return predict
