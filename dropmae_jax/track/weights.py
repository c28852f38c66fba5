"""DropTrack weights across the JAX / PyTorch border: the `convert import-tracker` and
`convert export-tracker` subcommands (python -m dropmae_jax.convert).

A released DropTrack / OSTrack-CE checkpoint ({'net': state_dict, ...}) becomes an imported tracker
folder (orbax params + batch_stats + config.json [+ num_batches_tracked.json]) and back; the key
mapping is `track/layout.py`.

Where the import takes the tracker's config from:
  * --config NAME|FILE: that config; the file's tensors must fit it (one-line error otherwise,
    naming what the file holds).
  * our own export: the config it was exported with (its 'dropmae_jax' entry), checked against
    the tensors.
  * any other file: the DropTrack defaults with every size the tensors fix (ViT size and patch,
    depth, template / search / pre-training sizes, head channels). The CE layers, keep ratio and
    template range have no tensors: the defaults' (layers beyond the depth dropped), reported
    as such.
"""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from dropmae_jax.config import defaults as configlib
from dropmae_jax.config import loading as config_loading
from dropmae_jax.convert import io
from dropmae_jax.track import layout as tracker_layout
from dropmae_jax.track import ostrack

METADATA_KEY = "dropmae_jax"   # our export's entry beside 'net': {'format': 1, 'config': JSON}
METADATA_FORMAT = 1
# config.model fields the tensors fix.
SHAPE_FIELDS = ("variant", "depth", "template_size", "search_size", "pretrain_img_size",
                "head_channels")


def _shape_fields(model: ml_collections.ConfigDict) -> dict:
  """The shape-fixing model fields of a config, depth made explicit (-1 -> the size's)."""
  from dropmae_jax.models import vit
  size, _ = vit.decode_variant(model.variant)
  out = {f: model.get(f, -1 if f == "depth" else None) for f in SHAPE_FIELDS}
  out["pretrain_img_size"] = model.get("pretrain_img_size", 224)
  if out["depth"] is None or out["depth"] < 0:
    out["depth"] = size.depth
  return out


def describe(fields: dict) -> str:
  return (f"{fields['variant']} depth {fields['depth']} template {fields['template_size']}px "
          f"search {fields['search_size']}px (pre-trained at {fields['pretrain_img_size']}px), "
          f"head {fields['head_channels']}")


def _metadata_config(src: str, entries: dict) -> ml_collections.ConfigDict | None:
  meta = entries.get(METADATA_KEY)
  if meta is None:
    return None
  if not (isinstance(meta, dict) and isinstance(meta.get("config"), str)):
    raise io.ConvertError(f"{src}: its '{METADATA_KEY}' entry is not {{'format', 'config': "
                          "JSON}} (not written by export-tracker?)")
  try:
    return ml_collections.ConfigDict(json.loads(meta["config"]))
  except (ValueError, TypeError) as e:
    raise io.ConvertError(f"{src}: its '{METADATA_KEY}' config is not readable JSON ({e})") from e


