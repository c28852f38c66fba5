"""The sections of `gpu_report.py`, each run in a child process (`gpu_report.py --one=SECTION`).

These import JAX; the parent process (gpu_report.py's orchestration) never does. Each section
prints its human-readable lines and emits JSON records (`emit`) that the parent collects for the
train table and the RESULT line.
"""
from __future__ import annotations

import json
import os
import time

from gpu_report_rows import JSON_PREFIX, Shapes, gib, plan_rows, row_record, run_table


def emit(record: dict) -> None:
  print(JSON_PREFIX + json.dumps(record), flush=True)


def failed(what: str, error: BaseException) -> None:
  first = str(error).strip().splitlines()
  print(f"FAILED: {what}: {type(error).__name__}: {first[0][:300] if first else ''}", flush=True)


def _cudnn_versions() -> str:
  """cuDNN and CUDA runtime versions as the CUDA plugin reports them (no public JAX API; the
  module jax itself reads, present in jax 0.10 and 0.11)."""
  import importlib
  module = None
  for name in ("jax_cuda13_plugin._versions", "jax_cuda12_plugin._versions",
               "jaxlib.cuda._versions"):
    try:
      module = importlib.import_module(name)
      break
    except ImportError:
      continue
  if module is None:
    return "cuDNN: none (no CUDA plugin)"
  cudnn = lambda v: f"{v // 10000}.{v % 10000 // 100}.{v % 100}"   # 91002 -> 9.10.2
  cuda = lambda v: f"{v // 1000}.{v % 1000 // 10}"                  # 13000 -> 13.0
  parts = []
  for label, getter, fmt in (("cuDNN", "cudnn_get_version", cudnn),
                             ("built against cuDNN", "cudnn_build_version", cudnn),
                             ("CUDA runtime", "cuda_runtime_get_version", cuda)):
    try:
      parts.append(f"{label} {fmt(int(getattr(module, getter)()))}")
    except Exception as e:  # noqa: BLE001 - a version we cannot read is reported, not fatal
      parts.append(f"{label} ? ({type(e).__name__})")
  return ", ".join(parts)


