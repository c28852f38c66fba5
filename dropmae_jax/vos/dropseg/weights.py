"""DropSeg weights across the JAX / PyTorch border: the `convert import-segmenter` and
`convert export-segmenter` subcommands (python -m dropmae_jax.convert).

A released DropSeg model file (the plain `state_dict()` that jimmy-dq/DropSeg's training saves as
`<id>_<iteration>.pth` and `submit_eval_davis17.py` loads with strict=True) becomes a segmenter
folder (DIR/segmenter: orbax params + frozen; DIR/config.json) and back; the key mapping is
`layout.py`, strict both ways.

The file is a bare state dict, so it carries no config: the import reads every size from the
tensors (ViT size and patch, depth, training and pre-training sizes, head, pyramid and decoder
widths) onto the DropSeg defaults (`config/defaults.py` `dropseg_defaults`), or takes --config,
whose sizes must then be the file's. The number of heads is not in the tensors: the ViT size's.
"""
from __future__ import annotations

import collections
import json
import os

import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from dropmae_jax.config import defaults as configlib
from dropmae_jax.config import loading as config_loading
from dropmae_jax.convert import io
from dropmae_jax.convert import outputs
from dropmae_jax.convert.layout import LayoutError
from dropmae_jax.vos.dropseg import layout as seg_layout
from dropmae_jax.vos.dropseg import model as model_lib

SEGMENTER_DIR = "segmenter"      # DIR/segmenter (orbax: params + frozen) + DIR/config.json
CONFIG_FILE = io.CONFIG_FILE
SEGMENTER_OUTPUTS = (SEGMENTER_DIR, CONFIG_FILE)
# config.model fields the tensors fix.
SHAPE_FIELDS = ("variant", "depth", "img_size", "pretrain_img_size", "num_classes",
                "fpn1_channels", "fpn2_channels", "compress_channels", "decoder_channels")


