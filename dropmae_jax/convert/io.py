"""Reading and writing the files on both sides: PyTorch .pth / safetensors, our orbax checkpoints."""
from __future__ import annotations

import dataclasses
import json
import os

import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from dropmae_jax.config import defaults as configlib
from dropmae_jax.convert import layout
from dropmae_jax.convert import outputs
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


@dataclasses.dataclass
class TorchCheckpoint:
  """A PyTorch checkpoint file as read by `read_torch_checkpoint`.

  state: the state dict, key -> numpy (float tensors float32, integer ones such as BatchNorm's
    num_batches_tracked int64).
  entries: the file's other top-level entries (plain data; objects of other classes are inert
    `torch_pickle.Ignored` placeholders); empty for a bare state dict or safetensors.
  """
  state: dict[str, np.ndarray]
  entries: dict

  def ignored(self, used: tuple[str, ...] = ()) -> str | None:
    """One line naming the entries besides the state dict and `used` that were not read (the
    placeholders' globals in brackets), None when there are none."""
    from dropmae_jax.convert import torch_pickle
    return torch_pickle.describe_ignored({k: v for k, v in self.entries.items() if k not in used})


STATE_DICT_KEYS = ("model", "net")   # MAE's save_model / OSTrack's trainer


def read_torch_checkpoint(path: str, keys: tuple[str, ...] = STATE_DICT_KEYS) -> TorchCheckpoint:
  """A released .pth / .pth.tar ({'model': state_dict, ...}, a tracker's {'net': state_dict,
  ...} or a bare state dict), or a .safetensors file, read without running pickled code
  (`torch_pickle`: other classes' objects, e.g. MAE's `args` Namespace or OSTrack's `settings`,
  become inert placeholders). `keys`: the entries that may hold the state dict, first found
  wins (a segmenter's resume file adds 'network'). Raises ConvertError naming the file and the
  problem."""
  if not os.path.isfile(path):
    raise ConvertError(f"{path}: no such file")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    try:
      tensors = load_file(path)
    except Exception as e:  # pylint: disable=broad-except  (safetensors raises its own types)
      raise ConvertError(f"{path}: not a readable safetensors file ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:160]})") from e
    return TorchCheckpoint({k: _numpy_of(v) for k, v in tensors.items()}, {})
  torch = _torch()
  from dropmae_jax.convert import torch_pickle
  try:
    blob = torch_pickle.load(path).obj
  except torch_pickle.TorchFileError as e:
    raise ConvertError(f"{path}: not a readable PyTorch checkpoint: {e}") from e
  used = None
  state = blob
  if isinstance(blob, dict):
    used = next((k for k in keys if k in blob), None)
    state = blob[used] if used is not None else blob
  if not isinstance(state, dict) or not state or not all(
      isinstance(v, torch.Tensor) for v in state.values()):
    what = type(state).__name__
    if isinstance(state, torch_pickle.Ignored):
      what = f"a pickled {state.global_name} object (not read)"
    elif isinstance(state, dict):
      others = sorted({type(v).__name__ for v in state.values() if not isinstance(v, torch.Tensor)})
      what = f"a dict with keys {list(state)[:8]}"
      what += f" holding {', '.join(others)}" if others else ""
    where = f"['{used}']" if used is not None else ""
    wanted = "|".join(repr(k) for k in keys)
    raise ConvertError(f"{path}: expected {{{wanted}: state_dict}} or a state dict of "
                       f"tensors; found {what}{' in ' + where if where else ''}")
  entries = {k: v for k, v in blob.items() if k != used} if used is not None else {}
  return TorchCheckpoint({str(k): _numpy_of(v) for k, v in state.items()}, entries)


def _numpy_of(value) -> np.ndarray:
  """A torch tensor or numpy array -> numpy: floating point as float32, integers as int64."""
  if hasattr(value, "detach"):
    value = value.detach().cpu()
    value = value.float().numpy() if value.is_floating_point() else value.long().numpy()
  value = np.asarray(value)
  return value.astype(np.float32 if np.issubdtype(value.dtype, np.floating) else np.int64,
                      copy=False)


