"""DropSeg's training loss and logged IoU: jimmy-dq/DropSeg `model/losses.py` (STCN's
`BootstrappedCE` and `LossComputer`).

  * `BootstrappedCE(start_warm, end_warm, top_p)(logits, target, it)`: before `start_warm` the
    mean cross-entropy over the pixels; from then on the mean of the k hardest pixels,
    k = int(num_pixels · this_p) with this_p = top_p + (1 − top_p) · (end_warm − it) /
    (end_warm − start_warm) while it <= end_warm, top_p after.
  * `LossComputer.compute`: the loss is computed per sample (a batch of one, so num_pixels is
    H·W) and averaged over the batch; a sample without a second object (selector[1] <= 0.5)
    uses only the background and target channels (`logits[j:j+1, :2]`, a 2-class CE).
  * `it` is the 0-based iteration: `train_dropseg.py` calls `do_pass(data, total_iter)` before
    `total_iter += 1`, so the first update sees it = 0 (here: the state's step count).
  * IoU hooks: (Σ intersection + 1) / (Σ union + 1) over the batch of (probability > 0.5) vs the
    ground truth, for the target and the second object.

k is the released Python float arithmetic: `keep_counts` evaluates it for every iteration of the
warm-up on the host (float64, as the released code) into a table the traced step indexes, so the
number of pixels kept is the released one at every step, not a float32 approximation.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

# A warm-up longer than this many iterations gets no exact table (float32 k instead).
MAX_TABLE = 4_000_000


def this_p(it: int, start_warm: int, end_warm: int, top_p: float) -> float:
  """The released fraction of pixels kept at 0-based iteration `it` (1.0 before the warm-up)."""
  if it < start_warm:
    return 1.0
  if it > end_warm:
    return top_p
  return top_p + (1 - top_p) * ((end_warm - it) / (end_warm - start_warm))


def keep_counts(num_pixels: int, start_warm: int, end_warm: int, top_p: float) -> np.ndarray:
  """int32 (end_warm − start_warm + 1,): int(num_pixels · this_p(it)) for it = start_warm ..
  end_warm, in Python floats as released; after end_warm the count is int(num_pixels · top_p)."""
  its = range(int(start_warm), int(end_warm) + 1)
  return np.asarray([int(num_pixels * this_p(it, start_warm, end_warm, top_p)) for it in its],
                    np.int32)


class BootstrappedCE:
  """Callable `(logits (B, C, H, W), target (B, H, W) int, it, valid (B, C) | None) ->
  (per-sample loss (B,), this_p ())`; `it` may be traced.

  `valid[b, c]` False removes channel c from sample b's softmax (the released 2-class slice for
  samples without a second object); pixels are never labelled with a removed channel.
  """

  def __init__(self, start_warm: int = 20000, end_warm: int = 70000, top_p: float = 0.15):
    if not 0 <= start_warm < end_warm:
      raise ValueError(f"config.loss.start_warm={start_warm} and end_warm={end_warm}: need "
                       "0 <= start_warm < end_warm")
    if not 0 < top_p <= 1:
      raise ValueError(f"config.loss.top_p={top_p} must be in (0, 1]")
    self.start_warm, self.end_warm, self.top_p = int(start_warm), int(end_warm), float(top_p)
    self._tables: dict[int, np.ndarray] = {}

  @classmethod
  def from_config(cls, loss_config: ml_collections.ConfigDict) -> "BootstrappedCE":
    return cls(int(loss_config.start_warm), int(loss_config.end_warm), float(loss_config.top_p))

  def fraction(self, it: jax.Array) -> jax.Array:
    """this_p at the (traced) iteration, float32 (for logging)."""
    it = jnp.asarray(it, jnp.float32)
    warm = self.top_p + (1 - self.top_p) * ((self.end_warm - it)
                                            / (self.end_warm - self.start_warm))
    return jnp.where(it < self.start_warm, 1.0, jnp.where(it > self.end_warm, self.top_p, warm))

  def count(self, it: jax.Array, num_pixels: int) -> jax.Array:
    """The released k at the (traced) iteration during and after the warm-up, int32 ()."""
    it = jnp.asarray(it, jnp.int32)
    after = int(num_pixels * self.top_p)
    if self.end_warm - self.start_warm < MAX_TABLE:
      if num_pixels not in self._tables:
        self._tables[num_pixels] = keep_counts(num_pixels, self.start_warm, self.end_warm,
                                               self.top_p)
      table = jnp.asarray(self._tables[num_pixels])
      index = jnp.clip(it - self.start_warm, 0, table.shape[0] - 1)
      k = jnp.where(it > self.end_warm, after, table[index])
    else:
      k = jnp.floor(num_pixels * self.fraction(it)).astype(jnp.int32)
    return jnp.maximum(k, 1)   # an empty top-k (tiny frames) would be a NaN mean in torch

  def __call__(self, logits: jax.Array, target: jax.Array, it: jax.Array,
               valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    b, c, h, w = logits.shape
    chex.assert_shape(target, (b, h, w))
    logits = logits.astype(jnp.float32)
    if valid is not None:
      chex.assert_shape(valid, (b, c))
      logits = jnp.where(valid[:, :, None, None], logits, -jnp.inf)
    log_p = jax.nn.log_softmax(logits, axis=1)
    picked = jnp.take_along_axis(log_p, target[:, None].astype(jnp.int32), axis=1)[:, 0]
    raw = -picked.reshape(b, h * w)                                        # (B, H·W)
    num_pixels = h * w
    k = self.count(it, num_pixels)

    def plain(raw):
      return jnp.mean(raw, axis=1)

    def hardest(raw):
      ranked = -jnp.sort(-raw, axis=1)                                      # descending
      keep = jnp.arange(num_pixels)[None, :] < k
      return jnp.sum(jnp.where(keep, ranked, 0.0), axis=1) / k.astype(jnp.float32)

    per_sample = jax.lax.cond(jnp.asarray(it) < self.start_warm, plain, hardest, raw)
    return per_sample, self.fraction(it)


def iou_sums(prob: jax.Array, truth: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(intersection, union) pixel counts of (prob > 0.5) vs (truth > 0.5) over the whole batch
  (`compute_tensor_iu`), float32 ()."""
  pred, gt = prob > 0.5, truth > 0.5
  return (jnp.sum(pred & gt).astype(jnp.float32), jnp.sum(pred | gt).astype(jnp.float32))


