"""Success and precision plots (PNG), one curve per tracker, its score in the legend.

Drawn on a bare `matplotlib.figure.Figure` with the Agg canvas, so importing this module never
switches the process-wide matplotlib backend (a notebook's inline backend stays as it was).
"""
from __future__ import annotations

import io
import os
from typing import Mapping

import numpy as np

from dropmae_jax.track.evaluation import results as results_lib

# (curve key, x label, y label, metric shown in the legend, title)
OPE_PLOTS = {
    "success": ("Overlap threshold", "Overlap Precision [%]", "AUC", "Success plot"),
    "precision": ("Location error threshold [pixels]", "Distance Precision [%]", "Precision",
                  "Precision plot"),
    "norm_precision": ("Location error threshold", "Distance Precision [%]", "NormPrecision",
                       "Normalized Precision plot"),
}
GOT10K_PLOTS = {"success": ("Overlap threshold", "Success rate [%]", "AO", "Success plot")}


def curve_plot(path: str, curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], *,
               xlabel: str, ylabel: str, score_name: str, title: str) -> str:
  """Write a PNG with one line per label: curves[label] = (thresholds, values in %, score).

  Lines are drawn best score first, as pytracking orders its legend.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  if not curves:
    raise ValueError(f"{path}: no curves to plot")
  fig = Figure(figsize=(6.0, 4.8), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  order = sorted(curves, key=lambda k: -np.nan_to_num(curves[k][2], nan=-np.inf))
  xmax = 0.0
  for label in order:
    x, y, score = curves[label]
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
      raise ValueError(f"{path}: curve {label!r} has {x.shape[0]} thresholds, {y.shape[0]} values")
    ax.plot(x, y, linewidth=2, label=f"{label} [{score_name} {score:.1f}]")
    xmax = max(xmax, float(x.max()))
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, xmax), ylim=(0, 100))
  ax.grid(True, linestyle="--", alpha=0.5)
  ax.legend(loc="lower left" if "Overlap" in xlabel else "lower right")
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png")
  results_lib.atomic_write_bytes(path, buffer.getvalue())
  return path


def report_plots(out_dir: str, reports: Mapping[str, dict], benchmark: str) -> list[str]:
  """Every plot of a protocol for several trackers' reports (from metrics.evaluate) -> PNG paths."""
  protocols = {r["protocol"] for r in reports.values()}
  if len(protocols) != 1:
    raise ValueError(f"cannot plot reports of different protocols together: {sorted(protocols)}")
  specs = GOT10K_PLOTS if protocols.pop() == "got10k" else OPE_PLOTS
  written = []
  for key, (xlabel, ylabel, score_name, title) in specs.items():
    curves = {label: (r["curves"][key]["thresholds"], r["curves"][key]["values"],
                      r["metrics"][score_name]) for label, r in reports.items()}
    written.append(curve_plot(os.path.join(out_dir, f"{benchmark}_{key}.png"), curves,
                              xlabel=xlabel, ylabel=ylabel, score_name=score_name,
                              title=f"{title} on {benchmark}"))
  return written
