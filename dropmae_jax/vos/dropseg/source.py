"""What a segmenter `--weights` argument names, read: the one place that resolves it.

`load_segmenter_weights(spec)` takes
  * an imported segmenter folder (`python -m dropmae_jax.convert import-segmenter`: DIR/segmenter/
    + DIR/config.json; also a fine-tuning run's WORKDIR/segmenter_weights itself),
  * a DropSeg fine-tuning WORKDIR: its WORKDIR/segmenter_weights (written when the run finished),
    or its newest good checkpoint under WORKDIR/checkpoints when that is newer or the only one,
  * a released DropSeg .pth: the plain state dict that jimmy-dq/DropSeg's training saves as
    `<id>_<iteration>.pth`, or its resume file `<id>_checkpoint.pth` ({'network': state_dict,
    'optimizer': ..., 'it': ...}: the 'network' entry is read), converted in memory.
The model config comes from the weights (config.json, the checkpoint's meta, or the sizes of a
.pth's tensors); `config_spec` / `overrides` change fields, and a config whose model disagrees
with the weights is refused. A tracker, a DropMAE pre-training checkpoint or anything else is one
ConvertError / LayoutError line naming the path and what it is.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from dropmae_jax.config import defaults as configlib
from dropmae_jax.config import loading as config_loading
from dropmae_jax.convert import io
from dropmae_jax.convert.layout import LayoutError
from dropmae_jax.train.checkpoint import readonly
from dropmae_jax.vos.dropseg import layout as seg_layout
from dropmae_jax.vos.dropseg import model as model_lib
from dropmae_jax.vos.dropseg import weights as weights_lib

EXPORT_DIR = "segmenter_weights"   # WORKDIR/segmenter_weights: the run's weights.save_segmenter
CHECKPOINTS_DIR = "checkpoints"
SEGMENTER_TASK = "dropseg"
RESUME_KEY = "network"             # jimmy-dq/DropSeg `model/model.py` save_checkpoint
STATE_DICT_KEYS = (RESUME_KEY,) + io.STATE_DICT_KEYS


def _short(e: BaseException) -> str:
  return f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A DropSeg .pth's state dict (bare, or the 'network' entry of a resume file; 'model' / 'net'
  too, so that other checkpoints reach the check that names them), as numpy; read without running
  pickled code (`convert/io.read_torch_checkpoint`)."""
  return io.read_torch_checkpoint(path, keys=STATE_DICT_KEYS).state


def _from_state_dict(path: str) -> tuple[dict, ml_collections.ConfigDict, str]:
  state = read_state_dict(path)
  try:
    seg_layout.check_is_segmenter(state)
  except LayoutError as e:
    raise LayoutError(f"{path}: {e}") from e
  config, _ = weights_lib.segmenter_config(path, state, None)
  model = model_lib.DropSeg.from_config(config)
  try:
    variables, _ = seg_layout.state_dict_to_variables(state, model_lib.variable_shapes(model))
  except LayoutError as e:
    raise LayoutError(f"{path}: does not fit the sizes read from it: {e}") from e
  return variables, config, f"{path} (released DropSeg state dict, converted in memory)"


def _load_imported(path: str, shown: str) -> tuple[dict, ml_collections.ConfigDict]:
  if not os.path.isfile(os.path.join(path, io.CONFIG_FILE)):
    raise io.ConvertError(f"{shown}: no {io.CONFIG_FILE} next to {weights_lib.SEGMENTER_DIR}/ "
                          "(an imported segmenter folder has both)")
  try:
    return weights_lib.load_segmenter(path)
  except io.ConvertError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (orbax / json raise many types)
    raise io.ConvertError(f"{shown}: the segmenter weights cannot be read ({_short(e)})") from e


def _newest_checkpoint(directory: str) -> tuple[dict, ml_collections.ConfigDict, int]:
  def wrong_task(step: int, task: str) -> str:
    return (f"{directory}: checkpoint step {step} is a {task or 'pre-training'!r} run's, not a "
            f"DropSeg segmenter's (config dropseg_*); `vos segment` needs a segmenter")

  try:
    return readonly.read_newest_of_task(directory, task=SEGMENTER_TASK,
                                        collections=("params", model_lib.FROZEN),
                                        what="a segmenter's", wrong_task=wrong_task)
  except readonly.CheckpointError as e:
    raise io.ConvertError(str(e)) from e


def _refuse_other_folder(path: str, spec: str) -> None:
  """One line for the folders of other kinds that users pass by mistake."""
  if os.path.isdir(os.path.join(path, io.TRACKER_DIR)) or os.path.isdir(
      os.path.join(path, "tracker_weights")):
    raise io.ConvertError(f"{spec}: a DropTrack tracker ({io.TRACKER_DIR}/ inside), not a DropSeg "
                          "segmenter; track with it via `python -m dropmae_jax.track run`")
  if os.path.isdir(os.path.join(path, io.PARAMS_DIR)):
    raise io.ConvertError(f"{spec}: an imported DropMAE pre-training checkpoint "
                          f"({io.PARAMS_DIR}/ inside), not a DropSeg segmenter; fine-tune one "
                          "from it (config dropseg_*, --config.init_from) or use `vos propagate`")


