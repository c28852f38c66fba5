"""Tracking metrics, exactly as the released evaluation code computes them (docs/tracking.md).

One-pass evaluation (OPE), pytracking's `extract_results.py` / `plot_results.py` (LaSOT, TrackingNet
train, UAV123, OTB, ...), per sequence of N frames:
  * boxes with w == 0 or h == 0 are replaced by the previous box (unless the GT row is NaN), in frame
    order, so runs of them inherit the last non-degenerate box — *before* frame 0 is overwritten;
  * frame 0's prediction is overwritten with the ground truth;
  * IoU with inclusive pixels: br = xy + wh - 1, I = prod(clamp(br - tl + 1, 0)), U = A_p + A_g - I;
  * centre c = xy + (wh - 1) / 2; error |c_p - c_g|; normalised error |c_p / wh_g - c_g / wh_g|;
  * valid frames: GT w > 0 and h > 0 (and target visible where the dataset says, LaSOT); invalid frames
    get overlap -1 and centre error inf (UAV123: -1, so they pass every precision threshold), normalised
    error -1; LaSOT frames whose target is not visible get both centre errors inf;
  * success(t) = #{overlap > t} / N over t in 0:0.05:1, precision(d) = #{error <= d} / N for d in
    0..50 px, normalised precision over 0:0.01:0.5 — N the full length, so invalid frames count;
  * per-sequence curves are averaged over sequences; AUC = mean of the success curve, OP50 / OP75 its
    values at 0.5 / 0.75, Precision at 20 px, NormPrecision at 0.20. All in percent.
GOT-10k (the toolkit's `ExperimentGOT10k.report`), per sequence: drop frame 0, keep frames with
cover > 0, clip both boxes to the image (x in [0, W], w in [0, W - x]), IoU = I / (U + eps) with
exclusive corners, clipped to [0, 1]; pool the IoUs of all sequences (and repetitions): AO = mean,
SR_t = fraction > t (t = 0.5, 0.75), the success curve over linspace(0, 1, 101); FPS = mean(1 / t) over
positive finite frame times.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Iterable

import chex
import numpy as np

from dropmae_jax.track import datasets
from dropmae_jax.track.evaluation import results as results_lib

OVERLAP_THRESHOLDS = np.arange(0.0, 1.0 + 0.05, 0.05)       # (21,), as torch.arange in pytracking
CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64)       # (51,) pixels
NORM_CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64) / 100.0
GOT10K_THRESHOLDS = np.linspace(0, 1, 101)
PRECISION_INDEX = 20                                         # 20 px / 0.20 on the curves above


class MetricsError(ValueError):
  """Inputs that the evaluation protocol rejects (the message names the sequence)."""


def _check_boxes(*boxes: np.ndarray) -> None:
  for b in boxes:
    chex.assert_rank(b, 2)
    chex.assert_axis_dimension(b, 1, 4)
  chex.assert_equal_shape(boxes)


# ------------------------------------------------------------------------------------------------
# OPE (pytracking)


def iou_inclusive(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """(N, 4), (N, 4) xywh -> (N,) IoU counting pixels inclusively (a box covers x .. x + w - 1)."""
  _check_boxes(pred, gt)
  tl = np.maximum(pred[:, :2], gt[:, :2])
  br = np.minimum(pred[:, :2] + pred[:, 2:] - 1.0, gt[:, :2] + gt[:, 2:] - 1.0)
  inter = np.prod(np.clip(br - tl + 1.0, 0, None), axis=1)
  union = np.prod(pred[:, 2:], axis=1) + np.prod(gt[:, 2:], axis=1) - inter
  with np.errstate(invalid="ignore", divide="ignore"):
    return inter / union


def center_error(pred: np.ndarray, gt: np.ndarray, normalized: bool = False) -> np.ndarray:
  """(N,) distance between centres xy + (wh - 1) / 2; `normalized` divides both by the GT's wh."""
  _check_boxes(pred, gt)
  cp = pred[:, :2] + 0.5 * (pred[:, 2:] - 1.0)
  cg = gt[:, :2] + 0.5 * (gt[:, 2:] - 1.0)
  # Invalid GT rows (w or h 0, NaN) give inf / NaN here; the caller overwrites them with sentinels.
  with np.errstate(invalid="ignore", divide="ignore"):
    if normalized:
      # Each centre divided separately (not the difference), as pytracking: same rounding.
      cp, cg = cp / gt[:, 2:], cg / gt[:, 2:]
    return np.sqrt(np.sum((cp - cg) ** 2, axis=1))


