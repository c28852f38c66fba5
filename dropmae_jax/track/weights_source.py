"""What a tracker `--weights` argument names, read: the one place that resolves it.

`load_tracker_weights(spec)` takes
  * an imported tracker folder (`python -m dropmae_jax.convert import-tracker`: DIR/tracker/ +
    DIR/config.json; also a fine-tuning run's WORKDIR/tracker_weights itself),
  * a DropTrack fine-tuning WORKDIR: its WORKDIR/tracker_weights (written when the run finished),
    or its newest good checkpoint under WORKDIR/checkpoints when that is newer (a run still
    going, stopped early, or resumed for more steps after it finished),
as `vos propagate --weights` takes a pre-training WORKDIR. Every mistake is one ConvertError line
naming the path and the problem. `track run` reads its weights here; `convert export-tracker`
can do the same.
"""
from __future__ import annotations

import os

import ml_collections

from dropmae_jax.convert import io
from dropmae_jax.train.checkpoint import readonly

CHECKPOINTS_DIR = "checkpoints"
TRACKER_TASK = "droptrack"


def _short(e: BaseException) -> str:
  return f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"


def _newest_good_checkpoint(directory: str) -> tuple[dict, ml_collections.ConfigDict, int]:
  """(variables, config, step) of the newest checkpoint in a fine-tuning run's `directory` that
  reads and passes the fingerprint saved with it (read-only: damaged ones are skipped, never
  moved; arrays as numpy, so another device topology's checkpoint reads too)."""
  def wrong_task(step: int, task: str) -> str:
    return (f"{directory}: checkpoint step {step} is a {task!r} run's, not a tracker's; fine-tune "
            f"a tracker from it (config droptrack_*, --config.init_from=WORKDIR) or import "
            f"released weights with `python -m dropmae_jax.convert import-tracker`")

  try:
    return readonly.read_newest_of_task(directory, task=TRACKER_TASK, default_task=TRACKER_TASK,
                                        collections=("params", "batch_stats"),
                                        what="a tracker's", wrong_task=wrong_task)
  except readonly.CheckpointError as e:
    raise io.ConvertError(str(e)) from e


# An imported segmenter (convert import-segmenter) and a DropSeg fine-tuning run's export.
SEGMENTER_FOLDERS = (("segmenter",), ("segmenter_weights", "segmenter"))
SEGMENTER_KEYS = ("mask_patch_embed.", "stcn_decoder.")   # the released DropSeg state dict's


def _refuse_segmenter_file(path: str, spec: str) -> None:
  """A released DropSeg .pth (bare, or its resume file {'network': ...}) is named as one."""
  try:
    from dropmae_jax.convert import torch_pickle
    blob = torch_pickle.load(path).obj
  except Exception:  # pylint: disable=broad-except  (not a torch file: the caller's line)
    return
  state = blob.get("network", blob) if isinstance(blob, dict) else None
  if isinstance(state, dict) and any(str(k).startswith(SEGMENTER_KEYS) for k in state):
    raise io.ConvertError(f"{spec}: a DropSeg segmenter checkpoint ('mask_patch_embed.*', "
                          f"'stcn_decoder.*' keys), not a tracker; segment videos with it via "
                          f"`python -m dropmae_jax.vos segment`")


def _load_imported(path: str, shown: str) -> tuple[dict, ml_collections.ConfigDict]:
  """io.load_tracker with its folder's problems (no config.json, unreadable arrays) in one line."""
  if not os.path.isfile(os.path.join(path, io.CONFIG_FILE)):
    raise io.ConvertError(f"{shown}: no {io.CONFIG_FILE} next to {io.TRACKER_DIR}/ (an imported "
                          "tracker folder has both)")
  try:
    return io.load_tracker(path)
  except io.ConvertError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (orbax / json raise many types)
    raise io.ConvertError(f"{shown}: the tracker weights cannot be read ({_short(e)})") from e


def load_tracker_weights(spec: str) -> tuple[dict, ml_collections.ConfigDict, str]:
  """({'params', 'batch_stats'} as numpy, the weights' config, a one-line description) of an
  imported tracker folder or a fine-tuning WORKDIR (see the module docstring).

  Raises:
    io.ConvertError: `spec` does not exist, is a file, is neither kind of folder, or holds no
      usable tracker weights; one line naming it.
  """
  from dropmae_jax.track.task import EXPORT_DIR
  path = os.path.abspath(spec)
  if not os.path.exists(path):
    raise io.ConvertError(f"{spec}: no such folder")
  if not os.path.isdir(path):
    _refuse_segmenter_file(path, spec)
    raise io.ConvertError(
        f"{spec}: a file, not a tracker folder; a released .pth.tar becomes one with "
        f"`python -m dropmae_jax.convert import-tracker {spec} --out DIR`")
  if any(os.path.isdir(os.path.join(path, *p)) for p in SEGMENTER_FOLDERS):
    raise io.ConvertError(f"{spec}: a DropSeg segmenter (segmenter/ inside), not a tracker; "
                          f"segment videos with it via `python -m dropmae_jax.vos segment`")
  if os.path.isdir(os.path.join(path, io.TRACKER_DIR)):
    variables, config = _load_imported(path, spec)
    return variables, config, f"{spec} (imported tracker)"

  export = os.path.join(path, EXPORT_DIR)
  has_export = os.path.isdir(os.path.join(export, io.TRACKER_DIR))
  checkpoints = os.path.join(path, CHECKPOINTS_DIR)
  steps = readonly.finished_steps(checkpoints)
  if not has_export and not steps:
    raise io.ConvertError(
        f"{spec}: neither an imported tracker ({io.TRACKER_DIR}/ inside) nor a fine-tuning "
        f"workdir ({EXPORT_DIR}/ or {CHECKPOINTS_DIR}/ inside); create an imported tracker with "
        f"`python -m dropmae_jax.convert import-tracker`")
  # The export is written after the run's last checkpoint; a newer checkpoint means the run
  # went on (or is going on) after that export.
  export_time = readonly.modified(os.path.join(export, io.CONFIG_FILE))
  newest_checkpoint_time = (readonly.modified(os.path.join(checkpoints, str(steps[0])))
                            if steps else 0.0)
  if has_export and export_time >= newest_checkpoint_time:
    variables, config = _load_imported(export, os.path.join(spec, EXPORT_DIR))
    return variables, config, f"{os.path.join(spec, EXPORT_DIR)} (the fine-tuning run's export)"
  try:
    variables, config, step = _newest_good_checkpoint(checkpoints)
  except io.ConvertError:
    if not has_export:
      raise
    from absl import logging
    logging.warning("%s: no usable checkpoint newer than %s; using that export", checkpoints,
                    export)
    variables, config = _load_imported(export, os.path.join(spec, EXPORT_DIR))
    return variables, config, f"{os.path.join(spec, EXPORT_DIR)} (the fine-tuning run's export)"
  return variables, config, f"{spec} (fine-tuning checkpoint step {step})"