def read_torch_state_dict(path: str, notes: list[str] | None = None) -> dict[str, np.ndarray]:
  """The state dict of a released .pth / .pth.tar / .safetensors (see `read_torch_checkpoint`):
  key -> float32 numpy (int64 for integer tensors). `notes`, when given, receives the one line
  naming what the file held besides the state dict (args, optimizer, settings...)."""
  checkpoint = read_torch_checkpoint(path)
  line = checkpoint.ignored()
  if notes is not None and line:
    notes.append(line)
  return checkpoint.state


def check_output(out: str, overwrite: bool, *, folder: bool, ours: tuple[str, ...] = ()) -> None:
  """Raise ConvertError (one line) unless `out` may be written: it does not exist, or (folders)
  is empty or holds none of `ours`, or `overwrite` allows replacing the finished output."""
  if not os.path.lexists(out):
    return
  if folder != os.path.isdir(out):
    kind = "a folder" if os.path.isdir(out) else "a file"
    raise ConvertError(f"--out {out}: is {kind}; give a {'folder' if folder else 'file'} path")
  if folder:
    present = sorted(set(os.listdir(out)) & set(ours))
    if not present or overwrite:
      return
    raise ConvertError(f"--out {out}: already holds an earlier output ({', '.join(present)}); "
                       "pass --overwrite to replace it")
  if not overwrite:
    raise ConvertError(f"--out {out}: already exists; pass --overwrite to replace it")


def write_torch_state_dict(state: dict[str, np.ndarray], path: str) -> None:
  """{'model': state_dict} with float32 tensors (.pth), or a flat safetensors file; written to a
  temporary sibling and renamed into place (never half-written)."""
  with outputs.staged_file(path) as tmp:
    if path.endswith(".safetensors"):
      from safetensors.numpy import save_file
      save_file({k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}, tmp)
    else:
      torch = _torch()
      tensors = {k: torch.from_numpy(np.array(v, np.float32, copy=True)) for k, v in state.items()}
      torch.save({"model": tensors}, tmp)


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


PARAMS_ENTRIES = (PARAMS_DIR, CONFIG_FILE)   # what an imported checkpoint folder holds


