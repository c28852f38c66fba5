"""What the user watches: WORKDIR/metrics.jsonl, TensorBoard event files and a progress bar."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import tqdm


def _json_safe(value):
  """Counts stay ints; NaN/inf are not JSON and are written as null (the run stops on them)."""
  if isinstance(value, (int, np.integer)):
    return int(value)
  value = float(value)
  return value if math.isfinite(value) else None


class MetricWriter:
  """Appends one JSON object per `write` to metrics.jsonl and the same scalars to TensorBoard.

  Only process 0 writes. Reopening the same workdir appends (a resumed run continues the file).
  """

  def __init__(self, workdir: str, *, is_main_process: bool = True):
    self._enabled = is_main_process
    self._jsonl = None
    self._tb = None
    if not self._enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    from tensorboardX import SummaryWriter  # imported lazily: only process 0 needs it
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self._enabled:
      return
    row = {"step": int(step), **{k: _json_safe(v) for k, v in metrics.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    for name, value in metrics.items():
      self._tb.add_scalar(f"train/{name}", float(value), int(step))

  def flush(self) -> None:
    if self._enabled:
      self._jsonl.flush()
      self._tb.flush()

  def close(self) -> None:
    if self._enabled:
      self._jsonl.close()
      self._tb.close()


class ProgressBar:
  """tqdm bar over optimizer steps with loss and pairs/s; silent on other processes."""

  def __init__(self, total: int, initial: int = 0, enabled: bool = True):
    self._bar = tqdm.tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                          disable=not enabled)
    self._position = initial

  def update(self, step: int, **postfix: float) -> None:
    self._bar.update(step - self._position)
    self._position = step
    self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

  def close(self) -> None:
    self._bar.close()
