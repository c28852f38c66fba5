"""Starting a segmenter from DropMAE weights: the released rule, applied to our variables.

As jimmy-dq/DropSeg `model/model.py` (`ViTSTCNModel.__init__`): read `checkpoint['model']`,
delete every key containing 'decoder', delete `head.*` when its shape differs, load the rest with
strict=False (patch_embed, pos_embed, temporal_pos_embed_x / _z, blocks, norm; mask_token is
unexpected and ignored); cls_token, head, fc_norm, mask_patch_embed, fpn1, fpn2 and stcn_decoder
keep their fresh initialisation. Then `interpolate_pos_embed` derives the frozen
`pos_embed_two_frame` = [cls ; P ; P] and `pos_embed_three_frame` = [cls ; P ; P ; P] from the
loaded `pos_embed`, P its patch slots bicubic-resized (PyTorch-exact) to the training grid.

The source may be our pre-training params, a released-layout state dict, a DropMAE .pth /
.safetensors, or an imported DIR / pre-training WORKDIR (as the tracker's `init_from_pretrain`).
"""
from __future__ import annotations


import jax
import numpy as np

from dropmae_jax.convert import io
from dropmae_jax.convert import layout
from dropmae_jax.convert.layout import LayoutError
from dropmae_jax.vos.dropseg import layout as seg_layout
from dropmae_jax.vos.dropseg import model as model_lib


def init_from_pretrain(variables: dict, source, *, pretrain_grid: int | None = None
                       ) -> tuple[dict, list[str]]:
  """The released rule for starting a segmenter from DropMAE weights (module docstring).

  Args:
    variables: the segmenter's {'params', 'frozen'} (fresh init: the values of what is missing).
    source: (a) our pre-training params tree (its fixed sin-cos table is regenerated on
      `pretrain_grid`), (b) a released-layout state dict, or a path to (c) a DropMAE .pth /
      .safetensors or (d) an imported DIR / pre-training WORKDIR.
    pretrain_grid: patches per side of the pre-training image (needed for a bare params tree).
  Returns:
    (new variables (numpy), report lines: loaded / dropped / unexpected / missing / derived).
  Raises LayoutError (one line) for a tracker or segmenter checkpoint, or a shape that does not
  fit (as torch's load_state_dict does even with strict=False).
  """
  state, what = io.pretrain_state_dict(source, pretrain_grid)
  where = what if what not in ("state dict", "params tree") else f"the {what}"
  looks = seg_layout.describe_checkpoint(state)
  if all(k in state for k in seg_layout.SIGNATURE):
    looks = ("a DropSeg segmenter checkpoint: import it with `python -m dropmae_jax.convert "
             "import-segmenter`")
  if looks is not None and not looks.startswith("a DropMAE"):
    raise LayoutError(f"{where}: not DropMAE pre-training weights: it looks like {looks}")
  layout.check_is_mae_vit(state)
  flat = {c: layout.flatten(jax.tree.map(np.asarray, dict(variables[c])))
          for c in seg_layout.COLLECTIONS}
  by_key = {seg_layout.torch_key(path): (c, path) for c in flat for path in flat[c]}
  dropped = sorted(k for k in state if "decoder" in k)
  report = [f"source: {what}", f"dropped  {len(dropped)} decoder keys"]
  derived = {"pos_embed_two_frame", "pos_embed_three_frame"}
  problems, loaded = [], set()
  for key in sorted(set(state) - set(dropped), key=seg_layout.released_order):
    target = by_key.get(key)
    if target is None or key in derived:
      report.append(f"unexpected {key} {tuple(np.shape(state[key]))}: ignored")
      continue
    collection, path = target
    value = layout.from_torch_array(path, state[key])
    if value.shape != flat[collection][path].shape:
      if key.startswith("head."):   # released: a head of another shape is deleted first
        report.append(f"dropped  {key} {tuple(np.shape(state[key]))}: another shape than the "
                      "segmenter's head")
        continue
      expected = layout.to_torch_array(path, np.zeros(flat[collection][path].shape)).shape
      problems.append(f"{key}: file {tuple(np.shape(state[key]))}, segmenter expects "
                      f"{tuple(expected)}")
      continue
    flat[collection][path] = value
    loaded.add(key)
  if problems:
    raise LayoutError(f"{where}: shape mismatch loading DropMAE weights into the segmenter (is "
                      "config.model.variant / depth / pretrain_img_size the pre-training one?): "
                      + "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more"
                                                   if len(problems) > 3 else ""))
  report.append(f"loaded   {len(loaded)} tensors")
  pos = flat["frozen"][("pos_embed",)]
  grid = int(round(np.sqrt((flat["frozen"][("pos_embed_two_frame",)].shape[1] - 1) / 2)))
  two, three = model_lib.two_frame_table(pos, grid)
  flat["frozen"][("pos_embed_two_frame",)] = np.asarray(two, np.float32)
  flat["frozen"][("pos_embed_three_frame",)] = np.asarray(three, np.float32)
  source_grid = int(round(np.sqrt(pos.shape[1] - 1)))
  how = "its patch slots" if grid == source_grid else "bicubic resize of its patch slots"
  report.append(f"derived  pos_embed_two_frame {two.shape} and pos_embed_three_frame "
                f"{three.shape} from {'the loaded' if 'pos_embed' in loaded else 'the fresh'} "
                f"pos_embed ({how}, {source_grid}x{source_grid} -> {grid}x{grid}; frozen)")
  missing = sorted((k for k in by_key if k not in loaded and k not in derived),
                   key=seg_layout.released_order)
  tops = sorted({k.split(".")[0] for k in missing}, key=seg_layout.released_order)
  if missing:
    report.append(f"missing  {len(missing)} tensors ({', '.join(tops)}): kept the fresh "
                  "initialisation")
  out = dict(variables)
  for c in seg_layout.COLLECTIONS:
    out[c] = layout.unflatten(flat[c])
  return out, report
