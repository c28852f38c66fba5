"""Reading and writing the files on both sides: PyTorch .pth / safetensors, our orbax checkpoints."""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from dropmae_jax.config import defaults as configlib
from dropmae_jax.models import vit

PARAMS_DIR = "params"          # an imported checkpoint: DIR/params (orbax) + DIR/config.json
CONFIG_FILE = "config.json"
TRACKER_DIR = "tracker"        # an imported tracker: DIR/tracker (orbax params + batch_stats)


class ConvertError(ValueError):
  """A file that cannot be converted; the message names the file and the problem."""


def _torch():
  try:
    import torch
  except ImportError as e:
    raise ConvertError("reading/writing .pth needs PyTorch: pip install 'dropmae_jax[torch]'") from e
  return torch


def read_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """A released .pth ({'model': state_dict, ...}, a tracker's {'net': state_dict, ...} or a bare
  state dict) -> key -> float32 numpy."""
  if not os.path.isfile(path):
    raise ConvertError(f"{path}: no such file")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return {k: v.astype(np.float32) for k, v in load_file(path).items()}
  torch = _torch()
  try:
    blob = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for truncated / foreign pickles
    raise ConvertError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
  state = None
  if isinstance(blob, dict):
    state = blob["model"] if "model" in blob else blob.get("net", blob)
  if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
    raise ConvertError(f"{path}: expected {{'model'|'net': state_dict}} or a state dict of tensors, "
                       f"found {type(blob).__name__} with keys {list(blob)[:8] if isinstance(blob, dict) else ''}")
  return {k: v.detach().float().cpu().numpy() for k, v in state.items()}


def write_torch_state_dict(state: dict[str, np.ndarray], path: str) -> None:
  """{'model': state_dict} with float32 tensors (.pth), or a flat safetensors file."""
  os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
  tmp = path + ".tmp"
  if path.endswith(".safetensors"):
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}, tmp)
  else:
    torch = _torch()
    tensors = {k: torch.from_numpy(np.array(v, np.float32, copy=True)) for k, v in state.items()}
    torch.save({"model": tensors}, tmp)
  os.replace(tmp, path)  # never a half-written export


def infer_model_config(state: dict[str, np.ndarray]) -> ml_collections.ConfigDict:
  """Pre-training config whose model matches a released state dict's shapes."""
  config = configlib.pretrain_defaults()
  proj = state["patch_embed.proj.weight"]
  width, patch = proj.shape[0], proj.shape[-1]
  depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
  names = [n for n, s in vit.VIT_SIZES.items() if (s.width, s.depth) == (width, depth)]
  if not names:
    raise ConvertError(f"no known ViT size has width {width} and depth {depth}")
  config.model.variant = f"{names[0]}/{patch}"
  if "pos_embed" in state:
    grid = int(round(np.sqrt(state["pos_embed"].shape[1] - 1)))
    config.model.img_size = grid * patch
  if "decoder_embed.weight" in state:
    d = state["decoder_embed.weight"].shape[0]
    config.model.decoder_embed_dim = d
    config.model.decoder_depth = len({k.split(".")[1] for k in state
                                      if k.startswith("decoder_blocks.")})
    fc1 = state.get("decoder_blocks.0.mlp.fc1.weight")
    if fc1 is not None:
      config.model.decoder_mlp_ratio = fc1.shape[0] / d
  return config


