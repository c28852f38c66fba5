"""benchmarks/gpu_report.py: the table logic on hand-made rows, and the whole report on a CPU."""
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_report  # noqa: E402  (imports no JAX: the report's parent process never does)
import gpu_report_rows  # noqa: E402

RESULT = re.compile(r"^RESULT dropmae_pairs_per_sec=(\S+) twinmae_pairs_per_sec=(\S+) "
                    r"asad_layer_fwdbwd_ms=(\S+) peak_gib=(\S+) dropmae_batch=(\d+) "
                    r"dropmae_masked_attention=(fused|cudnn|none)$")


def ok(system, batch, seconds, compiled=None, measured=None, remat=False):
  return gpu_report_rows.row_record(system, batch, remat, seconds=seconds,
                                    compiled_bytes=compiled, measured_bytes=measured)


def test_rows_in_priority_order_and_oom_retried_with_remat():
  rows = gpu_report_rows.plan_rows((64, 128))
  assert rows == [("twinmae", 64), ("dropmae_kernels", 64), ("dropmae_kernels_cudnn", 64),
                  ("twinmae", 128), ("dropmae_kernels", 128), ("dropmae_kernels_cudnn", 128),
                  ("dropmae_reference", 64), ("dropmae_reference", 128)]
  rows = [r for r in rows if r[0] != "dropmae_kernels_cudnn"]
  calls = []

  def run_row(system, batch, remat):
    calls.append((system, batch, remat))
    oom = batch == 128 and system != "twinmae" and not remat
    return gpu_report_rows.row_record(system, batch, remat, status="OOM" if oom else "ok",
                                      seconds=None if oom else 1.0)

  results = gpu_report_rows.run_table(rows, run_row, remat_fallback=True)
  assert calls == [("twinmae", 64, False), ("dropmae_kernels", 64, False),
                   ("twinmae", 128, False), ("dropmae_kernels", 128, False),
                   ("dropmae_kernels", 128, True), ("dropmae_reference", 64, False),
                   ("dropmae_reference", 128, False), ("dropmae_reference", 128, True)]
  assert [r["status"] for r in results].count("OOM") == 2
  calls.clear()
  gpu_report_rows.run_table(rows, run_row, remat_fallback=False)   # --isolate_rows children
  assert all(not remat for _, _, remat in calls) and len(calls) == len(rows)


def test_result_line_takes_each_systems_best_batch():
  gib = 1 << 30
  records = [
      ok("twinmae", 64, 64 / 1000), ok("twinmae", 128, 128 / 1200),
      ok("dropmae_kernels", 64, 64 / 900, compiled=9 * gib, measured=10 * gib),
      ok("dropmae_kernels", 128, 128 / 950, compiled=17 * gib),     # measured not available
      gpu_report_rows.row_record("dropmae_kernels", 256, False, status="OOM"),
      ok("dropmae_kernels", 256, 256 / 940, compiled=30 * gib, remat=True),
      ok("dropmae_reference", 64, 64 / 2000),                       # not a kernels row: ignored
  ]
  line = gpu_report.result_line({"train": records,
                                 "kernels": [{"kind": "layer", "impl": "kernels", "fwd": 1e-3,
                                              "fwdbwd": 1.5e-3}]})
  dropmae, twinmae, layer_ms, peak, batch, masked = RESULT.match(line).groups()
  assert float(dropmae) == pytest.approx(950.0) and int(batch) == 128 and masked == "fused"
  assert float(twinmae) == pytest.approx(1200.0)
  assert float(layer_ms) == pytest.approx(1.5) and float(peak) == pytest.approx(17.0)
  # The faster kernel system is DropMAE's number, with its own layer time and peak.
  layers = [{"kind": "layer", "impl": "kernels", "fwd": 1e-3, "fwdbwd": 1.5e-3},
            {"kind": "layer", "impl": "kernels_cudnn", "fwd": 5e-4, "fwdbwd": 9e-4}]
  faster = records + [ok("dropmae_kernels_cudnn", 64, 64 / 1500, compiled=11 * gib)]
  line = gpu_report.result_line({"train": faster, "kernels": layers})
  dropmae, _, layer_ms, peak, batch, masked = RESULT.match(line).groups()
  assert float(dropmae) == pytest.approx(1500.0) and int(batch) == 64 and masked == "cudnn"
  assert float(layer_ms) == pytest.approx(0.9) and float(peak) == pytest.approx(11.0)
  empty = RESULT.match(gpu_report.result_line({}))
  assert all(math.isnan(float(x)) for x in empty.groups()[:4]) and empty.group(5) == "0"
  assert empty.group(6) == "none"


def test_train_table_prints_ratios_oom_and_missing_rows(capsys):
  shapes = gpu_report.SMOKE
  records = [{"kind": "train_meta", "device": "fake", "kernel": "pallas_gpu", "limit_bytes": None},
             ok("twinmae", 2, 0.01), ok("dropmae_kernels", 2, 0.02),
             gpu_report_rows.row_record("dropmae_kernels", 4, False, status="OOM",
                                        note="needs 9 GiB"),
             ok("dropmae_kernels", 4, 0.05, remat=True)]
  gpu_report.print_train_table(records, shapes)
  out = capsys.readouterr().out
  assert re.search(r"2  DropMAE, pallas_gpu\s+20\.0\s+100\.0\s+2\.00x", out)
  assert "OOM: needs 9 GiB" in out and "DropMAE, pallas_gpu + remat" in out
  assert re.search(r"4  TwinMAE \(P = 0\)\s+not run", out)
  assert re.search(r"2  DropMAE, reference\s+not run", out)


def test_smoke_report_runs_every_section_on_cpu():
  """The same script as on a GPU, tiny shapes, kernels interpreted: every section prints
  its content (cuDNN is the one expected failure on a CPU) and the RESULT line parses."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmarks", "gpu_report.py"), "--cpu_smoke",
       "--batches=2", "--budget_s=280"],
      capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
  out = proc.stdout
  assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
  for title in gpu_report.TITLES.values():
    assert f"== {title}" in out
  for line in ("device    cpu", "jax ", "asad.impl=auto -> reference", "asad.masked_attention=auto -> fused", "drop masks: ",
               "GPU select: heads by slab passes",
               "  dq ", "plain, XLA (implementation='xla')", "ASAD kernels (pallas_gpu)",
               "2 asad_select", "4 backward (dq + dk/dv)", "select speed-up",
               "ASAD kernels (pallas_gpu) + cuDNN attention", "kernel + cuDNN",
               "dot_product_attention + mask, fwd+bwd", "DropMAE, pallas_gpu + cuDNN",
               "32/16/32/64/16", "TwinMAE (P = 0)"):
    assert line in out, (line, out[-3000:])
  failures = [l for l in out.splitlines() if l.startswith("FAILED")]
  assert len(failures) == 1 and "cuDNN" in failures[0], failures
  result = out.strip().splitlines()[-1]
  dropmae, twinmae, layer_ms, peak, batch, _ = RESULT.match(result).groups()
  assert float(dropmae) > 0 and float(twinmae) > 0 and float(layer_ms) > 0
  assert float(peak) > 0 and batch == "2"   # CPU: compiled memory analysis (no memory_stats)
