"""Starting a tracker from DropMAE weights: the released rule, applied to our variables.

As DropTrack's `build_ostrack` (jimmy-dq/DropTrack `lib/models/ostrack/ostrack.py`: decoder keys
deleted, the rest loaded with strict=False) followed by `finetune_track`
(`lib/models/ostrack/base_backbone.py`: the template and search position tables derived from the
loaded `pos_embed` by bicubic resize). The source may be our pre-training params, a released-layout
state dict, a DropMAE .pth / .safetensors, or an imported DIR / training WORKDIR.
"""
from __future__ import annotations

import math

import jax
import numpy as np

from dropmae_jax.convert import io
from dropmae_jax.convert import posemb



def init_from_pretrain(variables: dict, source, *, pretrain_grid: int | None = None
                       ) -> tuple[dict, list[str]]:
  """The released rule for starting a tracker from DropMAE weights (see the module docstring).

  Drops every key containing 'decoder', loads the rest into `backbone.*` (strict=False: unknown
  keys such as mask_token are reported and ignored; a shape mismatch raises, as torch does), then
  derives `pos_embed_z` / `pos_embed_x` by PyTorch-exact bicubic resize of the loaded
  `pos_embed` (cls slot dropped). The head keeps its initialisation.

  Args:
    variables: the tracker's {'params', 'batch_stats'} (fresh init: the values for what is missing).
    source: (a) our pre-training params tree (`io.load_params` output; its fixed sin-cos table is
      regenerated on `pretrain_grid`), (b) a released-layout state dict, or a path to (c) a
      DropMAE .pth / .safetensors or (d) an imported DIR / training WORKDIR.
    pretrain_grid: patches per side of the pre-training image (needed for a bare params tree).
  Returns:
    (new variables (numpy), report lines: loaded / missing / unexpected / derived).
  """
  from dropmae_jax.convert import layout
  state, what = io.pretrain_state_dict(source, pretrain_grid)
  layout.check_is_mae_vit(state)
  params = jax.tree.map(np.asarray, dict(variables["params"]))
  flat = layout.flatten(params["backbone"])
  by_key = {layout.torch_key(path): path for path in flat}
  dropped = sorted(k for k in state if "decoder" in k)
  report = [f"source: {what}", f"dropped  {len(dropped)} decoder keys"]
  problems, loaded = [], set()
  for key in sorted(set(state) - set(dropped)):
    path = by_key.get(key)
    if path is None:
      report.append(f"unexpected {key} {tuple(np.shape(state[key]))}: ignored")
      continue
    value = layout.from_torch_array(path, state[key])
    if value.shape != flat[path].shape:
      problems.append(f"backbone.{key}: file {tuple(np.shape(state[key]))}, tracker expects "
                      f"{tuple(flat[path].shape)}")
      continue
    flat[path] = value
    loaded.add(key)
  if problems:
    raise layout.LayoutError("shape mismatch loading DropMAE weights into the tracker (is "
                             "config.model.variant / pretrain_img_size the pre-training one?):\n  "
                             + "\n  ".join(problems))
  report.append(f"loaded   {len(loaded)} backbone tensors")
  if "pos_embed" in loaded:
    table = flat[("pos_embed",)][:, 1:]
    for name in ("pos_embed_z", "pos_embed_x"):
      grid = int(round(math.sqrt(flat[(name,)].shape[1])))
      flat[(name,)] = posemb.resize_bicubic(table, grid).astype(np.float32)
      report.append(f"derived  backbone.{name} {flat[(name,)].shape}: bicubic resize of pos_embed "
                    f"to {grid}x{grid}")
  for key in sorted(set(by_key) - loaded - {"pos_embed_z", "pos_embed_x"}):
    report.append(f"missing  backbone.{key} {tuple(flat[by_key[key]].shape)}: kept the fresh "
                  "initialisation")
  report.append("missing  box_head.*: kept the fresh initialisation")
  params["backbone"] = layout.unflatten(flat)
  out = dict(variables)
  out["params"] = params
  return out, report
