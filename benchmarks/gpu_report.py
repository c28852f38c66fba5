"""The GPU report: one command that measures what the README's performance table needs.

  python benchmarks/gpu_report.py                  # a GPU (H100 / H200): at most ~5 minutes
  python benchmarks/gpu_report.py --cpu_smoke      # tiny shapes, any backend (CPU: interpret mode)

Prints, section by section:
  1. the device, jax / jaxlib / cuDNN versions, compute capability and what `auto` picks
     (ops/dispatch.py's table);
  2. the ASAD kernels against the jnp reference on this device: drop-mask disagreement, output and
     q/k/v gradient errors (ViT-B decoder layer: B 64, L 392, 16 heads, dim 32, bf16, P 0.1);
  3. per-layer times: plain attention through XLA and through cuDNN, the ASAD reference, the ASAD
     kernels with their own attention and with cuDNN's (asad.masked_attention='cudnn': the kernels
     select, jax.nn.dot_product_attention applies the mask), each kernel alone (keys, select,
     forward, backward; the full-search select beside the GPU's bracketed one; the dense mask and
     the masked cuDNN attention), and the kernels at each candidate block size
     (asad_plan.GPU_BLOCK_CANDIDATES: 16-row tiles against Hopper's 64-row wgmma tiles);
  4. the train step (ViT-B/16, 2 × 224², bf16) of TwinMAE, DropMAE with the reference and DropMAE
     with the kernels (own attention, and cuDNN's) at batch 64 / 128 / 256: ms/step, pairs/s and
     peak device memory, OOM rows retried with model.remat=True;
and a last line for scripts:
  RESULT dropmae_pairs_per_sec=.. twinmae_pairs_per_sec=.. asad_layer_fwdbwd_ms=.. peak_gib=..
         dropmae_batch=.. dropmae_masked_attention=fused|cudnn
(the best batch that fits for each system, DropMAE's the faster of the two kernel systems, whose
layer time and peak are shown; nan = not measured).

Each section runs in its own Python process (`--one=SECTION`; the sections' code is in
gpu_report_sections.py, what both share in gpu_report_rows.py) with a time limit, so a crash, a
hang or an out-of-memory in one prints `FAILED: <reason>` and the report goes on; the limits add
up to --budget_s (default 285 s), and a section that finishes early leaves its time to the train
table. This process never imports JAX, so it holds no GPU memory. Peak memory per row: 'compiled'
is XLA's buffer assignment for the step (arguments + outputs + temporaries − donated aliases:
deterministic, known before running); 'measured' is the device's peak_bytes_in_use, which JAX
cannot reset: within one process it is shown only for rows that raised it (it then is that
row's peak), '≤ x' otherwise; --isolate_rows runs each row in a fresh process to measure every
row (about 5 s more a row). Children run with XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 unless it is set.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from gpu_report_rows import JSON_PREFIX, Shapes, gib, plan_rows, row_record, run_table

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECTIONS = ("env", "check", "kernels", "train")
TITLES = {
    "env": "1. device, versions, what auto picks",
    "check": "2. ASAD kernels vs the jnp reference on this device",
    "kernels": "3. attention per decoder layer: plain (XLA, cuDNN), ASAD reference, ASAD kernels",
    "train": "4. train step",
}
# Seconds each section may take at most (the train table gets whatever is left of --budget_s).
# (kernels: 110 s since it also times the kernels with cuDNN's attention, 4 more compilations.)
SECTION_CAPS = {"env": 60, "check": 75, "kernels": 110}
SYSTEMS = ("twinmae", "dropmae_kernels", "dropmae_kernels_cudnn", "dropmae_reference")
# The kernel systems: (train-table system, layer-table impl, asad.masked_attention).
KERNEL_SYSTEMS = (("dropmae_kernels", "kernels", "fused"),
                  ("dropmae_kernels_cudnn", "kernels_cudnn", "cudnn"))
# Released PyTorch code, same H200 and day as shared/measurements/2026-11-27-h200.md (batch 64).
RELEASED = {"twinmae": (880, 15.8), "dropmae": (223, 19.1)}   # pairs/s, peak GiB


FULL = Shapes((64, 392, 16, 32), "bfloat16", 0.1, "B/16", 224, (512, 8, 16), "bfloat16",
              (64, 128, 256), 20, 10, 285.0)
SMOKE = Shapes((2, 32, 2, 16), "bfloat16", 0.1, "micro/16", 64, (32, 1, 2), "float32",
               (2, 4), 1, 1, 240.0)


# =========================================================================== orchestration
# (this process: no JAX)


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.one:
    return run_section(args)
  shapes = shapes_from_args(args)
  start = time.time()
  deadline = start + shapes.budget_s
  print(f"dropmae_jax GPU report ({'smoke: tiny shapes' if args.smoke else 'full'}; "
        f"budget {shapes.budget_s:.0f} s)", flush=True)
  results: dict[str, list[dict]] = {}
  for section in SECTIONS:
    print(f"\n== {TITLES[section]}", flush=True)
    section_start = time.time()
    remaining = deadline - time.time()
    cap = remaining if section == "train" else min(SECTION_CAPS[section], remaining)
    if cap < 5:
      print("FAILED: no time left in --budget_s", flush=True)
      continue
    if section == "train" and args.isolate_rows:
      results[section] = isolated_train_rows(args, shapes, deadline)
    else:
      results[section] = run_child(args, section, cap, deadline=time.time() + cap)
    if section == "train":
      print_train_table(results[section], shapes)
    print(f"[{section}: {time.time() - section_start:.0f} s]", flush=True)
  print(f"\nreport took {time.time() - start:.0f} s", flush=True)
  print(result_line(results), flush=True)
  return 0


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cpu_smoke", "--quick", "--smoke", dest="smoke", action="store_true",
                      help="tiny shapes that run anywhere, a CPU included (kernels interpreted)")
  parser.add_argument("--budget_s", type=float, default=None,
                      help="time limit of the whole report (default 285; smoke 240)")
  parser.add_argument("--batches", default=None, help="train-table batches (default 64,128,256)")
  parser.add_argument("--memory_limit_gib", type=float, default=None,
                      help="a row whose compiled step needs more is OOM without running "
                           "(default: the device's bytes_limit)")
  parser.add_argument("--isolate_rows", action="store_true",
                      help="each train row in a fresh process: measured peak for every row")
  parser.add_argument("--compilation_cache", default="",
                      help="JAX persistent compilation cache folder: a rerun on the same machine "
                           "skips the compilations of the first run (most of the report's time)")
  parser.add_argument("--verbose", action="store_true", help="pass the sections' stderr through")
  parser.add_argument("--one", choices=SECTIONS, default=None, help=argparse.SUPPRESS)
  parser.add_argument("--rows", default="", help=argparse.SUPPRESS)       # system:batch:remat,...
  parser.add_argument("--no_remat_fallback", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def shapes_from_args(args) -> Shapes:
  shapes = SMOKE if args.smoke else FULL
  if args.budget_s is not None:
    shapes = dataclasses.replace(shapes, budget_s=args.budget_s)
  if args.batches:
    shapes = dataclasses.replace(shapes, batches=tuple(int(b) for b in args.batches.split(",")))
  return shapes


def child_command(args, section: str, deadline: float, rows: str = "",
                  remat_fallback: bool = True) -> list[str]:
  cmd = [sys.executable, os.path.abspath(__file__), f"--one={section}", f"--deadline={deadline}"]
  if args.smoke:
    cmd.append("--cpu_smoke")
  if args.batches:
    cmd.append(f"--batches={args.batches}")
  if args.memory_limit_gib is not None:
    cmd.append(f"--memory_limit_gib={args.memory_limit_gib}")
  if args.compilation_cache:
    cmd.append(f"--compilation_cache={args.compilation_cache}")
  if rows:
    cmd.append(f"--rows={rows}")
  if not remat_fallback:
    cmd.append("--no_remat_fallback")
  return cmd


def run_child(args, section: str, timeout: float, deadline: float, rows: str = "",
              remat_fallback: bool = True, echo: bool = True) -> list[dict]:
  """Runs one section in a fresh process, echoing its output as it comes; returns its JSON
  records. A timeout, a crash or a non-zero exit prints FAILED with the reason."""
  env = dict(os.environ)
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
  env["PYTHONUNBUFFERED"] = "1"
  records: list[dict] = []
  with tempfile.TemporaryFile("w+") as err:
    proc = subprocess.Popen(child_command(args, section, deadline, rows, remat_fallback),
                            stdout=subprocess.PIPE, stderr=None if args.verbose else err,
                            text=True, env=env, cwd=ROOT, start_new_session=True)

    def read():
      for line in proc.stdout:
        if line.startswith(JSON_PREFIX):
          records.append(json.loads(line[len(JSON_PREFIX):]))
        elif echo:
          print(line, end="", flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
      proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)   # the child's own session: only what we started
      proc.wait()
      reader.join(5)
      print(f"FAILED: section '{section}' passed its {timeout:.0f} s limit and was stopped",
            flush=True)
      return records
    reader.join(5)
    if proc.returncode != 0:
      err.seek(0)
      tail = [l.strip() for l in err.read().splitlines() if l.strip()][-3:]
      reason = " | ".join(tail) or "no message"
      print(f"FAILED: section '{section}' exited with status {proc.returncode}: {reason}",
            flush=True)
  return records


def isolated_train_rows(args, shapes: Shapes, deadline: float) -> list[dict]:
  """The train table with one fresh process per row (exact measured peak for each row)."""
  meta: list[dict] = []

  def run_row(system: str, batch: int, remat: bool) -> dict:
    remaining = deadline - time.time()
    if remaining < 10:
      return row_record(system, batch, remat, status="SKIPPED", note="time budget")
    records = run_child(args, "train", remaining, deadline, rows=f"{system}:{batch}:{int(remat)}",
                        remat_fallback=False, echo=True)
    meta[:] = meta or [r for r in records if r.get("kind") == "train_meta"][:1]
    rows = [r for r in records if r.get("kind") == "row"]
    return rows[0] if rows else row_record(system, batch, remat, status="FAILED",
                                          note="no result (see above)")

  rows = run_table(plan_rows(shapes.batches), run_row, remat_fallback=True)
  return meta + rows


def print_train_table(records: list[dict], shapes: Shapes) -> None:
  rows = [r for r in records if r.get("kind") == "row"]
  meta = next((r for r in records if r.get("kind") == "train_meta"), {})
  print(f"\ntrain step, {shapes.variant} @ {shapes.img_size}px, two frames, {shapes.step_dtype}, "
        f"P {shapes.drop_ratio}; {meta.get('device', '?')}; memory limit "
        f"{gib(meta.get('limit_bytes'))} GiB")
  print(f"{'batch':>6}  {'system':<30}{'ms/step':>9}{'pairs/s':>9}{'vs TwinMAE':>11}"
        f"{'compiled GiB':>13}{'measured GiB':>13}  note")
  order = {s: i for i, s in enumerate(SYSTEMS)}
  twin = {r["batch"]: r["seconds"] for r in rows
          if r["system"] == "twinmae" and r["status"] == "ok" and not r["remat"]}
  labels = {"twinmae": "TwinMAE (P = 0)", "dropmae_reference": "DropMAE, reference",
            "dropmae_kernels": f"DropMAE, {meta.get('kernel', 'kernels')}",
            "dropmae_kernels_cudnn": f"DropMAE, {meta.get('kernel', 'kernels')} + cuDNN"}
  for r in sorted(rows, key=lambda r: (r["batch"], order.get(r["system"], 9), r["remat"])):
    label = labels.get(r["system"], r["system"]) + (" + remat" if r["remat"] else "")
    if r["status"] == "ok":
      sec = r["seconds"]
      ratio = f"{sec / twin[r['batch']]:.2f}x" if r["batch"] in twin else "—"
      measured = (gib(r["measured_bytes"]) if r["measured_bytes"] is not None else
                  f"≤{gib(r['measured_upper_bytes'])}" if r["measured_upper_bytes"] else "—")
      print(f"{r['batch']:>6}  {label:<30}{1e3 * sec:>9.1f}{r['batch'] / sec:>9.1f}{ratio:>11}"
            f"{gib(r['compiled_bytes']):>13}{measured:>13}  {r['note']}")
    else:
      print(f"{r['batch']:>6}  {label:<30}{'':>9}{'':>9}{'':>11}{gib(r['compiled_bytes']):>13}"
            f"{'':>13}  {r['status']}{': ' + r['note'] if r['note'] else ''}")
  missing = [(s, b) for s, b in plan_rows(shapes.batches)
             if not any(r["system"] == s and r["batch"] == b for r in rows)]
  for s, b in missing:
    print(f"{b:>6}  {labels.get(s, s):<30}  not run (section stopped before this row)")
  print(f"released PyTorch code, H200, batch 64, fp16: TwinMAE {RELEASED['twinmae'][0]} pairs/s, "
        f"{RELEASED['twinmae'][1]} GiB; DropMAE {RELEASED['dropmae'][0]} pairs/s, "
        f"{RELEASED['dropmae'][1]} GiB peak")


def best_row(records: list[dict], system: str) -> dict | None:
  """The fastest row of `system` that ran (any batch, remat or not)."""
  rows = [r for r in records if r.get("kind") == "row" and r["system"] == system
          and r["status"] == "ok"]
  return max(rows, key=lambda r: r["batch"] / r["seconds"], default=None)


def result_line(results: dict[str, list[dict]]) -> str:
  train = results.get("train", [])
  twin = best_row(train, "twinmae")
  pps = lambda r: r["batch"] / r["seconds"] if r else float("nan")
  candidates = [(best_row(train, system), impl, masked) for system, impl, masked in KERNEL_SYSTEMS]
  drop, impl, masked = max(candidates, key=lambda c: pps(c[0]) if c[0] else -1.0)
  layer = next((r for r in results.get("kernels", []) if r.get("kind") == "layer"
                and r.get("impl") == impl), None)
  nan = float("nan")
  peak = nan
  if drop:
    peak_bytes = drop["measured_bytes"] or drop["compiled_bytes"]
    peak = peak_bytes / (1 << 30) if peak_bytes else nan
  fwdbwd = 1e3 * layer["fwdbwd"] if layer and layer.get("fwdbwd") is not None else nan
  return (f"RESULT dropmae_pairs_per_sec={pps(drop):.1f} twinmae_pairs_per_sec={pps(twin):.1f} "
          f"asad_layer_fwdbwd_ms={fwdbwd:.3f} peak_gib={peak:.4g} "
          f"dropmae_batch={drop['batch'] if drop else 0} "
          f"dropmae_masked_attention={masked if drop else 'none'}")


# =========================================================================== a section
# (a child process: `--one=SECTION`; the sections, which import JAX, are in gpu_report_sections)


def run_section(args) -> int:
  sys.path[:0] = [HERE, ROOT]
  if args.compilation_cache:
    import jax
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
  if args.smoke:
    import jax
    # Smoke numbers mean nothing; a CPU spends most of the smoke run compiling.
    try:
      jax.config.update("jax_disable_most_optimizations", True)
    except (AttributeError, KeyError, ValueError):   # an option a later JAX may drop
      pass
  shapes = shapes_from_args(args)
  deadline = args.deadline or time.time() + shapes.budget_s
  import gpu_report_sections as sections
  {"env": sections.section_env, "check": sections.section_check,
   "kernels": sections.section_kernels, "train": sections.section_train}[args.one](
       args, shapes, deadline)
  return 0


if __name__ == "__main__":
  sys.exit(main())