def segmentation_loss(object_logits: jax.Array, selector: jax.Array, labels: jax.Array,
                      it: jax.Array, bce: BootstrappedCE) -> tuple[jax.Array, dict]:
  """The released training loss and metrics of one batch.

  Args:
    object_logits: (B, 2, H, W) float32 per-object logits (target, second object).
    selector: (B, 2) float32, 1 where the object exists (the second may be absent).
    labels: (B, H, W) int in {0 background, 1 target, 2 second object}.
    it: () int, the 0-based iteration.
    bce: the bootstrapped CE.
  Returns:
    (loss (), {'loss', 'iou', 'sec_iou', 'top_p'}).
  """
  b, k, h, w = object_logits.shape
  chex.assert_shape(selector, (b, 2))
  chex.assert_shape(labels, (b, h, w))
  if k != 2:
    raise ValueError(f"segmentation_loss: expected 2 objects per sample, got {k}")
  from dropmae_jax.vos.dropseg import model as model_lib
  prob = jax.nn.sigmoid(object_logits.astype(jnp.float32))
  logits = model_lib.soft_aggregate(prob, axis=1, selector=selector[:, :, None, None])
  has_second = selector[:, 1] > 0.5
  valid = jnp.stack([jnp.ones_like(has_second), jnp.ones_like(has_second), has_second], axis=1)
  per_sample, p = bce(logits, labels, it, valid)
  loss = jnp.mean(per_sample)
  # The released mask_1 / sec_mask_1: the softmax over all 3 aggregated channels.
  final = jax.nn.softmax(logits, axis=1)
  i1, u1 = iou_sums(final[:, 1], labels == 1)
  i2, u2 = iou_sums(final[:, 2], labels == 2)
  return loss, {"loss": loss, "iou": (i1 + 1) / (u1 + 1), "sec_iou": (i2 + 1) / (u2 + 1),
                "top_p": p}
