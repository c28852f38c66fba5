"""Our OSTrack-CE variables <-> the released DropTrack/OSTrack `checkpoint['net']` state dict.

Pure numpy. Rules (the released state dict: OSTrack `lib/models/ostrack/ostrack.py`,
`vit_ce.py` and `lib/models/layers/head.py`; docs/interop.md):
  params/backbone/blocks_{i}/...           <-> backbone.blocks.{i}....
  params/box_head/conv{k}_{b}/0/kernel     <-> box_head.conv{k}_{b}.0.weight   (Conv2d)
  params/box_head/conv{k}_{b}/1/scale|bias <-> box_head.conv{k}_{b}.1.weight|bias (BatchNorm2d)
  batch_stats/box_head/conv{k}_{b}/1/mean|var <-> ....1.running_mean|running_var
  Dense kernel (in, out) <-> Linear (out, in); Conv kernel (kh, kw, i, o) <-> Conv2d (o, i, kh, kw).
  `num_batches_tracked` (int64; only used by momentum=None BN, which OSTrack does not use) is not
  a variable here: the import keeps the file's counters beside the variables
  (`num_batches_tracked_of`, `io.save_tracker`) and the export writes them back, 0 where unknown.

Exports list the keys in the released order, that of `OSTrack.state_dict()` (`released_order`),
so a diff against a released file lines up.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping

import numpy as np

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


# --- the released key order -------------------------------------------------------------------
#
# `nn.Module.state_dict()` lists a module's own parameters (in registration order), then its
# buffers, then its submodules' keys (in registration order), recursively. Released code
# (jimmy-dq/DropTrack lib/models/ostrack/): OSTrack registers `backbone` then `box_head`.
# VisionTransformerCE.__init__ first runs VisionTransformer.__init__ (vit.py), which registers
# patch_embed, cls_token, pos_embed, pos_drop, blocks, norm, temporal_pos_embed_x,
# temporal_pos_embed_z; its own re-assignment of the same names keeps their places;
# `finetune_track` (base_backbone.py) then registers pos_embed_z and pos_embed_x (set to None as
# plain attributes in BaseBackbone.__init__, so new). CEBlock: norm1, attn (qkv, proj), norm2,
# mlp (fc1, fc2). CenterPredictor (lib/models/layers/head.py): conv1..conv5 of the ctr, then the
# offset, then the size branch; conv{1..4} = Sequential(Conv2d, BatchNorm2d, ReLU).
BACKBONE_PARAMETERS = ("cls_token", "pos_embed", "temporal_pos_embed_x", "temporal_pos_embed_z",
                       "pos_embed_z", "pos_embed_x")
BACKBONE_MODULES = ("patch_embed", "blocks", "norm")
BLOCK_MODULES = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
HEAD_BRANCHES = ("ctr", "offset", "size")
LEAF_ORDER = ("weight", "bias", "running_mean", "running_var", NUM_BATCHES)
_BLOCK_KEY = re.compile(r"^backbone\.blocks\.(\d+)\.(.+)\.([a-z_]+)$")
_HEAD_KEY = re.compile(r"^box_head\.conv(\d+)_([a-z]+)(?:\.(\d+))?\.([a-z_]+)$")


def _rank(names: tuple[str, ...], name: str) -> int:
  return names.index(name) if name in names else len(names)


def released_order(key: str) -> tuple:
  """Sort key putting DropTrack state-dict keys in the order of the released
  `OSTrack.state_dict()` (see above); keys it does not know come last, alphabetically."""
  unknown = (9, key)
  if key.startswith("backbone."):
    rest = key[len("backbone."):]
    if rest in BACKBONE_PARAMETERS:
      return (0, 0, _rank(BACKBONE_PARAMETERS, rest))
    m = _BLOCK_KEY.match(key)
    if m:
      block, module, leaf = int(m.group(1)), m.group(2), m.group(3)
      return (0, 2, block, _rank(BLOCK_MODULES, module), _rank(LEAF_ORDER, leaf), key)
    module, _, leaf = rest.rpartition(".")
    if module.split(".")[0] in BACKBONE_MODULES:
      return (0, 1 if module.startswith("patch_embed") else 3, module, _rank(LEAF_ORDER, leaf),
              key)
    return (0, 4) + unknown
  m = _HEAD_KEY.match(key)
  if m:
    conv, branch, sub, leaf = int(m.group(1)), m.group(2), m.group(3), m.group(4)
    return (1, _rank(HEAD_BRANCHES, branch), conv, int(sub or 0), _rank(LEAF_ORDER, leaf), key)
  return (2,) + unknown


def variables_to_state_dict(variables: dict,
                            num_batches_tracked: Mapping[str, int] | None = None
                            ) -> dict[str, np.ndarray]:
  """{'params', 'batch_stats'} -> released `checkpoint['net']`, keys in the released order
  (float32; num_batches_tracked int64: from `num_batches_tracked` by torch key, 0 if absent)."""
  counts = dict(num_batches_tracked or {})
  state = {}
  for key, (collection, path) in _key_map(variables).items():
    value = layout.flatten(variables[collection])[path]
    state[key] = layout.to_torch_array(path, value) if collection == "params" else (
        np.asarray(value, np.float32))
  for prefix in bn_prefixes(variables):
    key = f"{prefix}.{NUM_BATCHES}"
    state[key] = np.array(int(counts.get(key, 0)), np.int64)
  return {k: state[k] for k in sorted(state, key=released_order)}


def num_batches_tracked_of(state: dict[str, np.ndarray], reference: dict) -> dict[str, int]:
  """The file's BatchNorm counters for the BatchNorm modules of `reference` (torch key -> int)."""
  out = {}
  for prefix in bn_prefixes(reference):
    key = f"{prefix}.{NUM_BATCHES}"
    if key in state and np.size(state[key]) == 1:
      out[key] = int(np.asarray(state[key]).reshape(()))
  return out