def save_params(directory: str, params, config: ml_collections.ConfigDict) -> str:
  """DIR/params (orbax) + DIR/config.json: what `config.init_from` and `export` read. Built as a
  temporary sibling and renamed into place (`outputs.staged_dir`): never half-written."""
  directory = os.path.abspath(directory)
  with outputs.staged_dir(directory, PARAMS_ENTRIES) as staging:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(staging, PARAMS_DIR), {"params": params}, force=True)
    checkpointer.wait_until_finished()
    with open(os.path.join(staging, CONFIG_FILE), "w") as f:
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
  and passes the fingerprint saved with it (read-only: damaged ones are skipped, never moved)."""
  from dropmae_jax.train.checkpoint import readonly

  def is_pretraining(state, meta) -> str | None:
    if not isinstance(state, dict) or "params" not in state or "config" not in meta:
      return "it holds no 'params' or no 'config' (not a pre-training checkpoint)"
    return None

  try:
    state, meta, _ = readonly.read_newest_good(directory, check_state=is_pretraining)
  except readonly.CheckpointError as e:
    raise ConvertError(str(e)) from e
  return state["params"], meta["config"]


def _to_numpy(tree):
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def write_tracker_checkpoint(state: dict[str, np.ndarray], path: str,
                             extra: dict | None = None) -> None:
  """{'net': state_dict, **extra} as the released DropTrack/OSTrack .pth.tar: the state dict in
  the order given (an OrderedDict, as `nn.Module.state_dict()`), float32 tensors, int64 for
  BatchNorm's num_batches_tracked. `extra` must be plain data (str, numbers, lists, dicts), so
  `torch.load(weights_only=True)` still reads the file. Written to a temporary sibling and
  renamed into place (never half-written)."""
  import collections
  torch = _torch()
  tensors = collections.OrderedDict()
  for k, v in state.items():
    dtype = np.int64 if k.endswith("num_batches_tracked") else np.float32
    tensors[k] = torch.from_numpy(np.array(np.asarray(v), dtype, copy=True))
  with outputs.staged_file(path) as tmp:
    torch.save({"net": tensors, **(extra or {})}, tmp)


NUM_BATCHES_FILE = "num_batches_tracked.json"
TRACKER_OUTPUTS = (TRACKER_DIR, CONFIG_FILE, NUM_BATCHES_FILE)   # an imported tracker folder's
# ... and what an earlier version's staging could leave there: replaced along with them.
TRACKER_ENTRIES = TRACKER_OUTPUTS + (TRACKER_DIR + ".partial", CONFIG_FILE + ".tmp")


def save_tracker(directory: str, variables: dict, config: ml_collections.ConfigDict,
                 num_batches_tracked: dict[str, int] | None = None) -> str:
  """DIR/tracker (orbax: params + batch_stats) + DIR/config.json [+ DIR/num_batches_tracked.json].

  Args:
    directory: the tracker folder (`track run --weights`, `convert export-tracker`).
    variables: {'params', 'batch_stats'}.
    config: the tracker's config (its model fixes the network's shapes).
    num_batches_tracked: BatchNorm counters by torch key ('box_head.conv1_ctr.1.
      num_batches_tracked' -> int), kept from an imported checkpoint so that `export-tracker`
      writes them back; None (fresh or fine-tuned weights) stores none and exports 0.

  The folder is built as a temporary sibling and renamed into place (`outputs.staged_dir`): a
  failure leaves any earlier tracker in DIR intact and no half-written one.
  """
  directory = os.path.abspath(directory)
  with outputs.staged_dir(directory, TRACKER_ENTRIES) as staging:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(staging, TRACKER_DIR),
                      {"params": variables["params"],
                       "batch_stats": variables.get("batch_stats", {})}, force=True)
    checkpointer.wait_until_finished()
    if num_batches_tracked:
      with open(os.path.join(staging, NUM_BATCHES_FILE), "w") as f:
        json.dump({k: int(v) for k, v in num_batches_tracked.items()}, f, indent=2)
    with open(os.path.join(staging, CONFIG_FILE), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
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


def load_num_batches_tracked(path: str) -> dict[str, int]:
  """The BatchNorm counters `save_tracker` kept in DIR (torch key -> int); {} when it kept none."""
  file = os.path.join(os.path.abspath(path), NUM_BATCHES_FILE)
  if not os.path.isfile(file):
    return {}
  try:
    with open(file) as f:
      counts = json.load(f)
    return {str(k): int(v) for k, v in counts.items()}
  except (ValueError, TypeError, AttributeError) as e:
    raise ConvertError(f"{file}: not a JSON object of integer counters ({e})") from e


def pretrain_state_dict(source, pretrain_grid: int | None = None
                        ) -> tuple[dict[str, np.ndarray], str]:
  """A DropMAE source -> (its state dict in the released flat layout, a description).

  The downstream models (tracker, segmenter) start from DropMAE weights given as a path (a
  pre-training workdir or an imported folder, or a released .pth / .safetensors), our params
  tree (needs `pretrain_grid` = pre-training img_size // patch for its position table), or a flat
  state dict. Floating-point arrays come back as float32.
  """
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    if os.path.isdir(path):
      params, config = load_params(path)
      grid = pretrain_grid or config.model.img_size // int(config.model.variant.split("/")[1])
      return layout.params_to_state_dict(params, grid=grid), path
    return read_torch_state_dict(path), path
  if not isinstance(source, dict):
    raise TypeError(f"init_from_pretrain: expected a params tree, a state dict or a path; got "
                    f"{type(source).__name__}")
  if source and not any(isinstance(v, dict) for v in source.values()):   # a flat state dict
    return {k: _float32(np.asarray(v)) for k, v in source.items()}, "state dict"
  if "patch_embed" in source:
    if pretrain_grid is None:
      raise ValueError("init_from_pretrain: a params tree has no position table; pass "
                       "pretrain_grid (= pre-training img_size // patch)")
    return layout.params_to_state_dict(source, grid=pretrain_grid), "params tree"
  raise ValueError("init_from_pretrain: source is neither our pre-training params (no "
                   "'patch_embed') nor a DropMAE state dict (no 'patch_embed.proj.weight'); "
                   f"its keys start {sorted(source)[:8]}")


def _float32(array: np.ndarray) -> np.ndarray:
  return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array
