"""What the user watches: WORKDIR/metrics.jsonl, TensorBoard event files and a progress bar."""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import tqdm


def _json_safe(value: Any) -> int | float | None:
  """A JSON-safe scalar: integers (and bools) stay ints, everything else becomes a float.

  NaN and ±inf are not valid JSON, so they are written as null; the training loop stops on
  them anyway, and `null` parses in every JSON reader (pandas reads it as NaN).
  """
  if isinstance(value, (bool, np.bool_, int, np.integer)):
    return int(value)
  value = float(value)  # also unwraps numpy / jax 0-d arrays
  return value if math.isfinite(value) else None


class MetricWriter:
  """Appends one JSON object per `write` to metrics.jsonl and the same scalars to TensorBoard.

  metrics.jsonl rows look like {"step": 100, "loss": 0.93, "lr": 1.2e-05, ...}; non-finite values
  are written as null. TensorBoard scalars are tagged "train/<name>" and keep NaN as NaN.
  Only the main process writes (pass `is_main_process=jax.process_index() == 0`); elsewhere every
  method is a no-op and nothing is created. Reopening the same workdir appends to metrics.jsonl
  and adds a new event file, so a resumed run continues both.
  """

  def __init__(self, workdir: str, *, is_main_process: bool = True):
    self._enabled = is_main_process
    self._jsonl = None
    self._tb = None
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    if not self._enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
    from tensorboardX import SummaryWriter  # imported lazily: only the main process needs it
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    """Record scalar `metrics` at optimizer step `step` (one jsonl line, one TB point each)."""
    if not self._enabled:
      return
    row = {"step": int(step), **{k: _json_safe(v) for k, v in metrics.items()}}
    # Flushed per row: a crash or kill loses at most the row being written.
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    for name, value in metrics.items():
      self._tb.add_scalar(f"train/{name}", float(value), int(step))

  def flush(self) -> None:
    if self._enabled:
      self._jsonl.flush()
      self._tb.flush()

  def close(self) -> None:
    if self._enabled and not self._jsonl.closed:
      self._jsonl.close()
      self._tb.close()

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


class ProgressBar:
  """tqdm bar over optimizer steps showing e.g. `loss=0.41, pairs/s=2.5e+03`.

  Disabled (prints nothing) on non-main processes or when `total` is None.
  """

  def __init__(self, total: int | None, initial: int = 0, enabled: bool = True):
    self._bar = tqdm.tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                          disable=not enabled or total is None)
    self._position = initial

  def update(self, step: int, **postfix: float) -> None:
    """Move the bar to `step`; keyword values are shown after it (`pairs_per_sec` as pairs/s)."""
    # Postfix first: update() redraws, so the numbers shown belong to this step.
    self._bar.set_postfix({k.replace("_per_sec", "/s"): f"{v:.4g}" for k, v in postfix.items()},
                          refresh=False)
    self._bar.update(step - self._position)
    self._position = step

  def close(self) -> None:
    self._bar.close()
