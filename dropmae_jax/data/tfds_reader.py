"""Read side of the TFDS frame dataset (tfds_kinetics): the same reader interface as FrameStore.

`TfdsFrames(name, data_dir)` is what `config.data.format='tfds'` trains on: pipeline.py sees a
reader with `len`, `read_sampled_frames`, `describe` (as for FrameStore and VideoFiles), so pair
sampling, augmentation, determinism, per-host sharding and resume are the same code. Records come
through `tfds.data_source(...)` (ArrayRecord, random access, no TensorFlow); a video's frames are
consecutive records, found from the per-split frame counts in the dataset's metadata.json.
"""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
from PIL import Image

from dropmae_jax.data import frame_store

SPLIT = "train"
INSTALL_HINT = 'pip install -e ".[tfds]"'


def _tfds():
  if importlib.util.find_spec("tensorflow_datasets") is None:
    raise ValueError("config.data.format='tfds' needs tensorflow-datasets and array_record: "
                     f"{INSTALL_HINT}")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


class TfdsFrames:
  """`len(reader)` videos of one split; `read_sampled_frames(i, choose)` like FrameStore's.

  Picklable (grain workers): a pickle carries the frame counts, and each process opens its own
  `tfds.data_source` lazily.

  Args:
    name: `config.data.tfds_name`, 'kinetics_frames' or 'kinetics_frames:1.0.0'.
    data_dir: `config.data.tfds_data_dir` ('' = TFDS's default: $TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    split: which split's videos.
  Raises:
    ValueError / FileNotFoundError naming the config field when the dataset is not there.
  """

  def __init__(self, name: str, data_dir: str = "", split: str = SPLIT):
    tfds = _tfds()
    if data_dir and not os.path.isdir(data_dir):
      raise FileNotFoundError(f"config.data.tfds_data_dir={data_dir!r} is not a directory")
    try:
      builder = tfds.builder(name, data_dir=data_dir or None)
    except Exception as e:  # DatasetNotFoundError, a bad name or version: all the user's to fix
      raise ValueError(f"config.data.tfds_name={name!r}: no such TFDS dataset in "
                       f"config.data.tfds_data_dir={data_dir!r} ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}); build it with tfds build "
                       "dropmae_jax/data/tfds_kinetics.py (or python -m "
                       "dropmae_jax.data.tfds_kinetics) --manual_dir=VIDEOS "
                       "--data_dir=DATA_DIR") from e
    if not builder.is_prepared():
      raise FileNotFoundError(
          f"config.data.tfds_name={name!r} is not built in config.data.tfds_data_dir="
          f"{data_dir!r} (looked in {os.fspath(builder.data_dir)}); build it with python -m "
          "dropmae_jax.data.tfds_kinetics --manual_dir=VIDEOS --data_dir=DATA_DIR")
    if split not in builder.info.splits:
      raise ValueError(f"config.data.tfds_name={name!r} has no split {split!r} (it has "
                       f"{sorted(builder.info.splits)})")
    self.directory = os.fspath(builder.data_dir)
    meta_path = os.path.join(self.directory, "metadata.json")
    try:
      with open(meta_path) as f:
        counts = json.load(f)["splits"][split]["frame_counts"]
    except (OSError, KeyError, ValueError) as e:
      raise ValueError(f"config.data.tfds_name={name!r}: {meta_path} has no frame counts for "
                       f"split {split!r}: not a dataset built by tfds_kinetics") from e
    self._counts = np.asarray(counts, np.int64)
    num_records = builder.info.splits[split].num_examples
    if len(self._counts) == 0 or int(self._counts.sum()) != num_records:
      raise ValueError(f"{meta_path}: {int(self._counts.sum())} frames in the counts of split "
                       f"{split!r}, but {num_records} records; rebuild the dataset")
    self._first_frame = np.concatenate([[0], np.cumsum(self._counts)[:-1]])
    self._name, self._data_dir, self._split = name, data_dir, split
    self._source = None

  def __len__(self) -> int:
    return len(self._counts)

  def __getstate__(self):
    return {**self.__dict__, "_source": None}

  def __repr__(self) -> str:
    return f"TfdsFrames({self._name!r}, split={self._split!r}, videos={len(self)})"

  def _records(self):
    if self._source is None:
      # Raw bytes, parsed below: TFDS's generic numpy decoding of all seven features costs ~10x
      # the read (~0.2 ms a record), where the pair sampler needs the JPEG alone.
      tfds = _tfds()
      self._source = tfds.data_source(self._name, split=self._split,
                                      data_dir=self._data_dir or None, download=False,
                                      deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    return self._source

  def num_frames(self, i: int) -> int:
    return int(self._counts[i])

  def _raw(self, i: int, t: int) -> bytes:
    if not 0 <= t < self.num_frames(i):
      raise IndexError(f"frame {t} of video {i} out of range [0, {self.num_frames(i)})")
    return self._records()[int(self._first_frame[i]) + int(t)]

  def record(self, i: int, t: int) -> dict:
    """Video i's frame t as the stored example (jpeg, video_index, frame_index, video_path, ...)."""
    raw = self._raw(i, t)
    return self._records().dataset_info.features.deserialize_example_np(raw)

  def _bytes_feature(self, i: int, t: int, key: str) -> bytes:
    # The records are tf.train.Example protos (TFDS's own copy of the proto: no TensorFlow).
    from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
    example = tf_example_pb2.Example.FromString(self._raw(i, t))
    return example.features.feature[key].bytes_list.value[0]

  def jpeg(self, i: int, t: int) -> bytes:
    """Frame t of video i as the stored JPEG bytes."""
    return self._bytes_feature(i, t, "jpeg")

  def frame(self, i: int, t: int) -> Image.Image:
    """Frame t of video i as an RGB PIL image (np.asarray gives uint8 (H, W, 3))."""
    return frame_store.decode_jpeg(self.jpeg(i, t))

  def video_info(self, i: int) -> dict:
    """path (relative to its split folder), label, fps, num_frames, source index of video i."""
    if not 0 <= i < len(self):
      raise IndexError(f"video {i} out of range [0, {len(self)})")
    rec = self.record(i, 0)
    text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
    return {"path": text(rec["video_path"]), "label": text(rec["label"]),
            "fps": float(rec["fps"]), "num_frames": int(rec["num_frames"]),
            "video_index": int(rec["video_index"])}

  def read_sampled_frames(self, i: int, choose) -> tuple[list[Image.Image], tuple[int, ...]]:
    """choose(num_frames) -> frame indices; returns (the k frames as RGB PIL images, indices)."""
    indices = tuple(int(t) for t in choose(self.num_frames(i)))
    return [self.frame(i, t) for t in indices], indices

  def describe(self, i: int) -> str:
    # The pair sampler names every item's video (for messages): one raw read, no full decode.
    return f"{self.directory}:{self._bytes_feature(i, 0, 'video_path').decode()}"
