"""Weights across the JAX / PyTorch border.

  python -m dropmae_jax.convert import SRC.pth --out DIR [--config k700] [--overwrite]
      released DropMAE / MAE ImageNet .pth (or .safetensors) -> DIR (orbax params + config.json);
      pre-train from it with --config.init_from=DIR.
  python -m dropmae_jax.convert export WORKDIR_OR_DIR --out FILE.pth [--encoder-only] [--safetensors] [--overwrite]
      our latest checkpoint -> {'model': state_dict} with the released keys, shapes and float32.
  python -m dropmae_jax.convert import-tracker DROPTRACK.pth.tar --out DIR [--config droptrack_got10k] [--overwrite]
      released DropTrack / OSTrack-CE checkpoint ({'net': state_dict, ...}) -> DIR (orbax params +
      batch_stats + config.json); without --config every size is read from the tensors.
  python -m dropmae_jax.convert export-tracker DIR --out FILE.pth.tar [--overwrite]
      an imported / fine-tuned tracker -> {'net': state_dict} that the released model loads strict.
  python -m dropmae_jax.convert import-segmenter DROPSEG.pth --out DIR [--config dropseg_davis_ytvos] [--overwrite]
      released DropSeg model file (a plain state dict) -> DIR (orbax params + frozen tables +
      config.json); without --config every size is read from the tensors.
  python -m dropmae_jax.convert export-segmenter DIR --out FILE.pth [--overwrite]
      an imported segmenter -> the plain state dict that the released model loads strict.

Released files are read without running pickled code: tensors and plain data are read, objects of
other classes (MAE's args Namespace, OSTrack's settings) are left out and named in one line. An
existing --out is kept unless --overwrite is given; outputs are written under a temporary name
and renamed into place. `python -m dropmae_jax.convert SUBCOMMAND --help` for each one's arguments.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

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


def run_import(src: str, out: str, config_path: str | None, overwrite: bool = False) -> list[str]:
  io.check_output(out, overwrite, folder=True, ours=io.PARAMS_ENTRIES)
  notes: list[str] = []
  state = io.read_torch_state_dict(src, notes)
  layout.check_is_mae_vit(state)
  config = (config_loading.load_config(config_path) if config_path
            else io.infer_model_config(state))
  model = mae.DropMAE.from_config(config)
  grid = config.model.img_size // model.patch_size
  params, report = layout.state_dict_to_params(state, fresh_params(config), grid=grid)
  io.save_params(out, params, config)
  return [f"model {config.model.variant} @ {config.model.img_size}px, decoder "
          f"{config.model.decoder_embed_dim}x{config.model.decoder_depth}"] + notes + report + [
              f"wrote {out}"]


def run_export(src: str, out: str, encoder_only: bool, overwrite: bool = False) -> list[str]:
  io.check_output(out, overwrite, folder=False)
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
    "import-segmenter": ("dropmae_jax.vos.dropseg.weights", "run_import_segmenter"),
    "export-segmenter": ("dropmae_jax.vos.dropseg.weights", "run_export_segmenter"),
}


def task_command(command: str):
  import importlib
  module, function = TASK_COMMANDS[command]
  return getattr(importlib.import_module(module), function)


EXAMPLES = {
    "import": "  python -m dropmae_jax.convert import DropMAE_k700_800ep.pth --out pretrained/k700",
    "export": "  python -m dropmae_jax.convert export runs/k700 --out k700_dropmae.pth",
    "import-tracker": ("  python -m dropmae_jax.convert import-tracker DropTrack_got10k.pth.tar "
                       "--out trackers/got10k"),
    "export-tracker": ("  python -m dropmae_jax.convert export-tracker trackers/got10k "
                       "--out DropTrack_got10k_ours.pth.tar"),
    "import-segmenter": ("  python -m dropmae_jax.convert import-segmenter DropSeg_davis.pth "
                         "--out segmenters/davis"),
    "export-segmenter": ("  python -m dropmae_jax.convert export-segmenter segmenters/davis "
                         "--out DropSeg_davis_ours.pth"),
}
OVERWRITE_HELP = ("replace an existing --out (default: off: a finished output is kept and the "
                  "command stops with an error; either way the output is written under a "
                  "temporary name and renamed into place, never half-written)")


def _add_subcommand(sub, name: str, help_text: str, description: str, formatter):
  return sub.add_parser(name, help=help_text, description=textwrap.fill(description, 96),
                        epilog=f"example:\n{EXAMPLES[name]}", formatter_class=formatter)


def build_parser() -> argparse.ArgumentParser:
  parser = arguments.ArgumentParser(prog="python -m dropmae_jax.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  formatter = parser.formatter_class   # subcommands print their examples as written, too

  imp = _add_subcommand(sub, "import", "PyTorch checkpoint -> our checkpoint",
                        "A released DropMAE / MAE ImageNet checkpoint (.pth, .pth.tar, "
                        ".safetensors) -> an imported checkpoint folder (orbax params + "
                        "config.json); pre-train from it with --config.init_from=DIR.", formatter)
  imp.add_argument("src", help="the checkpoint file ({'model': state_dict, ...} as MAE's "
                   "save_model writes it, or a bare state dict); its other entries (optimizer, "
                   "args...) are not imported, and no pickled code is run")
  imp.add_argument("--out", required=True, help="the folder to write (required)")
  imp.add_argument("--config", help="config whose model to fill: an installed name (k700, demo) "
                   "or a .py file (default: the DropMAE defaults with the model read from the "
                   "tensors' shapes)")
  imp.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)

  exp = _add_subcommand(sub, "export", "our checkpoint -> PyTorch {'model': state_dict}",
                        "Our pre-training weights -> {'model': state_dict} with the released "
                        "keys, shapes and float32 (what DropMAE / DropTrack load).", formatter)
  exp.add_argument("src", help="a training WORKDIR (its newest good checkpoint) or an imported "
                   "folder")
  exp.add_argument("--out", required=True, help="the file to write (required); .safetensors "
                   "with --safetensors")
  exp.add_argument("--encoder-only", action="store_true", help="drop decoder keys and "
                   "mask_token (default: off: the whole model)")
  exp.add_argument("--safetensors", action="store_true", help="write a flat safetensors file "
                   "instead of a .pth (default: off)")
  exp.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)

  imt = _add_subcommand(sub, "import-tracker", "DropTrack/OSTrack {'net': ...} -> our tracker DIR",
                        "A released DropTrack / OSTrack-CE checkpoint (the trainer's {'net': "
                        "state_dict, 'settings', ...}) or our export-tracker file -> a tracker "
                        "folder (orbax params + batch_stats + config.json) for `python -m "
                        "dropmae_jax.track run --weights DIR`. The file's BatchNorm "
                        "num_batches_tracked counters are kept for export-tracker.", formatter)
  imt.add_argument("src", help="the checkpoint file (.pth.tar / .pth); its other entries "
                   "(optimizer, stats, settings...) are not imported, and no pickled code is run")
  imt.add_argument("--out", required=True, help="the tracker folder to write (required)")
  imt.add_argument("--config", help="tracker config: an installed name (droptrack_got10k, "
                   "droptrack_demo) or a .py file; the file's tensors must fit it (default: our "
                   "export's own config, else the DropTrack defaults with every size read from "
                   "the tensors: ViT size, depth, template / search / pre-training sizes, head "
                   "channels; the CE layers are not in the tensors: the defaults')")
  imt.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)

  ext = _add_subcommand(sub, "export-tracker", "our tracker DIR -> {'net': state_dict} .pth.tar",
                        "Our tracker -> {'net': state_dict} in the released key order, which the "
                        "released OSTrack model loads strict; the config rides along as a plain "
                        "'dropmae_jax' entry that import-tracker reads back.", formatter)
  ext.add_argument("src", help="a tracker folder (written by import-tracker or a fine-tuning "
                   "run's tracker_weights) or a fine-tuning WORKDIR")
  ext.add_argument("--out", required=True, help="the .pth.tar file to write (required)")
  ext.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)

  ims = _add_subcommand(sub, "import-segmenter", "DropSeg state dict -> our segmenter DIR",
                        "A released DropSeg model file (the plain state_dict() its training "
                        "saves as <id>_<iteration>.pth) or our export-segmenter file -> a "
                        "segmenter folder (orbax params + frozen position tables + config.json). "
                        "Strict: every key of the released layout must be there, with its "
                        "shape, and nothing else.", formatter)
  ims.add_argument("src", help="the state dict file (.pth); no pickled code is run")
  ims.add_argument("--out", required=True, help="the segmenter folder to write (required)")
  ims.add_argument("--config", help="segmenter config: an installed name (dropseg_davis_ytvos, "
                   "dropseg_demo) or a .py file; the file's tensors must fit it (default: the "
                   "DropSeg defaults with every size read from the tensors)")
  ims.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)

  exs = _add_subcommand(sub, "export-segmenter", "our segmenter DIR -> DropSeg state dict .pth",
                        "Our segmenter -> a plain state dict in the released key order, which "
                        "the released DropSeg network loads strict.", formatter)
  exs.add_argument("src", help="a segmenter folder (written by import-segmenter)")
  exs.add_argument("--out", required=True, help="the .pth file to write (required)")
  exs.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.command == "import":
      lines = run_import(args.src, args.out, args.config, args.overwrite)
    elif args.command in ("import-tracker", "import-segmenter"):
      lines = task_command(args.command)(args.src, args.out, args.config,
                                         overwrite=args.overwrite)
    elif args.command in ("export-tracker", "export-segmenter"):
      lines = task_command(args.command)(args.src, args.out, overwrite=args.overwrite)
    else:
      out = args.out
      if args.safetensors and not out.endswith(".safetensors"):
        out = os.path.splitext(out)[0] + ".safetensors"
      lines = run_export(args.src, out, args.encoder_only, args.overwrite)
  except (config_loading.ConfigError, io.ConvertError, layout.LayoutError) as e:
    message = " ".join(str(e).split())   # one line, whatever the message
    print(f"error: {message} (nothing was written)", file=sys.stderr)
    return 2
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