def tracker_config(src: str, state: dict[str, np.ndarray], entries: dict,
                   config_spec: str | None) -> tuple[ml_collections.ConfigDict, list[str]]:
  """The imported tracker's config (see the module docstring) and report lines saying where
  each part came from. Raises ConvertError / LayoutError / ConfigError (one line)."""
  if config_spec:
    config = config_loading.load_config(config_spec)
    try:
      held = _shape_fields(ml_collections.ConfigDict(tracker_layout.infer_model(state)[0]))
    except (tracker_layout.LayoutError, ValueError):
      held = None   # an unusual file: the tensor-by-tensor check will name what does not fit
    wanted = _shape_fields(config.model)
    if held is not None and held != wanted:
      raise io.ConvertError(f"{src}: holds a {describe(held)} tracker but --config {config_spec} "
                            f"describes {describe(wanted)} (drop --config to take the sizes "
                            "from the file)")
    return config, [f"config: --config {config_spec}"]
  inferred, notes = tracker_layout.infer_model(state)
  config = _metadata_config(src, entries)
  if config is not None:
    theirs, ours = _shape_fields(config.model), _shape_fields(ml_collections.ConfigDict(inferred))
    if theirs != ours:
      raise io.ConvertError(f"{src}: its '{METADATA_KEY}' config describes {describe(theirs)} "
                            f"but its tensors hold {describe(ours)}")
    return config, [f"config: the one it was exported with (its '{METADATA_KEY}' entry); "
                    "sizes checked against the tensors"]
  config = configlib.droptrack_defaults()
  for name, value in inferred.items():
    config.model[name] = value
  depth = _shape_fields(config.model)["depth"]
  default_loc = tuple(config.model.ce_loc)
  ce_loc = tuple(i for i in default_loc if i < depth) or (depth - 1,)
  config.model.ce_loc = ce_loc
  ce_note = (f"CE layers {ce_loc}, keep {config.model.ce_keep_ratio}, "
             f"{config.model.ce_template_range}: not stored in the file, the DropTrack defaults")
  if ce_loc != default_loc:
    ce_note += f" {default_loc} within its {depth} blocks"
  return config, ["config: the DropTrack defaults with the sizes of the file's tensors; " +
                  "; ".join(notes), ce_note + " (pass --config to choose)"]


def run_import_tracker(src: str, out: str, config_path: str | None,
                       overwrite: bool = False) -> list[str]:
  io.check_output(out, overwrite, folder=True, ours=io.TRACKER_OUTPUTS)
  checkpoint = io.read_torch_checkpoint(src)
  state = checkpoint.state
  try:
    tracker_layout.check_is_tracker(state)
  except tracker_layout.LayoutError as e:
    raise tracker_layout.LayoutError(f"{src}: {e}") from e
  config, notes = tracker_config(src, state, checkpoint.entries, config_path)
  try:
    model = ostrack.OSTrackCE.from_config(config)
    reference = ostrack.variable_shapes(model)
  except ValueError as e:   # a config whose model cannot be built (ce_loc beyond the depth, ...)
    raise io.ConvertError(f"{config_path or src}: its tracker cannot be built ({e})") from e
  try:
    variables, report = tracker_layout.state_dict_to_variables(
        state, reference, fresh=lambda: ostrack.init_variables(model, seed=config.seed))
  except tracker_layout.LayoutError as e:
    fits = f"--config {config_path}" if config_path else "the sizes read from it"
    raise tracker_layout.LayoutError(f"{src}: does not fit {fits}: {e}") from e
  counts = tracker_layout.num_batches_tracked_of(state, reference)
  io.save_tracker(out, variables, config, num_batches_tracked=counts)
  m = config.model
  lines = [f"tracker {describe(_shape_fields(m))}, CE {tuple(m.ce_loc)} keep {m.ce_keep_ratio}"]
  lines += notes
  ignored = checkpoint.ignored(used=(METADATA_KEY,))
  if ignored:
    lines.append(ignored)
  return lines + report + [f"wrote {out}"]


def run_export_tracker(src: str, out: str, overwrite: bool = False) -> list[str]:
  from dropmae_jax.track import weights_source
  io.check_output(out, overwrite, folder=False)
  variables, config, described = weights_source.load_tracker_weights(src)
  # The counters an import kept (an imported folder); fine-tuned weights have none: 0.
  counts = (io.load_num_batches_tracked(src)
            if os.path.isdir(os.path.join(src, io.TRACKER_DIR)) else {})
  state = tracker_layout.variables_to_state_dict(variables, counts)
  extra = {METADATA_KEY: {"format": METADATA_FORMAT, "config": config.to_json_best_effort()}}
  io.write_tracker_checkpoint(state, out, extra)
  kept = ("num_batches_tracked as imported" if counts else
          "num_batches_tracked 0: none kept with these weights")
  return [f"weights: {described}",
          f"wrote {len(state)} tensors ({sum(np.size(v) for v in state.values()):,} values; "
          f"{kept}) to {out}"]
