"""What `gpu_report.py` and its sections (`gpu_report_sections.py`) share; imports no JAX.

The line prefix of a section's JSON records, the shapes a report measures, and the train table's
rows: their order, the remat=True retry of a row that is OOM, and the record of one row.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

JSON_PREFIX = "@@JSON "


@dataclasses.dataclass(frozen=True)
class Shapes:
  """What the report measures. GPU: the paper's ViT-B setting; smoke: tiny, for a CPU."""
  layer: tuple[int, int, int, int]    # (B, L, H, D) of one decoder attention layer
  layer_dtype: str
  drop_ratio: float
  variant: str
  img_size: int
  decoder: tuple[int, int, int]       # width, depth, heads
  step_dtype: str
  batches: tuple[int, ...]
  layer_iters: int
  step_iters: int
  budget_s: float


def plan_rows(batches) -> list[tuple[str, int]]:
  """Row order: TwinMAE and the kernels at each batch first (what the table is for), the
  reference (the old default, slow and large) last, so a short budget loses the least."""
  rows = [(s, b) for b in batches for s in ("twinmae", "dropmae_kernels", "dropmae_kernels_cudnn")]
  return rows + [("dropmae_reference", b) for b in batches]


def run_table(rows, run_row: Callable[[str, int, bool], dict], remat_fallback: bool) -> list[dict]:
  """Runs (system, batch) rows in order; a row that is OOM is followed by its remat=True row."""
  results = []
  for system, batch in rows:
    result = run_row(system, batch, False)
    results.append(result)
    if remat_fallback and result["status"] == "OOM":
      results.append(run_row(system, batch, True))
  return results


def row_record(system: str, batch: int, remat: bool, *, status: str = "ok", seconds=None,
               compiled_bytes=None, measured_bytes=None, measured_upper_bytes=None,
               note: str = "") -> dict:
  return {"kind": "row", "system": system, "batch": batch, "remat": remat, "status": status,
          "seconds": seconds, "compiled_bytes": compiled_bytes, "measured_bytes": measured_bytes,
          "measured_upper_bytes": measured_upper_bytes, "note": note}


def gib(b) -> str:
  """Bytes as GiB to 3 significant digits; '—' when unknown."""
  return "—" if b is None else f"{b / (1 << 30):.3g}"