def save_params(directory: str, params, config: ml_collections.ConfigDict) -> str:
  """DIR/params (orbax) + DIR/config.json: what `config.init_from` and `export` read."""
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  target = os.path.join(directory, PARAMS_DIR)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(target, {"params": params}, force=True)
  checkpointer.wait_until_finished()
  with open(os.path.join(directory, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  return directory


def load_params(path: str) -> tuple[dict, ml_collections.ConfigDict]:
  """Params (numpy) and config from an imported DIR or a training WORKDIR (latest checkpoint)."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, PARAMS_DIR)):
    params = ocp.StandardCheckpointer().restore(os.path.join(path, PARAMS_DIR))["params"]
    with open(os.path.join(path, CONFIG_FILE)) as f:
      config_json = f.read()
  elif os.path.isdir(os.path.join(path, "checkpoints")):
    params, config_json = _newest_good_params(os.path.join(path, "checkpoints"))
  else:
    raise ConvertError(f"{path}: neither an imported checkpoint (DIR/{PARAMS_DIR}) nor a "
                       "training workdir (WORKDIR/checkpoints)")
  config = ml_collections.ConfigDict(json.loads(config_json))
  return _to_numpy(params), config


def _newest_good_params(directory: str) -> tuple[dict, str]:
  """(params, config JSON) of the newest checkpoint in a training run's `directory` that reads
  and passes the fingerprint saved with it. Read-only: a damaged checkpoint is reported and
  skipped, never moved (the run that owns the folder may still be writing to it)."""
  from absl import logging
  from dropmae_jax.train import fingerprint
  manager = ocp.CheckpointManager(directory)
  try:
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
      raise ConvertError(f"{directory} holds no finished checkpoint")
    damaged = []
    for step in steps:
      try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
        meta = dict(restored["meta"] or {})
        problem = fingerprint.fingerprint_problem(restored["state"], meta)
      except Exception as e:  # pylint: disable=broad-except
        problem = f"it cannot be read ({type(e).__name__}: {str(e).strip()[:100]})"
      if problem is None and ("params" not in restored["state"] or "config" not in meta):
        problem = "it holds no 'params' or no 'config' (not a pre-training checkpoint)"
      if problem is None:
        if damaged:
          logging.warning("%s: using checkpoint step %d; newer ones are damaged: %s", directory,
                          step, "; ".join(damaged))
        return restored["state"]["params"], meta["config"]
      damaged.append(f"step {step}: {problem}")
    raise ConvertError(f"{directory}: no checkpoint can be used — " + "; ".join(damaged))
  finally:
    manager.close()


def _to_numpy(tree):
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def write_tracker_checkpoint(state: dict[str, np.ndarray], path: str) -> None:
  """{'net': state_dict} as the released DropTrack/OSTrack .pth.tar: float32 tensors, int64 for
  BatchNorm's num_batches_tracked. Written to a temporary file and renamed (never half-written)."""
  torch = _torch()
  os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
  tensors = {}
  for k, v in state.items():
    v = np.asarray(v)
    dtype = np.int64 if k.endswith("num_batches_tracked") else np.float32
    tensors[k] = torch.from_numpy(np.array(v, dtype, copy=True))
  tmp = path + ".tmp"
  torch.save({"net": tensors}, tmp)
  os.replace(tmp, path)


def save_tracker(directory: str, variables: dict, config: ml_collections.ConfigDict) -> str:
  """DIR/tracker (orbax: params + batch_stats) + DIR/config.json.

  Both are written next to their final names and renamed into place, so a failure leaves any
  earlier import in DIR intact and no half-written one.
  """
  import shutil
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  target = os.path.join(directory, TRACKER_DIR)
  staging = target + ".partial"
  shutil.rmtree(staging, ignore_errors=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(staging, {"params": variables["params"],
                              "batch_stats": variables.get("batch_stats", {})}, force=True)
  checkpointer.wait_until_finished()
  config_tmp = os.path.join(directory, CONFIG_FILE + ".tmp")
  with open(config_tmp, "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  shutil.rmtree(target, ignore_errors=True)
  os.replace(staging, target)
  os.replace(config_tmp, os.path.join(directory, CONFIG_FILE))
  return directory


def load_tracker(path: str) -> tuple[dict, ml_collections.ConfigDict]:
  """({'params', 'batch_stats'} as numpy, config) from a DIR written by `save_tracker`."""
  path = os.path.abspath(path)
  target = os.path.join(path, TRACKER_DIR)
  if not os.path.isdir(target):
    raise ConvertError(f"{path}: not an imported tracker (no {TRACKER_DIR}/ inside; create one "
                       "with `python -m dropmae_jax.convert import-tracker`)")
  variables = ocp.StandardCheckpointer().restore(target)
  with open(os.path.join(path, CONFIG_FILE)) as f:
    config = ml_collections.ConfigDict(json.loads(f.read()))
  return _to_numpy(dict(variables)), config
