"""J&F as the official davis2017-evaluation toolkit computes it (semi-supervised task), in numpy.

Reference: davisvideochallenge/davis2017-evaluation, `davis2017/metrics.py` (db_eval_iou,
db_eval_boundary / f_measure / _seg2bmap), `davis2017/utils.py` (db_statistics) and
`davis2017/evaluation.py` (`_evaluate_semisupervised`, `evaluate`). What it does, and so do we:

  * Objects: K = the largest id of the first ground-truth frame; object k is `ids == k`.
    Ground-truth 255 (void) is set to 0 before the split, so the toolkit's void masks
    (`gt == 255` on the already-binary masks) are always empty: void pixels count as background.
  * The first and the last frame are dropped (`all_gt_masks[:, 1:-1]`); results are read for the
    remaining frames by name (<frame stem>.png).
  * J = |S ∩ G| / |S ∪ G| per object and frame; 1 when the union is empty.
  * F: one-pixel boundaries (`_seg2bmap`), each dilated with a disk of radius
    ceil(0.008 · ||(H, W)||) px (cv2.dilate with skimage's disk), precision = predicted boundary
    pixels within reach of the GT boundary / predicted boundary pixels, recall the other way;
    F = 2PR / (P + R); empty boundaries: (P, R) = (1, 0), (0, 1) or (1, 1) as in f_measure.
  * Per object: Mean = nanmean over frames, Recall = mean(value > 0.5), Decay = mean of the first
    minus mean of the last of 4 overlapping bins, `ids = round(linspace(1, N, 5) + 1e-10) - 1`.
  * J-Mean etc. average the per-object numbers over all objects of all sequences;
    J&F-Mean = (J-Mean + F-Mean) / 2.

Where the toolkit cannot go on we raise `VosDataError` instead (it prints and calls sys.exit):
a result id above K, a missing result frame, a result of another size. One difference: a result
whose largest id is below K (an object never predicted in frames 1..T-2) makes the toolkit exit
with "an index higher than the number of objects"; here the missing objects score as empty masks.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

import numpy as np

from dropmae_jax.vos import davis

BOUND_TH = 0.008
MEASURES = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def db_eval_iou(annotation: np.ndarray, segmentation: np.ndarray) -> np.ndarray:
  """Jaccard index over the last two axes: (..., H, W) binary -> (...) float64; 1 if both empty."""
  annotation, segmentation = np.asarray(annotation, bool), np.asarray(segmentation, bool)
  if annotation.shape != segmentation.shape:
    raise ValueError(f"annotation {annotation.shape} and segmentation {segmentation.shape} differ")
  inters = np.sum(annotation & segmentation, axis=(-2, -1))
  union = np.sum(annotation | segmentation, axis=(-2, -1))
  with np.errstate(invalid="ignore", divide="ignore"):
    j = inters / union
  return np.where(union == 0, 1.0, j)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
  """(H, W) binary -> (H, W) bool boundary map, 1 px wide, offset half a pixel towards the origin.

  A pixel is on the boundary if it differs from its east, south or south-east neighbour (pixels
  past the image count as 0); the last row compares east only, the last column south only, and
  the bottom-right pixel is never a boundary -- `_seg2bmap` exactly.
  """
  seg = np.asarray(seg, bool)
  e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
  e[:, :-1] = seg[:, 1:]
  s[:-1, :] = seg[1:, :]
  se[:-1, :-1] = seg[1:, 1:]
  b = (seg ^ e) | (seg ^ s) | (seg ^ se)
  b[-1, :] = seg[-1, :] ^ e[-1, :]
  b[:, -1] = seg[:, -1] ^ s[:, -1]
  b[-1, -1] = False
  return b


def dilate_disk(bmap: np.ndarray, radius: int) -> np.ndarray:
  """Binary dilation of (H, W) by the disk {(dy, dx): dy² + dx² <= radius²} (skimage's `disk`),
  pixels outside the image ignored (cv2.dilate's default border). Row by row: the disk's row dy
  is a horizontal run of half-width isqrt(r² - dy²), found with a cumulative sum."""
  b = np.asarray(bmap, bool)
  radius = int(radius)
  if radius <= 0:
    return b.copy()
  height, width = b.shape
  csum = np.zeros((height, width + 1), np.int32)
  csum[:, 1:] = np.cumsum(b, axis=1)
  cols = np.arange(width)
  runs: dict[int, np.ndarray] = {}
  out = np.zeros_like(b)
  for dy in range(-radius, radius + 1):
    half = math.isqrt(radius * radius - dy * dy)
    if half not in runs:
      lo, hi = np.clip(cols - half, 0, width), np.clip(cols + half + 1, 0, width)
      runs[half] = (csum[:, hi] - csum[:, lo]) > 0
    run = runs[half]
    if dy >= 0:
      out[:height - dy] |= run[dy:]
    else:
      out[-dy:] |= run[:height + dy]
  return out


def bound_pixels(shape: Sequence[int], bound_th: float = BOUND_TH) -> int:
  """Dilation radius: bound_th itself if >= 1, else ceil(bound_th · ||(H, W)||) (8 at 480x854)."""
  return int(bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(shape)))


def f_measure(foreground_mask: np.ndarray, gt_mask: np.ndarray, bound_th: float = BOUND_TH
              ) -> float:
  """Boundary F-measure of one (H, W) frame (f_measure without void pixels)."""
  radius = bound_pixels(np.shape(foreground_mask), bound_th)
  fg_boundary, gt_boundary = seg2bmap(foreground_mask), seg2bmap(gt_mask)
  fg_match = fg_boundary & dilate_disk(gt_boundary, radius)
  gt_match = gt_boundary & dilate_disk(fg_boundary, radius)
  n_fg, n_gt = int(fg_boundary.sum()), int(gt_boundary.sum())
  if n_fg == 0 and n_gt > 0:
    precision, recall = 1.0, 0.0
  elif n_fg > 0 and n_gt == 0:
    precision, recall = 0.0, 1.0
  elif n_fg == 0 and n_gt == 0:
    precision, recall = 1.0, 1.0
  else:
    precision, recall = fg_match.sum() / n_fg, gt_match.sum() / n_gt
  if precision + recall == 0:
    return 0.0
  return float(2 * precision * recall / (precision + recall))


def db_eval_boundary(annotation: np.ndarray, segmentation: np.ndarray,
                     bound_th: float = BOUND_TH) -> np.ndarray | float:
  """F per frame: (T, H, W) -> (T,) float64, or (H, W) -> float."""
  annotation, segmentation = np.asarray(annotation), np.asarray(segmentation)
  if annotation.shape != segmentation.shape:
    raise ValueError(f"annotation {annotation.shape} and segmentation {segmentation.shape} differ")
  if annotation.ndim == 2:
    return f_measure(segmentation, annotation, bound_th)
  if annotation.ndim != 3:
    raise ValueError(f"db_eval_boundary takes (H, W) or (T, H, W), got {annotation.shape}")
  return np.array([f_measure(segmentation[t], annotation[t], bound_th)
                   for t in range(annotation.shape[0])], np.float64)


def db_statistics(per_frame_values: np.ndarray) -> tuple[float, float, float]:
  """(Mean, Recall, Decay) of one object's per-frame J or F (utils.db_statistics)."""
  values = np.asarray(per_frame_values, np.float64)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", category=RuntimeWarning)
    mean = np.nanmean(values)
    recall = np.nanmean(values > 0.5)
    # The toolkit casts ids to uint8 (wraps past 255 frames); int64 agrees below that.
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.int64)
    bins = [values[ids[i]:ids[i + 1] + 1] for i in range(4)]
    decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
  return float(mean), float(recall), float(decay)


def split_objects(ids: np.ndarray, num_objects: int) -> np.ndarray:
  """(T, H, W) ids -> (K, T, H, W) bool, object k+1 in row k."""
  return ids[None] == np.arange(1, num_objects + 1, dtype=ids.dtype)[:, None, None, None]


def evaluate_sequence(gt_ids: np.ndarray, res_ids: np.ndarray, num_objects: int,
                      bound_th: float = BOUND_TH) -> tuple[np.ndarray, np.ndarray]:
  """Per-object, per-frame J and F, each (K, T') float64, on already-trimmed frames (T' = T - 2
  for a whole sequence). gt_ids / res_ids: (T', H, W) integer ids."""
  gt = split_objects(np.asarray(gt_ids), num_objects)
  res = split_objects(np.asarray(res_ids), num_objects)
  j = db_eval_iou(gt, res)
  f = np.stack([db_eval_boundary(gt[k], res[k], bound_th) for k in range(num_objects)]) \
      if gt.shape[1] else np.zeros((num_objects, 0))
  return j.reshape(num_objects, -1), f.reshape(num_objects, -1)


def read_results(results_dir: str, seq: davis.VosSequence, frame_ids: Sequence[str],
                 shape: tuple[int, int], num_objects: int, binary: bool = False) -> np.ndarray:
  """uint8 (len(frame_ids), H, W) result ids of one sequence, checked against the ground truth.
  `binary` (DAVIS-2016): any non-zero value is the one object (its results are 0 / 255)."""
  out = np.zeros((len(frame_ids),) + tuple(shape), np.uint8)
  for i, frame in enumerate(frame_ids):
    path = os.path.join(results_dir, seq.name, f"{frame}.png")
    if not os.path.isfile(path):
      raise davis.VosDataError(f"sequence {seq.name} frame {frame}: no result {path}")
    ids = davis.read_ids_png(path)
    if binary:
      ids = (ids > 0).astype(np.uint8)
    if ids.shape != tuple(shape):
      raise davis.VosDataError(f"sequence {seq.name} frame {frame}: result is "
                               f"{ids.shape[1]}x{ids.shape[0]}, the annotation {shape[1]}x{shape[0]}")
    top = int(ids.max()) if ids.size else 0
    if top > num_objects:
      raise davis.VosDataError(f"sequence {seq.name} frame {frame}: result holds object id {top} "
                               f"but the first frame defines {num_objects} object(s)")
    out[i] = ids
  return out


def evaluate(dataset: davis.DavisDataset, results_dir: str, progress: bool = False,
             bound_th: float = BOUND_TH) -> dict:
  """Scores a folder of palette PNGs (results_dir/<seq>/<frame>.png) on every dataset sequence.

  Returns {'J': {'M', 'R', 'D': per-object lists, 'M_per_object': {'<seq>_<k>': mean}},
  'F': same, 'global': {measure: value for MEASURES}} -- the toolkit's `metrics_res` plus the
  global row that its `evaluation_method.py` prints.
  """
  if not os.path.isdir(results_dir):
    raise davis.VosDataError(f"{results_dir}: results folder not found")
  if not any(f.endswith(".png") for _, _, files in os.walk(results_dir) for f in files):
    raise davis.VosDataError(f"{results_dir}: results folder holds no PNG "
                             f"(expected {results_dir}/<sequence>/<frame>.png)")
  out = {m: {"M": [], "R": [], "D": [], "M_per_object": {}} for m in ("J", "F")}
  import tqdm
  for seq in tqdm.tqdm(list(dataset), desc="evaluate", unit="seq", disable=not progress):
    gt, k = dataset.read_annotations(seq)
    frame_ids = seq.frame_ids[1:-1]
    res = read_results(results_dir, seq, frame_ids, gt.shape[1:], k,
                       binary=dataset.year == "2016")
    j, f = evaluate_sequence(gt[1:-1], res, k, bound_th)
    for obj in range(k):
      name = f"{seq.name}_{obj + 1}"
      for measure, values in (("J", j[obj]), ("F", f[obj])):
        mean, recall, decay = db_statistics(values)
        out[measure]["M"].append(mean)
        out[measure]["R"].append(recall)
        out[measure]["D"].append(decay)
        out[measure]["M_per_object"][name] = mean
  out["global"] = global_measures(out)
  return out


def global_measures(metrics: dict) -> dict[str, float]:
  """The toolkit's global row: J&F-Mean and the J / F mean, recall, decay over all objects."""
  j, f = metrics["J"], metrics["F"]
  row = [(np.mean(j["M"]) + np.mean(f["M"])) / 2, np.mean(j["M"]), np.mean(j["R"]),
         np.mean(j["D"]), np.mean(f["M"]), np.mean(f["R"]), np.mean(f["D"])]
  return {name: float(v) for name, v in zip(MEASURES, row)}


def format_table(metrics: dict, subset: str = "val") -> str:
  """The two tables davis2017-evaluation's evaluation_method.py prints (3 decimals)."""
  lines = [f"--------------------------- Global results for {subset} ---------------------------"]
  lines.append(" ".join(f"{m:>9}" for m in MEASURES))
  lines.append(" ".join(f"{metrics['global'][m]:>9.3f}" for m in MEASURES))
  lines.append(f"\n---------- Per sequence results for {subset} ----------")
  names = list(metrics["J"]["M_per_object"])
  width = max([len("Sequence")] + [len(n) for n in names])
  lines.append(f"{'Sequence':>{width}}  J-Mean  F-Mean")
  for name in names:
    lines.append(f"{name:>{width}}  {metrics['J']['M_per_object'][name]:6.3f}  "
                 f"{metrics['F']['M_per_object'][name]:6.3f}")
  return "\n".join(lines)
