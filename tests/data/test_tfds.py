"""TFDS frame dataset: frame-exact vs the frame store and the video, same pipeline, resumable build."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

tfds = pytest.importorskip(
    "tensorflow_datasets",
    reason='tensorflow-datasets is not installed (pip install -e ".[tfds]")')

import av  # noqa: E402
from PIL import Image  # noqa: E402

from dropmae_jax.config import defaults as configlib  # noqa: E402
from dropmae_jax.data import build_frame_store  # noqa: E402
from dropmae_jax.data import frame_store  # noqa: E402
from dropmae_jax.pretrain import pipeline  # noqa: E402
from dropmae_jax.data import samples  # noqa: E402
from dropmae_jax.data import tfds_kinetics  # noqa: E402
from dropmae_jax.data import tfds_reader  # noqa: E402

# Two 176x144 clips of 120 frames; short side 128 makes the build resize them (as 256 does
# Kinetics' 340x256 and larger clips), so the resize path is covered too.
CLIPS = ("carphone_distorted.mp4", "carphone_pristine.mp4")
SHORT_SIDE, QUALITY = 128, 90


def test_tensorflow_is_not_installed():
  # Everything in this file runs without it: the point of the TFDS path.
  assert importlib.util.find_spec("tensorflow") is None


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  return samples.make_sample_tree(str(tmp_path_factory.mktemp("clips")), clips=CLIPS)


def build(tree, data_dir, **kwargs):
  builder = tfds_kinetics.KineticsFrames(data_dir=str(data_dir), short_side=SHORT_SIDE,
                                         quality=QUALITY, workers=2, **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(tree)))
  return builder


@pytest.fixture(scope="module")
def data_dir(tree, tmp_path_factory):
  out = tmp_path_factory.mktemp("tfds")
  build(tree, out, videos_per_shard=1)
  return str(out)


@pytest.fixture(scope="module")
def store(tree, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("store"))
  build_frame_store.build(tree, out, short_side=SHORT_SIDE, quality=QUALITY, workers=1,
                          progress=False)
  return frame_store.FrameStore(out)


def decode_resized(path):
  """Independent reference: every frame via PyAV, bicubic to short side SHORT_SIDE with PIL."""
  out = []
  with av.open(path) as container:
    for frame in container.decode(video=0):
      img = frame.to_image()
      w, h = img.size
      k = SHORT_SIDE / min(w, h)
      out.append(np.asarray(img.resize((round(w * k), round(h * k)), Image.BICUBIC)))
  return np.stack(out)


def test_dataset_layout_and_info(data_dir):
  builder = tfds.builder("kinetics_frames", data_dir=data_dir)
  assert builder.is_prepared() and str(builder.version) == "1.0.0"
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  assert list(builder.info.splits) == ["train"]   # no train/ folder, validation_fraction 0
  assert builder.info.splits["train"].num_examples == 240
  assert builder.info.splits["train"].num_shards == 2   # one video per shard
  # The partial build folder is gone once the dataset is complete.
  assert not [f for f in os.listdir(os.path.join(data_dir, "downloads")) if "partial" in f]


def test_records_equal_the_frame_store_and_the_video(tree, data_dir, store):
  reader = tfds_reader.TfdsFrames("kinetics_frames", data_dir)
  assert len(reader) == len(store) == 2
  source = tfds.data_source("kinetics_frames", split="train", data_dir=data_dir, download=False)
  for i, clip in enumerate(CLIPS):
    info = reader.video_info(i)
    stem = os.path.splitext(clip)[0]
    assert info == {"path": f"{stem}/{clip}", "label": stem, "fps": pytest.approx(29.97, abs=0.01),
                    "num_frames": 120, "video_index": i}
    assert reader.describe(i).endswith(f"{stem}/{clip}")
    assert reader.num_frames(i) == store.num_frames(i) == 120
    # Same bytes as the frame store, frame by frame (one encoder for both) ...
    for t in (0, 1, 57, 119):
      assert reader.jpeg(i, t) == store._records()[int(store._first_frame[i]) + t]
      rec = source[120 * i + t]   # TFDS's own decoding agrees on the record layout
      assert rec["jpeg"] == reader.jpeg(i, t)
      assert (int(rec["video_index"]), int(rec["frame_index"])) == (i, t)
    # ... and those are the video's frames: resized, JPEG-close, and the right ones.
    ref = decode_resized(os.path.join(tree, stem, clip))
    assert ref.shape == (120, 128, 156, 3)
    frames, idx = reader.read_sampled_frames(i, lambda n: (10, n // 2, n - 1))
    got = np.stack([np.asarray(f) for f in frames]).astype(int)
    assert got.shape == (3, 128, 156, 3)
    err = np.abs(got - ref[list(idx)]).mean()
    shifted = np.abs(got - ref[[j - 10 for j in idx]]).mean()
    assert err < 3.0, f"{clip}: mean JPEG error {err:.2f}"
    assert err < 0.5 * shifted, f"{clip}: frame identity unclear ({err:.2f} vs {shifted:.2f})"


def test_splits_from_train_and_val_folders(tree, tmp_path):
  manual = tmp_path / "kinetics"
  for split, clip in (("train", CLIPS[0]), ("val", CLIPS[1])):
    stem = os.path.splitext(clip)[0]
    (manual / split / stem).mkdir(parents=True)
    os.symlink(os.path.join(tree, stem, clip), manual / split / stem / clip)
  sources = tfds_kinetics.split_sources(str(manual), validation_fraction=0.0)
  assert {s: [os.path.basename(p) for p in v[1]] for s, v in sources.items()} == {
      "train": [CLIPS[0]], "validation": [CLIPS[1]]}


def test_hash_split_is_deterministic_and_near_the_fraction(tmp_path):
  for c in range(4):
    (tmp_path / f"class_{c}").mkdir()
    for k in range(50):
      (tmp_path / f"class_{c}" / f"clip_{k}.mp4").touch()   # listing only: nothing is decoded
  a = tfds_kinetics.split_sources(str(tmp_path), validation_fraction=0.25)
  b = tfds_kinetics.split_sources(str(tmp_path), validation_fraction=0.25)
  assert a == b
  n_val = len(a["validation"][1])
  assert len(a["train"][1]) + n_val == 200 and 30 <= n_val <= 70   # binomial(200, .25): 50 +- 6
  assert not set(a["train"][1]) & set(a["validation"][1])
  assert list(tfds_kinetics.split_sources(str(tmp_path), 0.0)) == ["train"]
  with pytest.raises(ValueError, match="validation_fraction"):
    tfds_kinetics.split_sources(str(tmp_path), 1.0)


def test_interrupted_build_keeps_finished_shards(tree, tmp_path):
  builder = tfds_kinetics.KineticsFrames(data_dir=str(tmp_path), short_side=SHORT_SIDE,
                                         quality=QUALITY, workers=1, videos_per_shard=1)
  # As if killed after the first shard: the build's own steps, for shard 0 only.
  partial = builder._partial_dir(type("DL", (), {"download_dir": str(tmp_path / "downloads")}))
  jobs = builder._jobs(str(tree), partial)
  tfds_kinetics._reuse_or_reset(partial, builder._settings(str(tree), jobs))
  tfds_kinetics.write_shard(jobs["train"][0])
  done = os.stat(os.path.join(partial, "train-00000.array_record"))
  build(tree, tmp_path, videos_per_shard=1)
  shard0 = os.path.join(str(tmp_path), "kinetics_frames", "1.0.0",
                        "kinetics_frames-train.array_record-00000-of-00002")
  assert os.stat(shard0).st_ino == done.st_ino   # the finished shard was linked, not redone
  assert len(tfds_reader.TfdsFrames("kinetics_frames", str(tmp_path))) == 2


def data_config():
  cfg = configlib.pretrain_defaults().data
  cfg.num_workers = 0
  cfg.read_threads = 1
  return cfg


def test_pipeline_on_tfds_equals_the_frame_store(data_dir, store):
  """Same clips, same seed: identical batches (same sampler, same JPEGs)."""
  reader = tfds_reader.TfdsFrames("kinetics_frames", data_dir)
  batches = {}
  for name, source in (("tfds", reader), ("frames", store)):
    it = pipeline.make_train_iterator(data_config(), source, img_size=32, per_host_batch=4,
                                      seed=3)
    batches[name] = [next(it) for _ in range(2)]
    it.close()
  for a, b in zip(batches["tfds"], batches["frames"]):
    np.testing.assert_array_equal(a["frames"], b["frames"])
    np.testing.assert_array_equal(a["video_index"], b["video_index"])
  assert batches["tfds"][0]["frames"].std() > 0


def test_tfds_pipeline_resumes_and_shards_by_host(data_dir):
  reader = tfds_reader.TfdsFrames("kinetics_frames", data_dir)
  it = pipeline.make_train_iterator(data_config(), reader, img_size=32, per_host_batch=2, seed=0)
  next(it)
  state = it.get_state()
  want = next(it)["frames"]
  it.set_state(state)
  np.testing.assert_array_equal(next(it)["frames"], want)
  it.close()
  seen = []
  for host in range(2):
    it = pipeline.make_train_iterator(data_config(), reader, img_size=32, per_host_batch=2,
                                      seed=0, process_index=host, process_count=2)
    seen.append({int(v) for v in next(it)["video_index"]})
    it.close()
  assert seen == [{0}, {1}]


def test_config_errors_name_the_fields(data_dir, tmp_path):
  from dropmae_jax.config.loading import ConfigError
  from dropmae_jax.pretrain import task as pretrain
  cfg = configlib.pretrain_defaults().data
  cfg.format = "tfds"
  cfg.tfds_data_dir = str(tmp_path / "missing")
  with pytest.raises(ConfigError, match="config.data.tfds_data_dir"):
    pretrain.open_videos(cfg, str(tmp_path))
  cfg.tfds_data_dir = str(tmp_path)
  with pytest.raises(ConfigError, match="config.data.tfds_name='kinetics_frames'.*tfds_kinetics"):
    pretrain.open_videos(cfg, str(tmp_path))
  cfg.tfds_data_dir = data_dir
  assert len(pretrain.open_videos(cfg, str(tmp_path))) == 2


def test_build_from_the_command_line_without_tensorflow(tree, tmp_path):
  # `tfds build` itself imports TensorFlow in tensorflow-datasets 4.9.10 (its convert_format
  # command names tf.train.Example at import); this is the equivalent entry point.
  out = subprocess.run(
      [sys.executable, "-m", "dropmae_jax.data.tfds_kinetics", f"--manual_dir={tree}",
       f"--data_dir={tmp_path}", "--short_side=64", "--workers=1"],
      capture_output=True, text=True, timeout=300, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  assert out.returncode == 0, out.stderr[-2000:]
  assert "train: 2 videos, 240 frames, 0 skipped" in out.stdout
  reader = tfds_reader.TfdsFrames("kinetics_frames", str(tmp_path))
  assert min(np.asarray(reader.frame(0, 0)).shape[:2]) == 64
  empty = tmp_path / "empty"
  empty.mkdir()
  out = subprocess.run(
      [sys.executable, "-m", "dropmae_jax.data.tfds_kinetics", f"--manual_dir={empty}",
       f"--data_dir={tmp_path / 'x'}"], capture_output=True, text=True, timeout=300, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  assert out.returncode == 2 and "error:" in out.stderr and "does not exist or is empty" in out.stderr


def test_training_runs_on_tfds(data_dir, tmp_path):
  from test_train import read_metrics, tiny_config
  from dropmae_jax.train import loop
  config = tiny_config()
  config.data.format = "tfds"
  config.data.tfds_data_dir = data_dir
  config.total_steps = 2
  loop.train_and_evaluate(config, str(tmp_path / "w"))
  rows = read_metrics(str(tmp_path / "w"))
  assert sorted(rows) == [1, 2] and all(np.isfinite(r["loss"]) for r in rows.values())
