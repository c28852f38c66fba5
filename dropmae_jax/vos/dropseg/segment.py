"""Running a DropSeg segmenter over a dataset: DAVIS-2017 / 2016 and YouTube-VOS result folders.

As jimmy-dq/DropSeg `submit_eval_davis17.py` / `submit_eval_davis16.py` (one-shot from the first
frame; palette PNGs, DAVIS-2016 writing its one merged object as 0/255), and for YouTube-VOS the
challenge's submission layout (Annotations/<video>/<frame>.png with the original object ids, in
a zip with Annotations/ at its top). Each sequence is written into a temporary folder and renamed
into place when complete, so a failure never leaves a half-written sequence; finished sequences
are kept unless `overwrite` (`propagate.select_sequences` decides, as for `vos propagate`).
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from dropmae_jax.convert import outputs
from dropmae_jax.vos import davis
from dropmae_jax.vos import propagate
from dropmae_jax.vos import youtube
from dropmae_jax.vos.dropseg import inference

ANNOTATIONS = "Annotations"          # YouTube-VOS results: OUT/Annotations/<video>/<frame>.png
SUBMISSION = "submission.zip"        # OUT/submission.zip: Annotations/<video>/<frame>.png
DAVIS16_OBJECT = 255                 # submit_eval_davis16.py writes the object as 255


class LazyFrames(Sequence):
  """A sequence's frames, decoded on access (`inference.segment_video` reads them a chunk ahead
  of the device)."""

  def __init__(self, count: int, read: Callable[[int], np.ndarray]):
    self._count, self._read = count, read

  def __len__(self) -> int:
    return self._count

  def __getitem__(self, t: int) -> np.ndarray:
    if not 0 <= t < self._count:
      raise IndexError(t)
    return self._read(t)


def _check_length(seq: davis.VosSequence) -> None:
  if seq.num_frames < 2:
    raise davis.VosDataError(f"sequence {seq.name}: {seq.num_frames} frame in "
                             f"{os.path.dirname(seq.frames[0])}; one-shot segmentation needs at "
                             "least 2")


def davis_labels(segmenter: inference.OneShotSegmenter, dataset: davis.DavisDataset,
                 seq: davis.VosSequence) -> Iterator[tuple[int, np.ndarray]]:
  """(t, uint8 (H, W) values to write) of a DAVIS sequence; DAVIS-2016: 0 / 255."""
  _check_length(seq)
  first_ids, _ = dataset.reference(seq)     # ids 1..K, void -> 0; names the file if not
  frames = LazyFrames(seq.num_frames, lambda t: dataset.read_frames(seq, [t])[0])
  scale = DAVIS16_OBJECT if dataset.year == "2016" else 1
  for t, labels in inference.segment_video(segmenter, frames, {0: first_ids}):
    yield t, labels * np.uint8(scale)


def youtube_labels(segmenter: inference.OneShotSegmenter, dataset: youtube.YouTubeVOS,
                   seq: davis.VosSequence) -> Iterator[tuple[int, np.ndarray]]:
  """(t, uint8 (H, W) object ids) of a YouTube-VOS video: each object one-shot from its first
  annotated frame, absent before it, its annotation on it."""
  _check_length(seq)
  size = dataset.read_frame(seq, 0).shape[:2]
  annotations = dataset.annotations(seq, size)
  frames = LazyFrames(seq.num_frames, lambda t: dataset.read_frame(seq, t, size))
  yield from inference.segment_video(segmenter, frames, annotations)


def run(segmenter: inference.OneShotSegmenter, dataset, out_dir: str,
        sequences: list[davis.VosSequence], progress: bool = True) -> list[str]:
  """Segments `sequences` of `dataset` (a DavisDataset or a YouTubeVOS) into
  out_dir/<seq>/<frame>.png (module docstring; `propagate.write_sequences` writes them). Returns
  their names."""
  labels_of = youtube_labels if isinstance(dataset, youtube.YouTubeVOS) else davis_labels
  return propagate.write_sequences(out_dir, sequences,
                                   lambda seq: labels_of(segmenter, dataset, seq),
                                   desc="segment", progress=progress)


def write_submission(out: str, dataset: youtube.YouTubeVOS) -> str:
  """OUT/submission.zip holding Annotations/<video>/<frame>.png of every video of `dataset`
  (written to a temporary sibling and renamed). Returns its path."""
  results = os.path.join(out, ANNOTATIONS)
  path = os.path.join(out, SUBMISSION)
  with outputs.staged_file(path) as tmp:
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
      for seq in dataset:
        for frame in seq.frame_ids:
          archive.write(os.path.join(results, seq.name, f"{frame}.png"),
                        f"{ANNOTATIONS}/{seq.name}/{frame}.png")
  return path