def read_weights(spec: str) -> tuple[dict, ml_collections.ConfigDict, str]:
  """({'params', 'frozen'} as numpy, the weights' config, a one-line description) of `spec`
  (module docstring). Raises ConvertError / LayoutError (one line naming the path)."""
  path = os.path.abspath(spec)
  if not os.path.exists(path):
    raise io.ConvertError(f"{spec}: no such file or folder")
  if os.path.isfile(path):
    return _from_state_dict(spec)
  if os.path.isdir(os.path.join(path, weights_lib.SEGMENTER_DIR)):
    variables, config = _load_imported(path, spec)
    return variables, config, f"{spec} (imported segmenter)"
  _refuse_other_folder(path, spec)
  export = os.path.join(path, EXPORT_DIR)
  has_export = os.path.isdir(os.path.join(export, weights_lib.SEGMENTER_DIR))
  checkpoints = os.path.join(path, CHECKPOINTS_DIR)
  steps = readonly.finished_steps(checkpoints)
  shown_export = os.path.join(spec, EXPORT_DIR)
  if not has_export and not steps:
    raise io.ConvertError(
        f"{spec}: neither an imported segmenter ({weights_lib.SEGMENTER_DIR}/ inside) nor a "
        f"DropSeg fine-tuning workdir ({EXPORT_DIR}/ or {CHECKPOINTS_DIR}/ inside); import "
        "released weights with `python -m dropmae_jax.convert import-segmenter`")
  # The export is written after the run's last checkpoint; a newer checkpoint means the run
  # went on after it.
  if has_export and readonly.modified(os.path.join(export, io.CONFIG_FILE)) >= readonly.modified(
      os.path.join(checkpoints, str(steps[0])) if steps else ""):
    variables, config = _load_imported(export, shown_export)
    return variables, config, f"{shown_export} (the fine-tuning run's export)"
  try:
    variables, config, step = _newest_checkpoint(checkpoints)
  except io.ConvertError:
    if not has_export:
      raise
    variables, config = _load_imported(export, shown_export)
    return variables, config, f"{shown_export} (the fine-tuning run's export)"
  return variables, config, f"{spec} (fine-tuning checkpoint step {step})"


def _overlay(base: dict, top: dict) -> None:
  for key, value in top.items():
    if isinstance(value, dict) and isinstance(base.get(key), dict):
      _overlay(base[key], value)
    else:
      base[key] = value


def run_config(weights_config: ml_collections.ConfigDict, config_spec: str | None,
               overrides: Sequence[str] = (), spec: str = "--weights"
               ) -> ml_collections.ConfigDict:
  """The run's config: `config_spec` (else the DropSeg defaults under the weights' own config)
  with `overrides`, locked; its model must be the weights' (ConfigError otherwise)."""
  if config_spec:
    config = config_loading.load_config(config_spec, overrides)
  else:
    merged = configlib.dropseg_defaults().to_dict()
    _overlay(merged, weights_config.to_dict())
    config = ml_collections.ConfigDict(merged)
    for item in overrides:
      config_loading.apply_override(config, item)
    config.lock()
  held = weights_lib.shape_fields(weights_config.model)
  wanted = weights_lib.shape_fields(config.model)
  if held != wanted:
    said = f"--config {config_spec} describes" if config_spec else "the overrides make it"
    raise config_loading.ConfigError(
        f"{spec} holds a {weights_lib.describe(held)} segmenter but {said} "
        f"{weights_lib.describe(wanted)}")
  return config


def load_segmenter_weights(spec: str, config_spec: str | None = None,
                           overrides: Sequence[str] = (), notes: list[str] | None = None
                           ) -> tuple[model_lib.DropSeg, dict, ml_collections.ConfigDict]:
  """(model, {'params', 'frozen'}, config) of `spec` (module docstring); the model is built for
  inference (no drop-path). `notes` receives a one-line description of what was read."""
  if config_spec:   # a config that does not load is reported before the weights are read
    config_loading.load_config(config_spec, overrides)
  variables, weights_config, described = read_weights(spec)
  config = run_config(weights_config, config_spec, overrides, spec)
  with config.unlocked():
    config.model.drop_path_rate = 0.0   # test-time drop-path is 0 (submit_eval_davis17.py)
  model = model_lib.DropSeg.from_config(config)
  if notes is not None:
    notes.append(f"{described}: {weights_lib.describe(weights_lib.shape_fields(config.model))}")
  return model, variables, config