def save_segmenter(directory: str, variables: dict, config: ml_collections.ConfigDict) -> str:
  """DIR/segmenter (orbax: {'params', 'frozen'}) + DIR/config.json, built as a temporary sibling
  and renamed into place (`outputs.staged_dir`): never half-written."""
  directory = os.path.abspath(directory)
  with outputs.staged_dir(directory, SEGMENTER_OUTPUTS) as staging:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(staging, SEGMENTER_DIR),
                      {c: variables[c] for c in seg_layout.COLLECTIONS}, force=True)
    checkpointer.wait_until_finished()
    with open(os.path.join(staging, CONFIG_FILE), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  return directory


def load_segmenter(path: str) -> tuple[dict, ml_collections.ConfigDict]:
  """({'params', 'frozen'} as numpy, config) from a DIR written by `save_segmenter`."""
  path = os.path.abspath(path)
  target = os.path.join(path, SEGMENTER_DIR)
  if not os.path.isdir(target):
    what = "no such folder" if not os.path.exists(path) else (
        f"not a segmenter folder (no {SEGMENTER_DIR}/ inside; create one with `python -m "
        "dropmae_jax.convert import-segmenter`)")
    raise io.ConvertError(f"{path}: {what}")
  variables = ocp.StandardCheckpointer().restore(target)
  with open(os.path.join(path, CONFIG_FILE)) as f:
    config = ml_collections.ConfigDict(json.loads(f.read()))
  return {c: _to_numpy(variables[c]) for c in seg_layout.COLLECTIONS}, config


def _to_numpy(tree):
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def write_segmenter_checkpoint(state: dict[str, np.ndarray], path: str) -> None:
  """The released model file: a bare state dict (an OrderedDict in the order given, as
  `nn.Module.state_dict()`) of float32 tensors, which the released network loads strict.
  Written to a temporary sibling and renamed into place (never half-written)."""
  try:
    import torch
  except ImportError as e:
    raise io.ConvertError("writing .pth needs PyTorch: pip install 'dropmae_jax[torch]'") from e
  tensors = collections.OrderedDict(
      (k, torch.from_numpy(np.array(np.asarray(v), np.float32, copy=True)))
      for k, v in state.items())
  with outputs.staged_file(path) as tmp:
    torch.save(tensors, tmp)


def shape_fields(model: ml_collections.ConfigDict) -> dict:
  """The shape-fixing model fields of a config, depth made explicit (-1 -> the size's)."""
  from dropmae_jax.models import vit
  size, _ = vit.decode_variant(model.variant)
  defaults = configlib.dropseg_defaults().model
  out = {f: model.get(f, defaults[f]) for f in SHAPE_FIELDS}
  if out["depth"] < 0:
    out["depth"] = size.depth
  return out


def describe(fields: dict) -> str:
  return (f"{fields['variant']} depth {fields['depth']} at {fields['img_size']}px (pre-trained "
          f"at {fields['pretrain_img_size']}px), pyramid {fields['fpn2_channels']}/"
          f"{fields['fpn1_channels']}, decoder {fields['compress_channels']}/"
          f"{fields['decoder_channels']}, head {fields['num_classes']}")


def segmenter_config(src: str, state: dict[str, np.ndarray], config_spec: str | None
                     ) -> tuple[ml_collections.ConfigDict, list[str]]:
  """The imported segmenter's config and report lines saying where it came from. Raises
  ConvertError / LayoutError / ConfigError (one line, naming the file)."""
  try:
    inferred, notes = seg_layout.infer_model(state)
  except LayoutError as e:
    raise LayoutError(f"{src}: {e}") from e
  held = shape_fields(ml_collections.ConfigDict(inferred))
  if config_spec:
    config = config_loading.load_config(config_spec)
    wanted = shape_fields(config.model)
    if held != wanted:
      raise io.ConvertError(f"{src}: holds a {describe(held)} segmenter but --config "
                            f"{config_spec} describes {describe(wanted)} (drop --config to take "
                            "the sizes from the file)")
    return config, [f"config: --config {config_spec}"]
  config = configlib.dropseg_defaults()
  for name, value in inferred.items():
    config.model[name] = value
  return config, ["config: the DropSeg defaults with the sizes of the file's tensors; "
                  + "; ".join(notes)]


def run_import_segmenter(src: str, out: str, config_path: str | None,
                         overwrite: bool = False) -> list[str]:
  io.check_output(out, overwrite, folder=True, ours=SEGMENTER_OUTPUTS)
  notes: list[str] = []
  state = io.read_torch_state_dict(src, notes)
  try:
    seg_layout.check_is_segmenter(state)
  except LayoutError as e:
    raise LayoutError(f"{src}: {e}") from e
  config, config_notes = segmenter_config(src, state, config_path)
  try:
    model = model_lib.DropSeg.from_config(config)
    reference = model_lib.variable_shapes(model)
  except ValueError as e:   # a config whose model cannot be built
    raise io.ConvertError(f"{config_path or src}: its segmenter cannot be built ({e})") from e
  try:
    variables, report = seg_layout.state_dict_to_variables(state, reference)
  except LayoutError as e:
    fits = f"--config {config_path}" if config_path else "the sizes read from it"
    raise LayoutError(f"{src}: does not fit {fits}: {e}") from e
  save_segmenter(out, variables, config)
  return ([f"segmenter {describe(shape_fields(config.model))}"] + config_notes + notes + report
          + [f"wrote {out}"])


def run_export_segmenter(src: str, out: str, overwrite: bool = False) -> list[str]:
  io.check_output(out, overwrite, folder=False)
  variables, config = load_segmenter(src)
  state = seg_layout.variables_to_state_dict(variables)
  write_segmenter_checkpoint(state, out)
  return [f"segmenter {describe(shape_fields(config.model))} from {src}",
          f"wrote {len(state)} tensors ({sum(np.size(v) for v in state.values()):,} values) to "
          f"{out}"]
