"""What the user watches: WORKDIR/metrics.jsonl, TensorBoard event files, a progress bar and a
few log lines (skipped videos, the closing summary)."""
from __future__ import annotations

import contextlib
import datetime
import json
import logging as py_logging
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tqdm


def read_last_row(workdir: str) -> dict[str, Any]:
  """The last complete row of WORKDIR/metrics.jsonl without its 'step' ({} if none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return {}
  last: dict[str, Any] = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        last = json.loads(line)
      except json.JSONDecodeError:  # a row cut short by a kill
        continue
  last.pop("step", None)
  return last


def _json_safe(value: Any) -> int | float | None:
  """A JSON-safe scalar: integers (and bools) stay ints, everything else becomes a float.

  NaN and ±inf are not valid JSON, so they are written as null; the training loop stops on
  them anyway, and `null` parses in every JSON reader (pandas reads it as NaN).
  """
  if isinstance(value, (bool, np.bool_, int, np.integer)):
    return int(value)
  value = float(value)  # also unwraps numpy / jax 0-d arrays
  return value if math.isfinite(value) else None


class _DropNanWarning(py_logging.Filter):
  def filter(self, record: py_logging.LogRecord) -> bool:
    return "NaN or Inf found" not in record.getMessage()


def _quiet_tensorboardx_nan_warning() -> None:
  # NaN is written on purpose (pairs/s of a step that was not timed, the first logged row of
  # every run); tensorboardX warns about each, and the trainer already stops on a NaN loss with
  # its own message.
  logger = py_logging.getLogger("tensorboardX.x2num")
  if not any(isinstance(f, _DropNanWarning) for f in logger.filters):
    logger.addFilter(_DropNanWarning())


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
    _quiet_tensorboardx_nan_warning()
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

  `total` is the step this run stops at (config.max_steps shortens it), so the ETA is this
  run's. Disabled (prints nothing) on non-main processes or when `total` is None.
  """

  def __init__(self, total: int | None, initial: int = 0, enabled: bool = True):
    self.total = total
    self.enabled = enabled and total is not None
    self._bar = tqdm.tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                          disable=not self.enabled)
    self._position = initial

  def above(self) -> contextlib.AbstractContextManager:
    """Context in which log lines print above the bar instead of through it."""
    if not self.enabled:
      return contextlib.nullcontext()
    return tqdm.tqdm.external_write_mode()

  def update(self, step: int, **postfix: float) -> None:
    """Move the bar to `step`; keyword values are shown after it (`pairs_per_sec` as pairs/s)."""
    # Postfix first: update() redraws, so the numbers shown belong to this step.
    self._bar.set_postfix({k.replace("_per_sec", "/s"): f"{v:.4g}" for k, v in postfix.items()},
                          refresh=False)
    self._bar.update(step - self._position)
    self._position = step

  def close(self) -> None:
    self._bar.close()


class SkippedVideoLog:
  """Reports unreadable videos without flooding the log.

  The first `name_first` are named with the reason (one line each); after that, one line per
  log interval says how many more were skipped. The running total is the `skipped_videos`
  column of metrics.jsonl. `emit` prints one line (the trainer logs a warning above the bar).

  Args:
    emit: called with each line.
    name_first: how many skipped videos to name.
    total: videos skipped before this run (a resumed run's counter).
  """

  def __init__(self, emit: Callable[[str], None], name_first: int = 5, total: int = 0):
    self._emit = emit
    self._name_first = name_first
    self._named = 0
    self._named_since_report = 0
    self._reported_total = int(total)

  def name(self, reasons: Iterable[str]) -> None:
    """Name skipped videos (the reasons of one batch's items) while the quota lasts."""
    for reason in reasons:
      if self._named >= self._name_first:
        return
      self._named += 1
      self._named_since_report += 1
      more = ("; further ones are counted once per log interval (skipped_videos in "
              "metrics.jsonl)") if self._named == self._name_first else ""
      self._emit(f"skipping unreadable video: {reason}{more}")

  def report(self, step: int, total: int) -> None:
    """At a log interval: one line if more videos were skipped than were named since the last."""
    new = int(total) - self._reported_total
    if new > self._named_since_report:
      self._emit(f"step {step}: {new} unreadable video{'s' if new != 1 else ''} skipped since "
                 f"the last report ({int(total)} in all)")
    self._reported_total = int(total)
    self._named_since_report = 0


def format_duration(seconds: float) -> str:
  """1234.5 -> '0:20:34'."""
  return str(datetime.timedelta(seconds=int(round(seconds))))
