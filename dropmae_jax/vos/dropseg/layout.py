"""Our DropSeg variables <-> the released DropSeg state dict, strict both ways.

Pure numpy. The released model file (`<id>_<iteration>.pth`, written by jimmy-dq/DropSeg
`model/model.py` `ViTSTCNModel.save`) is a plain `state_dict()` of `model/models_vit.py`'s
`VisionTransformer`, which the evaluation scripts (`submit_eval_davis17.py`) load with
strict=True. Keys have no prefix:

  params/patch_embed/proj/kernel        <-> patch_embed.proj.weight           (Conv2d)
  params/blocks_{i}/...                 <-> blocks.{i}....
  params/fpn1_0/kernel (kh, kw, out, in) <-> fpn1.0.weight (in, out, kh, kw)  (ConvTranspose2d)
  params/fpn1_1/ln/scale|bias           <-> fpn1.1.ln.weight|bias
  params/stcn_decoder/up_16_8/out_conv/conv1/kernel <-> stcn_decoder.up_16_8.out_conv.conv1.weight
  frozen/pos_embed_two_frame            <-> pos_embed_two_frame   (and cls_token, pos_embed,
                                            pos_embed_three_frame, head.*, fc_norm.*)
  Dense kernel (in, out) <-> Linear (out, in); Conv kernel (kh, kw, i, o) <-> Conv2d (o, i, kh,
  kw); the ConvTranspose kernel is stored (kh, kw, out, in) so the same permutation gives torch's
  (in, out, kh, kw) (no flip: model.ConvTranspose2x2).

Exports list the keys in the order of the released `state_dict()` (`released_order`). Imports
are strict: a missing key, an unknown key or a shape that does not fit is an error naming it.
"""
from __future__ import annotations

import re

import numpy as np

from dropmae_jax.convert import layout
from dropmae_jax.convert.layout import LayoutError

COLLECTIONS = ("params", "frozen")
# Keys every DropSeg state dict has, and neither a DropMAE nor a tracker checkpoint has.
SIGNATURE = ("mask_patch_embed.proj.weight", "fpn2.0.weight", "stcn_decoder.pred.weight",
             "pos_embed_two_frame")
_FPN = re.compile(r"^(fpn\d)_(\d+)$")
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


def torch_key(path: tuple[str, ...]) -> str:
  """('fpn1_1', 'ln', 'scale') -> 'fpn1.1.ln.weight'; otherwise convert/layout.py's rule."""
  parts = []
  for p in path:
    m = _FPN.match(p)
    parts.extend([m.group(1), m.group(2)] if m else [p])
  return layout.torch_key(tuple(parts))


def _key_map(variables: dict) -> dict[str, tuple[str, tuple[str, ...]]]:
  """torch key -> (collection, path) for every array of `variables`."""
  out = {}
  for collection in COLLECTIONS:
    for path in layout.flatten(variables.get(collection, {})):
      out[torch_key(path)] = (collection, path)
  return out


# --- the released key order ---------------------------------------------------------------------
#
# `nn.Module.state_dict()` lists a module's own parameters (registration order), then its
# submodules' keys (registration order), recursively. timm 0.3.2's VisionTransformer.__init__
# registers patch_embed, cls_token, pos_embed, pos_drop, blocks, norm, pre_logits, head; DropSeg's
# subclass (model/models_vit.py) then fc_norm, mask_patch_embed, fpn1, fpn2, stcn_decoder,
# temporal_pos_embed_x, temporal_pos_embed_z; model/model.py then pos_embed_two_frame and
# pos_embed_three_frame. STCN's ResBlock (model/modules.py) registers downsample, conv1, conv2;
# UpsampleBlock skip_conv, out_conv; Decoder (model/network.py) compress, up_16_8, up_8_4, pred.
OWN_PARAMETERS = ("cls_token", "pos_embed", "temporal_pos_embed_x", "temporal_pos_embed_z",
                  "pos_embed_two_frame", "pos_embed_three_frame")
MODULES = ("patch_embed", "blocks", "norm", "head", "fc_norm", "mask_patch_embed", "fpn1", "fpn2",
           "stcn_decoder")
