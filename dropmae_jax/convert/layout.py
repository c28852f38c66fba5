"""Our Flax parameters <-> the released PyTorch state dict (timm names, no prefix).

Pure numpy: no torch needed here. Rules (jimmy-dq/DropMAE `models_mae.py`; docs/interop.md):
  blocks_{i}/...            <-> blocks.{i}....          (decoder_blocks likewise)
  Dense kernel (in, out)    <-> Linear weight (out, in)
  Conv kernel (kh, kw, i, o) <-> Conv2d weight (o, i, kh, kw)
  LayerNorm scale / bias    <-> weight / bias
  pos_embed, decoder_pos_embed: our constants, stored in torch as (1, 1 + n, D) with a zero cls slot.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from dropmae_jax.models import vit

_BLOCK = re.compile(r"^(decoder_blocks|blocks)_(\d+)$")
_TORCH_BLOCK = re.compile(r"^(decoder_blocks|blocks)\.(\d+)$")
POS_TABLES = {"pos_embed": "encoder", "decoder_pos_embed": "decoder"}


class LayoutError(ValueError):
  """A state dict that does not fit the model: the message names the keys and shapes."""


def flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def unflatten(flat: dict[tuple, Any]) -> dict:
  tree: dict = {}
  for path, v in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return tree


def torch_key(path: tuple[str, ...]) -> str:
  """('blocks_3', 'attn', 'qkv', 'kernel') -> 'blocks.3.attn.qkv.weight'."""
  parts = []
  for p in path[:-1]:
    m = _BLOCK.match(p)
    parts.extend([m.group(1), m.group(2)] if m else [p])
  leaf = path[-1]
  if len(path) > 1:
    leaf = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
  return ".".join(parts + [leaf])


def to_torch_array(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  value = np.asarray(value, np.float32)
  if path[-1] == "kernel" and value.ndim == 2:
    return np.ascontiguousarray(value.T)
  if path[-1] == "kernel" and value.ndim == 4:
    return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
  return value


def from_torch_array(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  value = np.asarray(value, np.float32)
  if path[-1] == "kernel" and value.ndim == 2:
    return np.ascontiguousarray(value.T)
  if path[-1] == "kernel" and value.ndim == 4:
    return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
  return value


def pos_table_with_cls_slot(width: int, grid: int) -> np.ndarray:
  """(1, 1 + grid², width): our sin-cos table behind the released all-zero cls slot."""
  table = vit.sincos_2d(width, grid)
  return np.concatenate([np.zeros((1, width), np.float32), table], axis=0)[None]


def params_to_state_dict(params: dict, *, grid: int, encoder_only: bool = False
                         ) -> dict[str, np.ndarray]:
  """Flax params -> released state dict (float32 numpy), pos tables included."""
  state = {}
  for path, value in flatten(params).items():
    key = torch_key(path)
    if encoder_only and ("decoder" in key or key == "mask_token"):
      continue
    state[key] = to_torch_array(path, value)
  width = state["patch_embed.proj.weight"].shape[0]
  state["pos_embed"] = pos_table_with_cls_slot(width, grid)
  if not encoder_only:
    state["decoder_pos_embed"] = pos_table_with_cls_slot(state["decoder_embed.weight"].shape[0],
                                                         grid)
  return dict(sorted(state.items()))


def check_is_mae_vit(state: dict[str, np.ndarray]) -> None:
  """Raise LayoutError unless the dict has the ViT keys every (Drop)MAE checkpoint has."""
  if "patch_embed.proj.weight" not in state or not any(k.startswith("blocks.") for k in state):
    raise LayoutError("not a (Drop)MAE ViT state dict: no 'patch_embed.proj.weight' / 'blocks.*' "
                      f"keys (its keys start {sorted(state)[:8]})")


def state_dict_to_params(state: dict[str, np.ndarray], reference: dict, *, grid: int
                         ) -> tuple[dict, list[str]]:
  """Released (or MAE ImageNet) state dict -> Flax params shaped like `reference`.

  Args:
    state: torch key -> numpy array.
    reference: freshly initialised params of the target model (shapes, and the values used for
      anything the file lacks).
    grid: patches per side of the target model.
  Returns:
    (params, report lines). Raises LayoutError (nothing half-converted) when shapes disagree or the
    file does not look like a (Drop)MAE state dict at all.
  """
  check_is_mae_vit(state)
  flat_ref = flatten(reference)
  by_key = {torch_key(p): p for p in flat_ref}
  report, problems = [], []
  out = {}
  for key, path in by_key.items():
    ref = np.asarray(flat_ref[path])
    if key not in state:
      out[path] = ref
      report.append(f"missing  {key} {tuple(ref.shape)}: kept the fresh initialisation")
      continue
    value = from_torch_array(path, state[key])
    if value.shape != ref.shape:
      problems.append(f"{key}: file {tuple(np.shape(state[key]))} -> {value.shape}, "
                      f"model expects {tuple(ref.shape)}")
      continue
    out[path] = value
  for key in sorted(set(state) - set(by_key)):
    if key in POS_TABLES:
      report.append(_check_pos_table(key, np.asarray(state[key]), grid))
    elif key == "cls_token":
      report.append(f"dropped  cls_token {tuple(np.shape(state[key]))}: DropMAE has no cls token")
    else:
      report.append(f"unexpected {key} {tuple(np.shape(state[key]))}: ignored")
  if problems:
    raise LayoutError("shape mismatch (is the config's model.variant / img_size / decoder the "
                      "file's?):\n  " + "\n  ".join(problems))
  return unflatten(out), report


def _check_pos_table(key: str, table: np.ndarray, grid: int) -> str:
  width = table.shape[-1]
  ours = pos_table_with_cls_slot(width, grid)
  if table.shape == ours.shape and np.allclose(table[0, 1:], ours[0, 1:], atol=1e-5):
    return f"constant {key} {table.shape}: equals our fixed sin-cos table, not stored"
  return (f"constant {key} {table.shape}: differs from our fixed sin-cos table for a {grid}x{grid} "
          f"grid; ours is used (fixed tables are not learned)")
