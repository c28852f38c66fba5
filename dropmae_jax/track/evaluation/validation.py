"""Validation AO during fine-tuning: track the val sequences, score them with GOT-10k's protocol.

Beyond the released trainer (whose 'val' pass is the loss on 10,000 sampled GOT-10k pairs every 20
epochs): the tracker of `track/tracker.py` (`runner.BatchedRunner`, test-time settings, CE keep 0.7) runs
over whole val sequences, and the boxes are scored exactly as `python -m dropmae_jax.track run`
followed by `... evaluate --protocol got10k` would score them: boxes truncated to integers as the
result files store them, frame 0 dropped, frames with cover > 0 kept, IoU clipped to the image, all
sequences pooled (track/evaluation/metrics.py). So a validation AO is the number the offline evaluation of the
same weights reports.
"""
from __future__ import annotations

import itertools
import logging
from typing import Any, Iterable

import jax
import ml_collections
import numpy as np

from dropmae_jax.track import datasets
from dropmae_jax.track.evaluation import metrics as track_metrics
from dropmae_jax.track import tracker as tracker_lib
from dropmae_jax.track import runner as runner_lib

logger = logging.getLogger(__name__)


def _host_variables(variables: Any) -> Any:
  """Variables as host numpy, gathering arrays sharded over several processes (a collective:
  every process must call this, as every process calls `val_ao`)."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      from jax.experimental import multihost_utils
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(fetch, variables)


def sequence_cover(seq: datasets.Sequence) -> np.ndarray:
  """(N,) GOT-10k cover levels, or 0/1 from the absence label (`metrics.evaluate_got10k`'s rule)."""
  if seq.cover is not None:
    return seq.cover
  if seq.target_visible is not None:
    return seq.target_visible.astype(np.int64)
  raise track_metrics.MetricsError(
      f"GOT-10k sequence {seq.name!r} has neither cover.label nor absence.label")


def saved_boxes(boxes: np.ndarray) -> np.ndarray:
  """Tracker boxes (N, 4) float -> what the result files hold: `.astype(int)`, truncation toward
  zero (np.trunc: the same values, and a NaN stays NaN instead of becoming an arbitrary integer)."""
  return np.trunc(np.asarray(boxes, np.float64))


def got10k_val_scores(results: Iterable[tuple[datasets.Sequence, np.ndarray]]) -> dict[str, float]:
  """(sequence, boxes (N, 4) xywh) pairs -> {'ao', 'sr50', 'sr75'} in percent, GOT-10k pooled.

  Boxes are scored as given (pass `saved_boxes(...)` for the result-file values). A sequence with
  a non-finite box contributes NaN IoUs, so the scores become NaN (a diverged model), rather than
  raising in the middle of a training run.
  """
  pooled = []
  for seq, boxes in results:
    boxes = np.asarray(boxes, np.float64)
    if boxes.shape != seq.ground_truth.shape:
      raise track_metrics.MetricsError(
          f"sequence {seq.name!r}: {boxes.shape} boxes for ground truth {seq.ground_truth.shape}")
    cover = sequence_cover(seq)
    if not np.all(np.isfinite(boxes)):
      logger.warning("val AO: sequence %s has non-finite boxes; scores will be NaN", seq.name)
      pooled.append(np.full(int(np.sum(cover[1:] > 0)), np.nan))
      continue
    size = seq.image_size or datasets.frame_size(seq.frames[0])
    pooled.append(track_metrics.got10k_sequence_ious(boxes, seq.ground_truth, cover, size))
  if not pooled:
    raise track_metrics.MetricsError("no validation sequences to score")
  scores = track_metrics.got10k_scores(np.concatenate(pooled))
  return {"ao": scores["AO"], "sr50": scores["SR0.5"], "sr75": scores["SR0.75"]}


def val_ao(model, variables: Any, config: ml_collections.ConfigDict,
           sequences: Iterable[datasets.Sequence], settings: tracker_lib.TrackerSettings, *,
           devices: list | None = None) -> dict[str, float]:
  """Track `sequences` with `BatchedRunner` and score them -> {'ao', 'sr50', 'sr75'} (percent).

  Args:
    model: the `OSTrackCE` being trained.
    variables: its {'params', 'batch_stats'} (device arrays, possibly sharded, or numpy).
    config: uses `val_ao_sequences` (> 0: only the first N sequences; else all) and
      `tracker.batch_sequences` (sequences tracked in lock-step).
    sequences: fully annotated GOT-10k-style sequences (e.g. `datasets.open_benchmark('got10k',
      root, 'val')`), read lazily: only the first `val_ao_sequences` are touched.
    settings: the test-time `TrackerSettings` (`TrackerSettings.from_config(config)`).
    devices: where to run (default: this process's local devices). Every process runs every
      sequence (deterministic, identical results), so no cross-host traffic beyond gathering
      sharded variables.
  """
  limit = int(config.get("val_ao_sequences", -1))
  chosen = list(itertools.islice(sequences, limit) if limit > 0 else sequences)
  if not chosen:
    raise track_metrics.MetricsError("val_ao: no validation sequences")
  for seq in chosen:
    if not seq.fully_annotated:
      raise track_metrics.MetricsError(
          f"val_ao: {seq.dataset} sequence {seq.name!r} has ground truth for the first frame only "
          f"(a withheld test split); validate on a fully annotated split (GOT-10k val)")
  host = _host_variables(variables)
  slots = min(int(config.tracker.get("batch_sequences", 16)), len(chosen))
  boxes: dict[int, np.ndarray] = {}
  index = {id(seq): i for i, seq in enumerate(chosen)}
  with runner_lib.BatchedRunner(model, host, settings, slots=slots,
                                 devices=devices or jax.local_devices()) as runner:
    for result in runner.run(chosen):
      boxes[index[id(result.sequence)]] = result.boxes
  return got10k_val_scores((chosen[i], saved_boxes(boxes[i])) for i in range(len(chosen)))