_CHILD_ORDER = {name: i for names in (
    ("proj",),                                            # PatchEmbed
    ("norm1", "attn", "norm2", "mlp"), ("qkv",), ("fc1", "fc2"),     # Block, Attention, Mlp
    ("ln",),                                              # Norm2d
    ("compress", "up_16_8", "up_8_4", "pred"),            # Decoder
    ("skip_conv", "out_conv"),                            # UpsampleBlock
    ("downsample", "conv1", "conv2"),                     # ResBlock
    ("weight", "bias")) for i, name in enumerate(names)}
_CHILD_ORDER["proj"] = 1   # Attention registers qkv, then proj (PatchEmbed has proj alone)


def released_order(key: str) -> tuple:
  """Sort key putting DropSeg state-dict keys in the released `state_dict()` order (see above);
  keys it does not know come last, alphabetically."""
  parts = key.split(".")
  if key in OWN_PARAMETERS:
    return (0, OWN_PARAMETERS.index(key))
  if parts[0] not in MODULES:
    return (2, key)
  rank = [MODULES.index(parts[0])]
  for part in parts[1:]:
    if part.isdigit():
      rank.append((0, int(part), ""))
    else:
      rank.append((1, _CHILD_ORDER.get(part, len(_CHILD_ORDER)), part))
  return (1, tuple(rank))


def variables_to_state_dict(variables: dict) -> dict[str, np.ndarray]:
  """{'params', 'frozen'} -> the released state dict (float32 numpy), keys in the released order."""
  state = {}
  for key, (collection, path) in _key_map(variables).items():
    state[key] = layout.to_torch_array(path, layout.flatten(variables[collection])[path])
  return {k: state[k] for k in sorted(state, key=released_order)}


def describe_checkpoint(state: dict[str, np.ndarray]) -> str | None:
  """What a state dict looks like when it is not a DropSeg one (None when it is, or when it is
  nothing we know)."""
  if all(k in state for k in SIGNATURE):
    return None
  if any(k.startswith("backbone.") for k in state) and any(k.startswith("box_head.")
                                                          for k in state):
    return ("a DropTrack / OSTrack tracker checkpoint ('backbone.*' and 'box_head.*' keys): "
            "import it with `python -m dropmae_jax.convert import-tracker`")
  if "patch_embed.proj.weight" in state and (
      any(k.startswith("decoder") for k in state) or "mask_token" in state
      or not any(k.startswith(("stcn_decoder.", "fpn1.", "fpn2.", "mask_patch_embed."))
                 for k in state)):
    return ("a DropMAE / MAE pre-training state dict (un-prefixed 'patch_embed.*' and 'blocks.*' "
            "without DropSeg's mask embedding, pyramid and decoder): import it with `python -m "
            "dropmae_jax.convert import`, or start a segmenter from it with "
            "`vos.dropseg.pretrain_init.init_from_pretrain`")
  return None


def check_is_segmenter(state: dict[str, np.ndarray]) -> None:
  """Raise LayoutError (one line) unless `state` is a DropSeg state dict."""
  missing = [k for k in SIGNATURE if k not in state]
  if not missing:
    return
  looks = describe_checkpoint(state)
  if looks is not None:
    raise LayoutError(f"not a DropSeg segmenter checkpoint: it looks like {looks}")
  raise LayoutError(f"not a DropSeg segmenter checkpoint: missing {missing}; its keys start "
                    f"{sorted(state)[:6]}")


def _square_grid(key: str, slots: int, copies: int) -> int:
  n = slots // copies
  grid = int(round(np.sqrt(n)))
  if n * copies != slots or grid * grid != n:
    raise LayoutError(f"{key}: {slots} position slots are not {copies} square grid(s)")
  return grid