def carry_over_zero_size(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """Replace boxes with w == 0 or h == 0 by the previous (already replaced) box, frames 1..N-1,
  except where the GT row has a NaN. Equivalent to pytracking's sequential loop: each such frame takes
  the last earlier frame that was not replaced (frame 0 never is)."""
  _check_boxes(pred, gt)
  n = pred.shape[0]
  replace = np.any(pred[:, 2:] == 0.0, axis=1) & ~np.any(np.isnan(gt), axis=1)
  replace[0] = False
  source = np.maximum.accumulate(np.where(replace, 0, np.arange(n)))
  return pred[source]


@dataclasses.dataclass
class SequenceErrors:
  """Per-frame errors of one sequence (N,) each, with pytracking's sentinels on invalid frames."""
  overlap: np.ndarray
  center: np.ndarray
  center_norm: np.ndarray
  valid: np.ndarray


def ope_sequence_errors(pred: np.ndarray, gt: np.ndarray, target_visible: np.ndarray | None = None,
                        dataset: str = "", name: str = "") -> SequenceErrors:
  """pytracking's calc_seq_err_robust for equal-length (N, 4) prediction and ground truth."""
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  _check_boxes(pred, gt)
  where = f"sequence {name!r}" if name else "sequence"
  if np.isnan(pred).any() or (pred[:, 2:] < 0).any():
    raise MetricsError(f"{where}: predictions contain NaN or a negative width/height")
  if np.isnan(gt).any() and dataset != "uav":
    raise MetricsError(f"{where}: NaN in the ground truth (allowed only for UAV123)")
  pred = carry_over_zero_size(pred, gt)
  pred[0] = gt[0]
  with np.errstate(invalid="ignore"):
    valid = (gt[:, 2] > 0) & (gt[:, 3] > 0)
  if target_visible is not None:
    target_visible = np.asarray(target_visible, bool)
    chex.assert_shape(target_visible, (gt.shape[0],))
    valid &= target_visible
  overlap = iou_inclusive(pred, gt)
  center = center_error(pred, gt)
  center_norm = center_error(pred, gt, normalized=True)
  overlap[~valid] = -1.0
  center[~valid] = -1.0 if dataset == "uav" else np.inf
  center_norm[~valid] = -1.0
  if dataset == "lasot" and target_visible is not None:
    center[~target_visible] = np.inf
    center_norm[~target_visible] = np.inf
  if np.isnan(overlap).any():
    raise MetricsError(f"{where}: NaN overlap (a zero-area predicted and ground-truth box)")
  return SequenceErrors(overlap, center, center_norm, valid)


@dataclasses.dataclass
class SequenceCurves:
  """One sequence's success (21,), precision (51,) and normalised precision (51,) curves, fractions."""
  success: np.ndarray
  precision: np.ndarray
  norm_precision: np.ndarray
  avg_overlap: float      # mean overlap over valid frames (pytracking's avg_overlap_all); NaN if none


def ope_sequence_curves(errors: SequenceErrors) -> SequenceCurves:
  n = errors.overlap.shape[0]
  if n <= 0:
    raise MetricsError("sequence of length zero")
  success = (errors.overlap[:, None] > OVERLAP_THRESHOLDS[None, :]).sum(0) / n
  precision = (errors.center[:, None] <= CENTER_THRESHOLDS[None, :]).sum(0) / n
  norm_precision = (errors.center_norm[:, None] <= NORM_CENTER_THRESHOLDS[None, :]).sum(0) / n
  avg = float(errors.overlap[errors.valid].mean()) if errors.valid.any() else float("nan")
  return SequenceCurves(success, precision, norm_precision, avg)


def ope_summary(curves: Iterable[SequenceCurves]) -> dict:
  """Sequence-averaged curves -> {'metrics': {AUC, OP50, OP75, Precision, NormPrecision} (percent),
  'curves': {name: {'thresholds', 'values' (percent)}}}."""
  curves = list(curves)
  if not curves:
    raise MetricsError("no sequences to summarise")
  success = np.mean([c.success for c in curves], axis=0) * 100.0
  precision = np.mean([c.precision for c in curves], axis=0) * 100.0
  norm_precision = np.mean([c.norm_precision for c in curves], axis=0) * 100.0
  metrics = {"AUC": float(success.mean()),
             "OP50": float(success[np.isclose(OVERLAP_THRESHOLDS, 0.5)][0]),
             "OP75": float(success[np.isclose(OVERLAP_THRESHOLDS, 0.75)][0]),
             "Precision": float(precision[PRECISION_INDEX]),
             "NormPrecision": float(norm_precision[PRECISION_INDEX])}
  return {"metrics": metrics, "curves": {
      "success": {"thresholds": OVERLAP_THRESHOLDS.tolist(), "values": success.tolist()},
      "precision": {"thresholds": CENTER_THRESHOLDS.tolist(), "values": precision.tolist()},
      "norm_precision": {"thresholds": NORM_CENTER_THRESHOLDS.tolist(),
                         "values": norm_precision.tolist()}}}


# ------------------------------------------------------------------------------------------------
# GOT-10k (toolkit)


def clip_to_image(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
  """(N, 4) xywh clipped as the GOT-10k toolkit's rect_iou(bound=(W, H)): x in [0, W], then
  w in [0, W - x] (y, h likewise)."""
  chex.assert_rank(boxes, 2)
  width, height = image_size
  out = np.array(boxes, np.float64)
  out[:, 0] = np.clip(out[:, 0], 0, width)
  out[:, 1] = np.clip(out[:, 1], 0, height)
  out[:, 2] = np.clip(out[:, 2], 0, width - out[:, 0])
  out[:, 3] = np.clip(out[:, 3], 0, height - out[:, 1])
  return out


def iou_bounded(pred: np.ndarray, gt: np.ndarray, image_size: tuple[int, int] | None) -> np.ndarray:
  """(N,) GOT-10k toolkit IoU: both boxes clipped to the image, exclusive corners (x + w),
  I / (U + eps) clipped to [0, 1]."""
  _check_boxes(pred, gt)
  if image_size is not None:
    pred, gt = clip_to_image(pred, image_size), clip_to_image(gt, image_size)
  x1 = np.maximum(pred[:, 0], gt[:, 0])
  y1 = np.maximum(pred[:, 1], gt[:, 1])
  x2 = np.minimum(pred[:, 0] + pred[:, 2], gt[:, 0] + gt[:, 2])
  y2 = np.minimum(pred[:, 1] + pred[:, 3], gt[:, 1] + gt[:, 3])
  inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
  union = pred[:, 2] * pred[:, 3] + gt[:, 2] * gt[:, 3] - inter
  return np.clip(inter / (union + np.finfo(float).eps), 0.0, 1.0)


def got10k_sequence_ious(pred: np.ndarray, gt: np.ndarray, cover: np.ndarray,
                         image_size: tuple[int, int] | None) -> np.ndarray:
  """The IoUs one sequence contributes: frames 1.. whose cover > 0."""
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  _check_boxes(pred, gt)
  chex.assert_shape(cover, (gt.shape[0],))
  ious = iou_bounded(pred[1:], gt[1:], image_size)
  return ious[np.asarray(cover)[1:] > 0]


def got10k_scores(ious: np.ndarray, times: np.ndarray | None = None) -> dict:
  """{'AO', 'SR0.5', 'SR0.75'} in percent (NaN without frames), 'FPS' (None without times)."""
  ious = np.asarray(ious, np.float64).reshape(-1)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a sequence without visible frames: NaN
    scores = {"AO": float(np.mean(ious) * 100.0) if ious.size else float("nan"),
              "SR0.5": float(np.mean(ious > 0.5) * 100.0) if ious.size else float("nan"),
              "SR0.75": float(np.mean(ious > 0.75) * 100.0) if ious.size else float("nan")}
  fps = None
  if times is not None:
    times = np.asarray(times, np.float64).reshape(-1)
    times = times[~np.isnan(times)]
    times = times[times > 0]
    fps = float(np.mean(1.0 / times)) if times.size else None
  scores["FPS"] = fps
  return scores


def got10k_success_curve(ious: np.ndarray) -> np.ndarray:
  """(101,) fraction of IoUs > t for t in linspace(0, 1, 101)."""
  ious = np.asarray(ious, np.float64).reshape(-1)
  return np.mean(ious[:, None] > GOT10K_THRESHOLDS[None, :], axis=0)


# ------------------------------------------------------------------------------------------------
# Evaluating a results folder


def _sequence_results(seq: datasets.Sequence, results_dir: str, allow_missing: bool,
                      missing: list[str]):
  if not seq.fully_annotated:
    raise MetricsError(f"{seq.dataset} sequence {seq.name!r} has ground truth for the first frame "
                       f"only (a withheld test split): pack the results for the evaluation server "
                       f"with `python -m dropmae_jax.track pack` instead")
  try:
    return results_lib.load_sequence_results(results_dir, seq.name, seq.ground_truth.shape[0])
  except results_lib.ResultsError:
    if allow_missing and not results_lib.find_box_files(results_dir, seq.name):
      missing.append(seq.name)
      return None
    raise


def evaluate_ope(sequences: Iterable[datasets.Sequence], results_dir: str,
                 allow_missing: bool = False) -> dict:
  """Score a results folder with pytracking's OPE metrics. Repetitions (<seq>_001.., _002..) are
  averaged per sequence, as pytracking merges runs. Returns metrics, curves, per-sequence scores."""
  per_sequence, curves, missing = {}, [], []
  for seq in sequences:
    loaded = _sequence_results(seq, results_dir, allow_missing, missing)
    if loaded is None:
      continue
    # pytracking gives only LaSOT sequences a target_visible; GOT-10k's absence.label is not used.
    visible = seq.target_visible if seq.dataset == "lasot" else None
    reps = [ope_sequence_curves(ope_sequence_errors(b, seq.ground_truth, visible, seq.dataset,
                                                    seq.name)) for b in loaded[0]]
    merged = SequenceCurves(*(np.mean([getattr(r, f) for r in reps], axis=0)
                              for f in ("success", "precision", "norm_precision", "avg_overlap")))
    curves.append(merged)
    per_sequence[seq.name] = {"AUC": float(merged.success.mean() * 100.0),
                              "Precision": float(merged.precision[PRECISION_INDEX] * 100.0),
                              "avg_overlap": float(merged.avg_overlap),
                              "length": int(seq.ground_truth.shape[0])}
  if not curves:
    raise MetricsError(f"{results_dir}: no sequence has results")
  report = ope_summary(curves)
  report.update(protocol="ope", evaluated=len(curves), missing=missing, per_sequence=per_sequence)
  return report


def evaluate_got10k(sequences: Iterable[datasets.Sequence], results_dir: str,
                    allow_missing: bool = False) -> dict:
  """Score a results folder with the GOT-10k toolkit's protocol (val / train splits)."""
  per_sequence, all_ious, all_times, missing = {}, [], [], []
  for seq in sequences:
    loaded = _sequence_results(seq, results_dir, allow_missing, missing)
    if loaded is None:
      continue
    boxes, times = loaded
    if seq.cover is not None:
      cover = seq.cover
    elif seq.target_visible is not None:  # absence.label only: cover > 0 <=> not absent
      cover = seq.target_visible.astype(np.int64)
    else:
      raise MetricsError(f"GOT-10k sequence {seq.name!r} has neither cover.label nor absence.label")
    size = seq.image_size or datasets.frame_size(seq.frames[0])
    ious = np.concatenate([got10k_sequence_ious(b, seq.ground_truth, cover, size) for b in boxes])
    all_ious.append(ious)
    if times is not None:
      all_times.append(times)
    scores = got10k_scores(ious, times)
    per_sequence[seq.name] = {**scores, "length": int(seq.ground_truth.shape[0] - 1)}
  if not all_ious:
    raise MetricsError(f"{results_dir}: no sequence has results")
  pooled = np.concatenate(all_ious)
  metrics = got10k_scores(pooled, np.concatenate(all_times) if all_times else None)
  return {"protocol": "got10k", "metrics": metrics,
          "curves": {"success": {"thresholds": GOT10K_THRESHOLDS.tolist(),
                                 "values": (got10k_success_curve(pooled) * 100.0).tolist()}},
          "evaluated": len(all_ious), "missing": missing, "per_sequence": per_sequence}


def evaluate(protocol: str, sequences: Iterable[datasets.Sequence], results_dir: str,
             allow_missing: bool = False) -> dict:
  if protocol == "got10k":
    return evaluate_got10k(sequences, results_dir, allow_missing)
  if protocol == "ope":
    return evaluate_ope(sequences, results_dir, allow_missing)
  raise MetricsError(f"unknown protocol {protocol!r}: 'got10k' or 'ope'")
