"""Our OSTrack-CE variables <-> the released DropTrack/OSTrack `checkpoint['net']` state dict.

Pure numpy. Rules (the released state dict: OSTrack `lib/models/ostrack/ostrack.py`,
`vit_ce.py` and `lib/models/layers/head.py`; docs/interop.md):
  params/backbone/blocks_{i}/...           <-> backbone.blocks.{i}....
  params/box_head/conv{k}_{b}/0/kernel     <-> box_head.conv{k}_{b}.0.weight   (Conv2d)
  params/box_head/conv{k}_{b}/1/scale|bias <-> box_head.conv{k}_{b}.1.weight|bias (BatchNorm2d)
  batch_stats/box_head/conv{k}_{b}/1/mean|var <-> ....1.running_mean|running_var
  Dense kernel (in, out) <-> Linear (out, in); Conv kernel (kh, kw, i, o) <-> Conv2d (o, i, kh, kw).
  `num_batches_tracked` (int64) is written as 0 on export (only used by momentum=None BN, which
  OSTrack does not use) and ignored on import.
"""
from __future__ import annotations

import numpy as np

from typing import Callable

from dropmae_jax.convert import layout
from dropmae_jax.convert.layout import LayoutError

NUM_BATCHES = "num_batches_tracked"
_STAT_NAMES = {"mean": "running_mean", "var": "running_var"}
# Keys every OSTrack/DropTrack checkpoint has (and a DropMAE pretrain file lacks).
SIGNATURE = ("backbone.patch_embed.proj.weight", "backbone.pos_embed_x", "backbone.pos_embed_z",
             "box_head.conv5_ctr.weight")


def _key_map(variables: dict) -> dict[str, tuple[str, tuple[str, ...]]]:
  """torch key -> (collection, path) for every array of `variables`."""
  out = {}
  for path in layout.flatten(variables["params"]):
    out[layout.torch_key(path)] = ("params", path)
  for path in layout.flatten(variables.get("batch_stats", {})):
    key = ".".join(path[:-1] + (_STAT_NAMES[path[-1]],))
    out[key] = ("batch_stats", path)
  return out


def bn_prefixes(variables: dict) -> list[str]:
  """'box_head.conv1_ctr.1', ... : the BatchNorm modules (each has a num_batches_tracked)."""
  return sorted({".".join(path[:-1]) for path in layout.flatten(variables.get("batch_stats", {}))})


def variables_to_state_dict(variables: dict) -> dict[str, np.ndarray]:
  """{'params', 'batch_stats'} -> released `checkpoint['net']` (float32; num_batches_tracked int64)."""
  state = {}
  for key, (collection, path) in _key_map(variables).items():
    value = layout.flatten(variables[collection])[path]
    state[key] = layout.to_torch_array(path, value) if collection == "params" else (
        np.asarray(value, np.float32))
  for prefix in bn_prefixes(variables):
    state[f"{prefix}.{NUM_BATCHES}"] = np.array(0, np.int64)
  return dict(sorted(state.items()))


def check_is_tracker(state: dict[str, np.ndarray]) -> None:
  """Raise LayoutError naming the keys unless `state` is an OSTrack/DropTrack state dict."""
  missing = [k for k in SIGNATURE if k not in state]
  if not missing:
    return
  hint = ""
  if "patch_embed.proj.weight" in state or any(k.startswith("decoder") for k in state):
    hint = (" It looks like a DropMAE/MAE pre-training state dict (un-prefixed 'patch_embed.*', "
            "'decoder_*' keys): import it with `python -m dropmae_jax.convert import`, or start a "
            "tracker from it with `pretrain_init.init_from_pretrain`.")
  raise LayoutError(f"not an OSTrack/DropTrack checkpoint: missing {missing}; its keys start "
                    f"{sorted(state)[:8]}.{hint}")


def infer_sizes(state: dict[str, np.ndarray], patch: int) -> dict[str, int]:
  """template_size / search_size / head_channels / pretrain_img_size from the tensors' shapes."""
  check_is_tracker(state)
  sides = {}
  for name, key in (("template_size", "backbone.pos_embed_z"), ("search_size", "backbone.pos_embed_x"),
                    ("pretrain_img_size", "backbone.pos_embed")):
    if key not in state:
      continue
    n = state[key].shape[1] - (1 if name == "pretrain_img_size" else 0)
    grid = int(round(np.sqrt(n)))
    if grid * grid != n:
      raise LayoutError(f"{key} {state[key].shape}: {n} positions is not a square grid")
    sides[name] = grid * patch
  if "box_head.conv1_ctr.0.weight" in state:
    sides["head_channels"] = int(state["box_head.conv1_ctr.0.weight"].shape[0])
  return sides


def state_dict_to_variables(state: dict[str, np.ndarray], reference: dict,
                            fresh: Callable[[], dict] | None = None) -> tuple[dict, list[str]]:
  """Released tracker state dict -> {'params', 'batch_stats'} shaped like `reference`.

  Args:
    state: torch key -> numpy array.
    reference: the model's variables, or just their shapes (`jax.eval_shape` of init).
    fresh: returns initialised variables for keys the file lacks; called only if one is missing
      (initialising compiles the whole model, which is slow on CPU). Default: `reference` itself.
  Returns (variables, report lines: loaded / missing (kept fresh) / unexpected (ignored)). Raises
  LayoutError, converting nothing, on a non-tracker file or any shape mismatch.
  """
  check_is_tracker(state)
  flat = {c: layout.flatten(reference.get(c, {})) for c in ("params", "batch_stats")}
  key_map = _key_map(reference)
  report, problems, loaded = [], [], 0
  fresh_flat: dict = {}
  for key, (collection, path) in key_map.items():
    ref = flat[collection][path]
    if key not in state:
      if not fresh_flat:
        init = fresh() if fresh is not None else reference
        fresh_flat.update({c: layout.flatten(init.get(c, {})) for c in ("params", "batch_stats")})
      flat[collection][path] = np.asarray(fresh_flat[collection][path])
      report.append(f"missing    {key} {tuple(ref.shape)}: kept the fresh initialisation")
      continue
    value = (layout.from_torch_array(path, state[key]) if collection == "params"
             else np.asarray(state[key], np.float32))
    if value.shape != ref.shape:
      expected = (layout.to_torch_array(path, np.zeros(ref.shape)).shape
                  if collection == "params" else ref.shape)
      problems.append(f"{key}: file {tuple(np.shape(state[key]))}, model expects "
                      f"{tuple(expected)}")
      continue
    flat[collection][path] = value
    loaded += 1
  ignored = {f"{p}.{NUM_BATCHES}" for p in bn_prefixes(reference)}
  for key in sorted(set(state) - set(key_map)):
    if key not in ignored:
      report.append(f"unexpected {key} {tuple(np.shape(state[key]))}: ignored")
  if problems:
    raise LayoutError("shape mismatch (is the config's model.variant / depth / sizes the "
                      "checkpoint's?):\n  " + "\n  ".join(problems))
  report.insert(0, f"loaded     {loaded} tensors ({len(ignored & set(state))} num_batches_tracked "
                   "ignored)")
  return {c: layout.unflatten(f) for c, f in flat.items()}, report
