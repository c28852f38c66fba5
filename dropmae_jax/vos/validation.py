"""J&F of the segmenter during DropSeg fine-tuning: one-shot segmentation (frame 0 and its mask are
the only memory, as jimmy-dq/DropSeg `submit_eval_davis17.py`) of the first N sequences of a
DAVIS-layout folder, scored as davis2017-evaluation (semi-supervised: first and last frame left
out; J&F-Mean = mean of the per-object J and F means). Values in [0, 1].
"""
from __future__ import annotations

import jax
import ml_collections

from dropmae_jax.vos import davis
from dropmae_jax.vos import metrics
from dropmae_jax.vos.dropseg import inference
from dropmae_jax.vos.dropseg import model as model_lib

SYNTHETIC = "synthetic"


def resolve_val_root(config: ml_collections.ConfigDict, workdir: str) -> str:
  """config.data.val_root; 'synthetic' = the pipeline's synthetic DAVIS-layout set (made once)."""
  root = str(config.data.val_root)
  if root != SYNTHETIC:
    return root
  from dropmae_jax.vos.inputs import pipeline as vos_pipeline
  return vos_pipeline.ensure_synthetic(workdir, config.data)


def val_dataset(config: ml_collections.ConfigDict, workdir: str) -> davis.DavisDataset | None:
  """The sequences scored: the first config.val_sequences of data.val_root's data.val_subset
  (< 0 all); None when there is nothing to score ('' root or val_sequences 0)."""
  if not str(config.data.val_root) or int(config.val_sequences) == 0:
    return None
  root = resolve_val_root(config, workdir)
  dataset = davis.DavisDataset(root, subset=str(config.data.val_subset), year="2017")
  n = int(config.val_sequences)
  if 0 < n < len(dataset.names):
    dataset.names = dataset.names[:n]
  return dataset


def score_segmenter(segmenter: inference.OneShotSegmenter, dataset: davis.DavisDataset
                    ) -> dict[str, float]:
  """{'val_jf', 'val_j', 'val_f'}: J&F-Mean, J-Mean, F-Mean over every object of `dataset`."""
  scores = {m: {"M": [], "R": [], "D": []} for m in ("J", "F")}
  for seq in dataset:
    frames = dataset.read_frames(seq)
    gt, k = dataset.read_annotations(seq)
    result = inference.segment_sequence(segmenter, frames, gt[0])
    j, f = metrics.evaluate_sequence(gt[1:-1], result[1:-1], k)
    for obj in range(k):
      for measure, values in (("J", j[obj]), ("F", f[obj])):
        for key, value in zip(("M", "R", "D"), metrics.db_statistics(values)):
          scores[measure][key].append(value)
  row = metrics.global_measures(scores)
  return {"val_jf": row["J&F-Mean"], "val_j": row["J-Mean"], "val_f": row["F-Mean"]}


def evaluation_model(model: model_lib.DropSeg) -> model_lib.DropSeg:
  """The model the released evaluation builds: float32 (no --amp), no drop-path."""
  return model.clone(dtype="float32", drop_path_rate=0.0)


def segmenter_for(model: model_lib.DropSeg, variables: dict,
                  cached: inference.OneShotSegmenter | None = None) -> inference.OneShotSegmenter:
  """A OneShotSegmenter of `evaluation_model(model)` holding numpy {'params', 'frozen'}; `cached`
  (an earlier one of the same model) gets the new variables and keeps its compiled programs."""
  variables = {c: variables[c] for c in ("params", model_lib.FROZEN)}
  if cached is None:
    return inference.OneShotSegmenter(evaluation_model(model), variables)
  cached.variables = jax.device_put(variables)
  return cached