def check_is_tracker(state: dict[str, np.ndarray]) -> None:
  """Raise LayoutError naming the keys unless `state` is an OSTrack/DropTrack state dict."""
  missing = [k for k in SIGNATURE if k not in state]
  if not missing:
    return
  hint = ""
  if "mask_patch_embed.proj.weight" in state or any(k.startswith("stcn_decoder.") for k in state):
    hint = (" It looks like a DropSeg segmenter state dict ('mask_patch_embed.*', "
            "'stcn_decoder.*' keys): import it with `python -m dropmae_jax.convert "
            "import-segmenter`.")
  elif "patch_embed.proj.weight" in state or any(k.startswith("decoder") for k in state):
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


def infer_model(state: dict[str, np.ndarray]) -> tuple[dict, list[str]]:
  """The `config.model` fields a tracker state dict's shapes fix, and what could not be read.

  variant (the ViT size whose width and MLP width match, and the patch), depth (when not the
  size's own), template_size / search_size (pos_embed_z / pos_embed_x), pretrain_img_size
  (pos_embed), head_channels (box_head.conv1_ctr). The number of heads is not in the tensors
  (qkv is (3·D, D) for any head count): the matching ViT size's. Raises LayoutError.
  """
  from dropmae_jax.models import vit
  check_is_tracker(state)
  proj = np.shape(state["backbone.patch_embed.proj.weight"])
  if len(proj) != 4 or proj[1] != 3 or proj[2] != proj[3]:
    raise LayoutError(f"backbone.patch_embed.proj.weight {tuple(proj)}: not a square patch "
                      "embedding of RGB images")
  width, patch = int(proj[0]), int(proj[3])
  blocks = sorted({int(m.group(1)) for m in map(_BLOCK_KEY.match, state) if m})
  if not blocks or blocks != list(range(len(blocks))):
    raise LayoutError(f"backbone.blocks.N: blocks {blocks[:16]} are not 0..N-1")
  depth = len(blocks)
  fc1 = state.get("backbone.blocks.0.mlp.fc1.weight")
  mlp = int(np.shape(fc1)[0]) if fc1 is not None else None
  sizes = [(name, size) for name, size in vit.VIT_SIZES.items()
           if size.width == width and (mlp is None or size.mlp_dim == mlp)]
  if not sizes:
    known = ", ".join(f"{n} (width {s.width}, mlp {s.mlp_dim})" for n, s in vit.VIT_SIZES.items())
    raise LayoutError(f"no known ViT size has width {width} and MLP width {mlp} "
                      f"(backbone.patch_embed / blocks.0.mlp.fc1); known: {known}")
  name, size = next(((n, s) for n, s in sizes if s.depth == depth), sizes[0])
  model = {"variant": f"{name}/{patch}", "depth": -1 if depth == size.depth else depth}
  model.update(infer_sizes(state, patch))
  notes = [f"heads {size.heads}: the {name} size's (the tensors do not fix it)"]
  return model, notes


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
    problems.sort(key=lambda p: released_order(p.split(":")[0]))
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    raise LayoutError(f"shape mismatch in {len(problems)} tensors (is the config's model.variant "
                      f"/ depth / sizes the checkpoint's?): {'; '.join(problems[:3])}{more}")
  report.insert(0, f"loaded     {loaded} tensors ({len(ignored & set(state))} num_batches_tracked "
                   "kept beside them)")
  return {c: layout.unflatten(f) for c, f in flat.items()}, report
