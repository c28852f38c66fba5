"""Label propagation during pre-training: `davis_jf` of the current encoder every N steps.

The training loop calls, every `config.eval.label_propagation_every` steps (on every process:
with sharded params the encoder runs as a collective; only process 0 writes files),

  scores = label_propagation_eval(state.params, config, step, workdir)   # {'davis_jf': ...}

and logs the returned numbers. It propagates the first-frame masks of `config.eval.davis_root`
(a DAVIS-layout root, or 'synthetic': the set of `vos/synthetic.py`, built once under
WORKDIR/vos_synthetic) with the frozen encoder, scores them with the davis2017-evaluation J&F
(values in [0, 1], as the toolkit prints them; papers quote x100), and writes
  WORKDIR/label_propagation/latest/<seq>/<frame>.png   the masks of the latest evaluation
  WORKDIR/label_propagation/scores_<step>.json          the toolkit's per-object numbers
  WORKDIR/figures/label_propagation_<step>.png          ground truth vs propagated masks
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax
import ml_collections
import numpy as np

from dropmae_jax.vos import davis
from dropmae_jax.vos import features as features_lib
from dropmae_jax.vos import metrics
from dropmae_jax.vos import propagate

SYNTHETIC = "synthetic"
SYNTHETIC_DIR = "vos_synthetic"
_FIGURE_SEQUENCES = 3
_FIGURE_FRAMES = 6


def default_eval_config() -> ml_collections.ConfigDict:
  """The `config.eval` fields this module reads, with their defaults (their home: configlib)."""
  from dropmae_jax.config import defaults as configlib
  return configlib.eval_defaults()


def synthetic_eval_config() -> ml_collections.ConfigDict:
  """`default_eval_config` for the small synthetic set (224x160 frames) at its native size:
  16-px multiples and a neighbourhood of 4 patches (DINO's 12 of 30 rows, scaled to 10)."""
  e = default_eval_config()
  e.davis_root = SYNTHETIC
  e.vos.short_side = -1
  e.vos.size_multiple = 16
  e.vos.size_mask_neighborhood = 4
  return e


def resolve_root(root: str, workdir: str, is_main: bool = True) -> str:
  """The DAVIS root to read; 'synthetic' builds WORKDIR/vos_synthetic once (4 x 24 frames)."""
  if root != SYNTHETIC:
    return root
  target = os.path.join(workdir, SYNTHETIC_DIR)
  if not os.path.isdir(target) and is_main:
    from dropmae_jax.vos import synthetic as make_vos_sequences
    try:
      make_vos_sequences.make_dataset(target, val=4, frames=24, size=(224, 160), seed=0,
                                      progress=False)
    except FileExistsError:
      pass   # another process finished it first (the set appears by an atomic rename)
  return target


_ENCODERS: dict[str, features_lib.FrameEncoder] = {}


def _encoder(params, config: ml_collections.ConfigDict) -> features_lib.FrameEncoder:
  """One FrameEncoder (and its compiled functions) per model + evaluation settings."""
  v = config.eval.vos
  key = json.dumps([config.model.to_dict(), config.asad.to_dict(), v.frame_embed, v.dtype,
                    v.batch_size], sort_keys=True, default=str)
  if key not in _ENCODERS:
    _ENCODERS[key] = features_lib.FrameEncoder(params, config, frame_embed=v.frame_embed,
                                               dtype=v.dtype, batch_size=v.batch_size)
  encoder = _ENCODERS[key]
  encoder.params = params
  return encoder


def label_propagation_eval(params, config: ml_collections.ConfigDict, step: int,
                           workdir: str) -> dict[str, float]:
  """Propagates and scores the configured DAVIS-layout set with the current encoder params.

  Returns {'davis_jf', 'davis_j', 'davis_f'} (J&F-Mean, J-Mean, F-Mean in [0, 1]).
  """
  e = config.eval
  is_main = jax.process_index() == 0
  root = resolve_root(e.davis_root, workdir, is_main)
  names = [s for s in e.davis_sequences.split(",") if s] or None
  dataset = davis.DavisDataset(root, subset=e.davis_subset, year=e.davis_year, sequences=names)
  encoder = _encoder(params, config)
  protocol = propagate.Protocol.from_config(e.vos)
  base = os.path.join(workdir, "label_propagation") if is_main else tempfile.mkdtemp()
  out_dir = os.path.join(base, "latest")
  staging = os.path.join(base, f".step_{step:08d}.tmp-{os.getpid()}")
  shutil.rmtree(staging, ignore_errors=True)
  propagate.run(encoder, dataset, staging, protocol, progress=False)
  scores = metrics.evaluate(dataset, staging)
  if os.path.exists(out_dir):
    shutil.rmtree(out_dir)
  os.replace(staging, out_dir)
  result = {"davis_jf": scores["global"]["J&F-Mean"], "davis_j": scores["global"]["J-Mean"],
            "davis_f": scores["global"]["F-Mean"]}
  if is_main:
    tmp = os.path.join(base, f"scores_{step:08d}.json.tmp")
    with open(tmp, "w") as f:
      json.dump({"step": step, **scores}, f, indent=2)
    os.replace(tmp, os.path.join(base, f"scores_{step:08d}.json"))
    figure_path = os.path.join(workdir, "figures", f"label_propagation_{step:08d}.png")
    propagation_figure(dataset, out_dir, figure_path,
                       title=f"label propagation, step {step}: J&F {result['davis_jf']:.3f}")
  else:
    shutil.rmtree(base, ignore_errors=True)
  return result


def propagation_figure(dataset: davis.DavisDataset, results_dir: str, path: str,
                       title: str = "") -> str:
  """PNG: for the first few sequences, ground truth (top row) and propagated masks (bottom row)
  blended over evenly spaced frames."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  sequences = list(dataset)[:_FIGURE_SEQUENCES]
  fig = Figure(figsize=(2.2 * _FIGURE_FRAMES, 3.2 * len(sequences)))
  FigureCanvasAgg(fig)
  axes = fig.subplots(2 * len(sequences), _FIGURE_FRAMES, squeeze=False)
  for s, seq in enumerate(sequences):
    picks = np.unique(np.linspace(0, seq.num_frames - 1, _FIGURE_FRAMES).round().astype(int))
    frames = dataset.read_frames(seq, picks)
    for c in range(_FIGURE_FRAMES):
      for r, label in ((0, "ground truth"), (1, "propagated")):
        ax = axes[2 * s + r, c]
        ax.axis("off")
        if c >= len(picks):
          continue
        t = int(picks[c])
        if r == 0:
          png = seq.annotations[t]
          ids = dataset._ids(davis.read_ids_png(png)) if png else np.zeros(frames.shape[1:3],
                                                                            np.uint8)
        else:
          ids = davis.read_ids_png(os.path.join(results_dir, seq.name,
                                                f"{seq.frame_ids[t]}.png"))
        colour = davis.DAVIS_PALETTE[ids].astype(np.float32)
        alpha = np.where(ids[..., None] > 0, 0.55, 0.0)
        ax.imshow((frames[c] * (1 - alpha) + colour * alpha).astype(np.uint8))
        ax.set_title(f"{seq.name} {seq.frame_ids[t]} ({label})", fontsize=7)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}.png"
  fig.savefig(tmp, dpi=80)
  os.replace(tmp, path)
  return path