def infer_model(state: dict[str, np.ndarray]) -> tuple[dict, list[str]]:
  """The `config.model` fields a DropSeg state dict's shapes fix, and what they do not.

  variant (the ViT size whose width and MLP width match, and the patch), depth (when not the
  size's own), img_size (pos_embed_two_frame's grid), pretrain_img_size (pos_embed's),
  num_classes (head), fpn1/fpn2/compress/decoder channels. The number of heads is not in the
  tensors: the matching ViT size's. Raises LayoutError naming the key.
  """
  from dropmae_jax.models import vit
  check_is_segmenter(state)
  proj = np.shape(state["patch_embed.proj.weight"])
  if len(proj) != 4 or proj[1] != 3 or proj[2] != proj[3]:
    raise LayoutError(f"patch_embed.proj.weight {tuple(proj)}: not a square patch embedding of "
                      "RGB images")
  width, patch = int(proj[0]), int(proj[3])
  blocks = sorted({int(m.group(1)) for m in map(_BLOCK_KEY.match, state) if m})
  if not blocks or blocks != list(range(len(blocks))):
    raise LayoutError(f"blocks.N: blocks {blocks[:16]} are not 0..N-1")
  depth = len(blocks)
  fc1 = state.get("blocks.0.mlp.fc1.weight")
  mlp = int(np.shape(fc1)[0]) if fc1 is not None else None
  sizes = [(n, s) for n, s in vit.VIT_SIZES.items()
           if s.width == width and (mlp is None or s.mlp_dim == mlp)]
  if not sizes:
    known = ", ".join(f"{n} (width {s.width}, mlp {s.mlp_dim})" for n, s in vit.VIT_SIZES.items())
    raise LayoutError(f"no known ViT size has width {width} and MLP width {mlp} "
                      f"(patch_embed.proj.weight / blocks.0.mlp.fc1.weight); known: {known}")
  name, size = next(((n, s) for n, s in sizes if s.depth == depth), sizes[0])
  model = {"variant": f"{name}/{patch}", "depth": -1 if depth == size.depth else depth}
  two = np.shape(state["pos_embed_two_frame"])
  model["img_size"] = _square_grid("pos_embed_two_frame", two[1] - 1, 2) * patch
  if "pos_embed" in state:
    model["pretrain_img_size"] = _square_grid("pos_embed", np.shape(state["pos_embed"])[1] - 1,
                                              1) * patch
  for field, key, axis in (("num_classes", "head.weight", 0),
                           ("fpn1_channels", "fpn1.3.weight", 1),
                           ("fpn2_channels", "fpn2.0.weight", 1),
                           ("compress_channels", "stcn_decoder.compress.conv1.weight", 0),
                           ("decoder_channels", "stcn_decoder.up_8_4.out_conv.conv1.weight", 0)):
    if key in state and np.ndim(state[key]) > axis:
      model[field] = int(np.shape(state[key])[axis])
  notes = [f"heads {size.heads}: the {name} size's (the tensors do not fix it)"]
  return model, notes


def state_dict_to_variables(state: dict[str, np.ndarray], reference: dict
                            ) -> tuple[dict, list[str]]:
  """A released DropSeg state dict -> {'params', 'frozen'} shaped like `reference`, strictly.

  Args:
    state: torch key -> numpy array.
    reference: the model's variables, or just their shapes (`model.variable_shapes`).
  Returns (variables, report lines). Raises LayoutError (one line, converting nothing) on a
  file that is not a DropSeg state dict, or any missing key, unknown key or shape that does
  not fit.
  """
  check_is_segmenter(state)
  key_map = _key_map(reference)
  flat = {c: layout.flatten(reference.get(c, {})) for c in COLLECTIONS}
  missing = sorted((k for k in key_map if k not in state), key=released_order)
  unexpected = sorted((k for k in state if k not in key_map), key=released_order)
  problems = []
  for key, (collection, path) in key_map.items():
    if key not in state:
      continue
    ref = flat[collection][path]
    value = layout.from_torch_array(path, state[key])
    if value.shape != tuple(ref.shape):
      expected = layout.to_torch_array(path, np.zeros(ref.shape, np.float32)).shape
      problems.append(f"{key}: file {tuple(np.shape(state[key]))}, model expects "
                      f"{tuple(expected)}")
      continue
    flat[collection][path] = value
  errors = []
  if problems:
    problems.sort(key=lambda p: released_order(p.split(":")[0]))
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    errors.append(f"shape mismatch in {len(problems)} tensor{'s' if len(problems) > 1 else ''}: "
                  f"{'; '.join(problems[:3])}{more}")
  for what, keys in (("missing", missing), ("unexpected", unexpected)):
    if keys:
      more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
      errors.append(f"{what} key{'s' if len(keys) > 1 else ''} {', '.join(keys[:4])}{more}")
  if errors:
    raise LayoutError("; ".join(errors))
  report = [f"loaded     {len(key_map)} tensors ("
            f"{sum(1 for c, _ in key_map.values() if c == 'frozen')} of them frozen: the "
            "position tables and the tensors outside the forward)"]
  return {c: layout.unflatten(f) for c, f in flat.items()}, report
