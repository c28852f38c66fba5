"""Weights across the JAX / PyTorch border.

  python -m dropmae_jax.convert import SRC.pth --out DIR [--config configs/k700.py]
      released DropMAE / MAE ImageNet .pth (or .safetensors) -> DIR (orbax params + config.json);
      pre-train from it with --config.init_from=DIR.
  python -m dropmae_jax.convert export WORKDIR_OR_DIR --out FILE.pth [--encoder-only] [--safetensors]
      our latest checkpoint -> {'model': state_dict} with the released keys, shapes and float32.
  python -m dropmae_jax.convert import-tracker DROPTRACK.pth.tar --out DIR [--config configs/droptrack_got10k.py]
      released DropTrack / OSTrack-CE checkpoint ({'net': state_dict}) -> DIR (orbax params +
      batch_stats + config.json); sizes are read from pos_embed_z/x when no config is given.
  python -m dropmae_jax.convert export-tracker DIR --out FILE.pth.tar
      an imported / fine-tuned tracker -> {'net': state_dict} that the released model loads strict.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from dropmae_jax.config import arguments
from dropmae_jax.config import loading as config_loading
from dropmae_jax.convert import io
from dropmae_jax.convert import layout
from dropmae_jax.models import mae


def fresh_params(config) -> dict:
  """Initialised params of the config's model (the source of anything a file lacks)."""
  model = mae.DropMAE.from_config(config)
  size = config.model.img_size
  rngs = {k: jax.random.key(config.seed + i) for i, k in enumerate(("params", "masking", "asad"))}
  params = jax.jit(model.init)(rngs, jnp.zeros((1, 2, size, size, 3)))["params"]
  return jax.tree.map(np.asarray, params)


def run_import(src: str, out: str, config_path: str | None) -> list[str]:
  state = io.read_torch_state_dict(src)
  layout.check_is_mae_vit(state)
  config = (config_loading.load_config(config_path) if config_path
            else io.infer_model_config(state))
  model = mae.DropMAE.from_config(config)
  grid = config.model.img_size // model.patch_size
  params, report = layout.state_dict_to_params(state, fresh_params(config), grid=grid)
  io.save_params(out, params, config)
  return [f"model {config.model.variant} @ {config.model.img_size}px, decoder "
          f"{config.model.decoder_embed_dim}x{config.model.decoder_depth}"] + report + [
              f"wrote {out}"]


def run_export(src: str, out: str, encoder_only: bool) -> list[str]:
  params, config = io.load_params(src)
  patch = int(config.model.variant.split("/")[1])
  state = layout.params_to_state_dict(params, grid=config.model.img_size // patch,
                                      encoder_only=encoder_only)
  io.write_torch_state_dict(state, out)
  return [f"wrote {len(state)} tensors ({sum(v.size for v in state.values()):,} values) to {out}"]


# Subcommands for a task's weights live with the task and are imported only when asked for, so
# this shared package never imports a task: command -> (module, function(src, out, ...) -> lines).
TASK_COMMANDS = {
    "import-tracker": ("dropmae_jax.track.weights", "run_import_tracker"),
    "export-tracker": ("dropmae_jax.track.weights", "run_export_tracker"),
}


def task_command(command: str):
  import importlib
  module, function = TASK_COMMANDS[command]
  return getattr(importlib.import_module(module), function)


def main(argv=None) -> int:
  parser = arguments.ArgumentParser(prog="python -m dropmae_jax.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  imp = sub.add_parser("import", help="PyTorch checkpoint -> our checkpoint")
  imp.add_argument("src")
  imp.add_argument("--out", required=True)
  imp.add_argument("--config", help="config (installed name or .py file) whose model to fill (default: from the shapes)")
  exp = sub.add_parser("export", help="our checkpoint -> PyTorch {'model': state_dict}")
  exp.add_argument("src", help="a training WORKDIR or an imported DIR")
  exp.add_argument("--out", required=True)
  exp.add_argument("--encoder-only", action="store_true", help="drop decoder keys and mask_token")
  exp.add_argument("--safetensors", action="store_true", help="write safetensors instead of .pth")
  imt = sub.add_parser("import-tracker", help="DropTrack/OSTrack {'net': ...} -> our tracker DIR")
  imt.add_argument("src")
  imt.add_argument("--out", required=True)
  imt.add_argument("--config", help="tracker config, installed name or .py file (default: droptrack defaults with the "
                   "file's template/search sizes)")
  ext = sub.add_parser("export-tracker", help="our tracker DIR -> {'net': state_dict} .pth.tar")
  ext.add_argument("src", help="a DIR written by import-tracker (or the fine-tuning code)")
  ext.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  try:
    if args.command == "import":
      lines = run_import(args.src, args.out, args.config)
    elif args.command == "import-tracker":
      lines = task_command(args.command)(args.src, args.out, args.config)
    elif args.command == "export-tracker":
      lines = task_command(args.command)(args.src, args.out)
    else:
      out = args.out
      if args.safetensors and not out.endswith(".safetensors"):
        out = os.path.splitext(out)[0] + ".safetensors"
      lines = run_export(args.src, out, args.encoder_only)
  except (config_loading.ConfigError, io.ConvertError, layout.LayoutError) as e:
    print(f"error: {e}\nnothing was written.", file=sys.stderr)
    return 2
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