def section_env(args, shapes: Shapes, deadline: float) -> None:
  import platform

  import jax
  import jax.extend
  import jaxlib
  import _common
  from dropmae_jax.ops import dispatch
  from dropmae_jax.models import vit

  device = jax.devices()[0]
  info = dispatch.describe(device)
  cc = ".".join(map(str, info.compute_capability)) if info.compute_capability else "—"
  stats = _common.memory_stats()
  limit = stats.get("bytes_limit")
  print(f"device    {device.device_kind} (platform {device.platform}, {jax.device_count()} "
        f"device(s)), compute capability {cc}")
  print(f"memory    limit {gib(limit)} GiB for JAX (XLA_PYTHON_CLIENT_MEM_FRACTION="
        f"{os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION', 'default')})")
  try:
    backend_version = jax.extend.backend.get_backend().platform_version
  except Exception as e:  # noqa: BLE001
    backend_version = f"? ({type(e).__name__})"
  versions = (f"python {platform.python_version()}, jax {jax.__version__}, jaxlib "
              f"{jaxlib.__version__}, backend '{backend_version.strip()}'")
  print(f"versions  {versions}")
  cudnn = _cudnn_versions()
  print(f"          {cudnn}")
  picked = dispatch.asad_impl_for(info)
  print(f"auto      asad.impl=auto -> {picked}  (ops/dispatch.py MEASURED_ASAD_KERNELS:")
  for platform_name, min_cc, kernel, evidence in dispatch.MEASURED_ASAD_KERNELS:
    rule = f"{platform_name}" + (f" cc >= {min_cc[0]}.{min_cc[1]}" if min_cc else "")
    print(f"            {rule} -> {kernel}: {evidence}")
  print("            anything else -> reference)")
  masked = dispatch.masked_attention_for(info)
  print(f"          asad.masked_attention=auto -> {masked}  (MEASURED_MASKED_ATTENTION: "
        f"{len(dispatch.MEASURED_MASKED_ATTENTION)} row(s); else fused)")
  width, depth, heads = shapes.decoder
  encoder_size, _ = vit.decode_variant(shapes.variant)
  choices = []
  for name, head_dim in (("encoder", encoder_size.width // encoder_size.heads),
                         ("decoder", width // heads)):
    for dtype in ("bfloat16", "float32"):
      impl = dispatch.attention_implementation(dtype, head_dim, info) or "xla"
      choices.append(f"{name} d{head_dim} {dtype} -> {impl}")
  print(f"plain attention  {'; '.join(choices)}")
  emit({"kind": "env", "device": device.device_kind, "platform": device.platform,
        "compute_capability": cc, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "cudnn": cudnn, "auto_asad": picked, "limit_bytes": limit})


def _layer_setup(shapes: Shapes):
  import jax.numpy as jnp
  import _common
  kernel = _common.default_kernel()
  q, k, v = _common.layer_inputs(shapes.layer, jnp.dtype(shapes.layer_dtype))
  return _common, kernel, q, k, v


def section_check(args, shapes: Shapes, deadline: float) -> None:
  _common, kernel, q, k, v = _layer_setup(shapes)
  b, l, h, d = shapes.layer
  plan = _common.kernel_plan(kernel, shapes.layer, shapes.drop_ratio)
  print(f"{kernel} vs reference: B {b}, L {l}, {h} heads, dim {d}, {shapes.layer_dtype}, "
        f"P {shapes.drop_ratio}, seed 1; n_pad {plan.padded}, K {plan.num_drop} per (b, h)"
        + (" (interpret mode)" if plan.interpret else ""))
  record = {"kind": "check"}
  try:
    mask = _common.kernel_mask(kernel, q, k, shapes.drop_ratio)
  except Exception as e:  # noqa: BLE001
    failed("the kernels' drop selection (kernels 1-2)", e)
    emit(record)
    return
  try:
    flipped, dropped = _common.mask_disagreement(kernel, q, k, shapes.drop_ratio, mask)
    print(f"drop masks: {flipped} of {dropped} dropped cells differ "
          f"({flipped / max(dropped, 1):.2e})"
          " — logits rounded by different matmuls can flip cells at the threshold")
    record.update(flipped=flipped, dropped=dropped)
  except Exception as e:  # noqa: BLE001
    failed("drop-mask comparison", e)
  if kernel == "pallas_gpu":
    try:
      passes, needed = _common.select_statistics(kernel, q, k, shapes.drop_ratio)
      print(f"GPU select: heads by slab passes {passes}; {needed} of {b * h} heads needed the "
            "full search (benchmarks/asad_select_fallbacks.py expects ~1e-6 a head)")
      record.update(select_passes=passes, select_full_search=needed)
    except Exception as e:  # noqa: BLE001
      failed("GPU select statistics", e)
  try:
    errors = _common.kernel_errors(kernel, q, k, v, shapes.drop_ratio, mask)
    print("max |error| / max |exact| against float32 attention under the kernel's own mask:")
    print(f"  {'':<5}{'kernel':>10}{'kernel + cuDNN':>16}{'jnp ' + shapes.layer_dtype:>16}")
    for name, (kernel_err, library_err, ref_err) in errors.items():
      print(f"  {name:<5}{kernel_err:>10.2e}{library_err:>16.2e}{ref_err:>16.2e}")
    record["errors"] = errors
  except Exception as e:  # noqa: BLE001
    failed("output / gradient errors", e)
  emit(record)


def section_kernels(args, shapes: Shapes, deadline: float) -> None:
  _common, kernel, q, k, v = _layer_setup(shapes)
  b, l, h, d = shapes.layer
  iters = shapes.layer_iters
  import jax
  interpret = jax.default_backend() == "cpu"
  print(f"B {b}, L {l}, {h} heads, dim {d}, {shapes.layer_dtype}, P {shapes.drop_ratio}; "
        f"{jax.devices()[0].device_kind}" + (" — interpret mode: times mean nothing" if interpret
                                             else ""))
  print(f"{'attention':<44}{'fwd ms':>9}{'fwd+bwd ms':>12}")
  labels = (("xla", "plain, XLA (implementation='xla')"),
            ("cudnn", "plain, cuDNN (implementation='cudnn')"),
            ("reference", "ASAD jnp reference"),
            ("kernels", f"ASAD kernels ({kernel})"),
            ("kernels_cudnn", f"ASAD kernels ({kernel}) + cuDNN attention"))
  impls = {"kernels": kernel, "kernels_cudnn": kernel + "+cudnn"}
  times = {}
  for name, label in labels:
    if time.time() > deadline - 5:
      print(f"{label:<44}SKIPPED: time budget")
      continue
    try:
      fwd, fwdbwd = _common.layer_timings(impls.get(name, name), q, k, v, shapes.drop_ratio,
                                          iters)
      times[name] = (fwd, fwdbwd)
      print(f"{label:<44}{1e3 * fwd:>9.3f}{1e3 * fwdbwd:>12.3f}", flush=True)
      emit({"kind": "layer", "impl": name, "fwd": fwd, "fwdbwd": fwdbwd})
    except Exception as e:  # noqa: BLE001
      failed(label, e)
  for name, label in (("kernels", "ASAD kernels / cuDNN plain"),
                      ("kernels_cudnn", "ASAD kernels + cuDNN / cuDNN plain")):
    if name in times and "cudnn" in times:
      (kf, kb), (cf, cb) = times[name], times["cudnn"]
      print(f"{label:<44}{kf / cf:>8.1f}x{kb / cb:>11.1f}x")
  print(f"\n{'kernel (each jitted alone)':<44}{'ms per layer':>12}")
  if time.time() > deadline - 5:
    print("SKIPPED: time budget")
    return
  try:
    pieces = _common.kernel_piece_timings(kernel, q, k, v, shapes.drop_ratio, iters)
    labels = {"to_padded": "to_padded q, k, v", "keys": "1 asad_keys", "select": "2 asad_select",
              "forward": "3 asad_forward", "backward": "4 backward (dq + dk/dv)"}
    layer = {name: sec for name, sec in pieces.items() if name in labels}
    for name, sec in layer.items():
      print(f"{labels[name]:<44}{1e3 * sec:>12.3f}")
    print(f"{'sum':<44}{1e3 * sum(layer.values()):>12.3f}")
    full = pieces["select_full"]
    print(f"{'(2 full-search select, for comparison)':<44}{1e3 * full:>12.3f}"
          f"   select speed-up {full / pieces['select']:.2f}x")
    library = {"dense_mask": "  dense drop mask (XLA)",
               "masked_dpa": "  dot_product_attention + mask, fwd+bwd"}
    print("with asad.masked_attention='cudnn', 3 and 4 become:")
    for name, label in library.items():
      print(f"{label:<44}{1e3 * pieces[name]:>12.3f}")
    cudnn_sum = sum(pieces[n] for n in ("to_padded", "keys", "select", *library))
    print(f"{'  sum':<44}{1e3 * cudnn_sum:>12.3f}")
    emit({"kind": "pieces", **pieces})
  except Exception as e:  # noqa: BLE001
    failed("per-kernel times", e)
  if kernel == "pallas_gpu":
    block_sweep(_common, kernel, q, k, v, shapes, iters, deadline, interpret)


def block_sweep(_common, kernel, q, k, v, shapes: Shapes, iters: int, deadline: float,
                interpret: bool) -> None:
  """The kernels at each of asad_plan.GPU_BLOCK_CANDIDATES (the first is the default): which tile
  sizes this GPU wants. Interpret mode runs the second only (the code path, not the numbers)."""
  from dropmae_jax.ops.asad import plan as asad_plan
  print(f"\n{'block sizes (rows/select/key rows/chunk/keys)':<44}{'fwd ms':>9}{'fwd+bwd ms':>12}")
  candidates = asad_plan.GPU_BLOCK_CANDIDATES[1:2] if interpret else asad_plan.GPU_BLOCK_CANDIDATES
  for blocks in candidates:
    label = "/".join(str(x) for x in (blocks.rows, blocks.select_rows, blocks.key_rows,
                                      blocks.key_chunk, blocks.keys_rows))
    if blocks == asad_plan.DEFAULT_BLOCKS["gpu"]:
      label += " (default)"
    if time.time() > deadline - 5:
      print(f"{label:<44}SKIPPED: time budget")
      continue
    try:
      fwd, fwdbwd = _common.block_timings(kernel, q, k, v, shapes.drop_ratio, iters, blocks)
      print(f"{label:<44}{1e3 * fwd:>9.3f}{1e3 * fwdbwd:>12.3f}", flush=True)
      emit({"kind": "blocks", "blocks": label, "fwd": fwd, "fwdbwd": fwdbwd})
    except Exception as e:  # noqa: BLE001
      failed(f"blocks {label}", e)


def section_train(args, shapes: Shapes, deadline: float) -> None:
  import jax
  import _common
  from dropmae_jax.ops.asad import attention as asad

  kernel = _common.default_kernel()
  impls = {"twinmae": (0.0, "reference", "fused"),
           "dropmae_reference": (shapes.drop_ratio, "reference", "fused"),
           "dropmae_kernels": (shapes.drop_ratio, kernel, "fused"),
           "dropmae_kernels_cudnn": (shapes.drop_ratio, kernel, "cudnn")}
  limit = (args.memory_limit_gib * (1 << 30) if args.memory_limit_gib is not None
           else _common.memory_stats().get("bytes_limit"))
  emit({"kind": "train_meta", "device": jax.devices()[0].device_kind, "kernel": kernel,
        "limit_bytes": limit})
  config = lambda system, batch, remat: _common.step_config(
      variant=shapes.variant, img_size=shapes.img_size, dtype=shapes.step_dtype,
      decoder=shapes.decoder, drop_ratio=impls[system][0], impl=impls[system][1], batch=batch,
      remat=remat, masked_attention=impls[system][2])
  state = _common.initial_state(config("twinmae", shapes.batches[0], False))
  longest = [0.0]

  def run_row(system: str, batch: int, remat: bool) -> dict:
    started = time.time()
    if started + longest[0] > deadline - 2:
      record = row_record(system, batch, remat, status="SKIPPED",
                          note=f"time budget (rows take up to {longest[0]:.0f} s)")
    else:
      record = measure_row(_common, asad, config(system, batch, remat), state, system, batch,
                           remat, limit, shapes.step_iters)
      longest[0] = max(longest[0], time.time() - started)
    note = record["note"]
    done = (f"{1e3 * record['seconds']:.1f} ms/step" if record["status"] == "ok"
            else record["status"])
    print(f"  .. {system} batch {batch}{' remat' if remat else ''}: {done}"
          f"{' (' + note + ')' if note else ''} [{time.time() - started:.0f} s]", flush=True)
    emit(record)
    return record

  if args.rows:
    rows = [(s, int(b)) for s, b, _ in (r.split(":") for r in args.rows.split(","))]
    remats = [bool(int(r.split(":")[2])) for r in args.rows.split(",")]
    if len(rows) == 1:   # --isolate_rows: one row, remat chosen by the parent
      run_row(rows[0][0], rows[0][1], remats[0])
      return
  else:
    rows = plan_rows(shapes.batches)
  run_table(rows, run_row, remat_fallback=not args.no_remat_fallback)


def measure_row(_common, asad, config, state, system, batch, remat, limit, iters) -> dict:
  """One train-table row: compile, check the compiled memory against the limit, run."""
  import gc
  peak_before = _common.memory_stats().get("peak_bytes_in_use")
  compiled_bytes = None
  try:
    compiled, example = _common.compile_step(config, batch)
    compiled_bytes = _common.compiled_bytes(compiled)
    if limit is not None and compiled_bytes is not None and compiled_bytes > limit:
      return row_record(system, batch, remat, status="OOM", compiled_bytes=compiled_bytes,
                        note=f"compiled step needs {gib(compiled_bytes)} GiB > "
                             f"{gib(limit)} GiB limit; not run")
    seconds = _common.run_step(compiled, state, example, iters)
  except Exception as e:  # noqa: BLE001
    status = "OOM" if _common.is_out_of_memory(e) else "FAILED"
    first = str(e).strip().splitlines()
    return row_record(system, batch, remat, status=status, compiled_bytes=compiled_bytes,
                      note=f"{type(e).__name__}: {first[0][:200] if first else ''}")
  finally:
    gc.collect()
  peak_after = _common.memory_stats().get("peak_bytes_in_use")
  grew = peak_after is not None and (peak_before is None or peak_after > peak_before)
  note = (f"asad.impl={asad.resolve_impl(config.asad.impl)} "
          f"masked_attention={config.asad.masked_attention}" if system != "twinmae" else "")
  return row_record(system, batch, remat, seconds=seconds, compiled_bytes=compiled_bytes,
                    measured_bytes=peak_after if grew else None,
                    measured_upper_bytes=None if grew else peak_after, note=note)


