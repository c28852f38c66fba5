"""Frame store: equals the source frames, reports corrupt files, resumes, feeds the same recipe."""
import json
import os

import av
import numpy as np
import pytest

from dropmae_jax.config import defaults as configlib
from dropmae_jax.data import build_frame_store
from dropmae_jax.data import frame_store
from dropmae_jax.data import index
from dropmae_jax.pretrain import pipeline


def decode_all(path):
  with av.open(path) as container:
    return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def store(video_tree, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("store"))
  build_frame_store.build(video_tree, out, short_side=256, quality=95, videos_per_shard=3,
                          workers=2, progress=False)
  return out


def test_store_equals_the_source_frames(video_tree, store):
  st = frame_store.FrameStore(store)
  good = [p for p in index.list_videos(video_tree) if not p.endswith("corrupt.mp4")]
  assert len(st) == len(good) == 6
  with open(os.path.join(store, frame_store.INDEX_FILE)) as f:
    meta = json.load(f)
  assert meta["num_frames"] == sum(len(decode_all(p)) for p in good)
  for i in range(len(st)):
    rec = st.video_info(i)
    source = decode_all(os.path.join(video_tree, rec["path"]))
    assert rec["num_frames"] == len(source)
    images, idx = st.read_sampled_frames(i, lambda n: (3, n // 2, n - 1))
    frames = np.stack([np.asarray(im) for im in images])
    err = np.abs(frames.astype(int) - source[list(idx)].astype(int)).mean()
    # The clips are noise plus a moving square: the worst case for JPEG, so a loose bound, and
    # the right frame must fit far better than a frame three steps away.
    shifted = np.abs(frames.astype(int) - source[[j - 3 for j in idx]].astype(int)).mean()
    assert err < 8.0, f"{rec['path']}: mean JPEG error {err:.2f}"
    assert err < 0.7 * shifted, f"{rec['path']}: frame identity unclear ({err:.2f} vs {shifted:.2f})"
    assert rec["fps"] == pytest.approx(25.0)


def test_readers_carry_frame_counts_not_manifests(store):
  import pickle
  st = frame_store.FrameStore(store)
  st.describe(0)   # loads a manifest into this reader
  clone = pickle.loads(pickle.dumps(st))
  assert b"clip" not in pickle.dumps(st)   # no video paths travel to grain workers
  assert [clone.num_frames(i) for i in range(len(st))] == [
      st.video_info(i)["num_frames"] for i in range(len(st))]
  assert clone.describe(5) == st.describe(5) and clone.describe(5).endswith(".mp4")
  with pytest.raises(IndexError, match="out of range"):
    st.video_info(len(st))


def test_store_of_an_older_format_asks_for_a_rebuild(store, tmp_path):
  import shutil
  old = str(tmp_path / "old")
  shutil.copytree(store, old)
  path = os.path.join(old, frame_store.INDEX_FILE)
  with open(path) as f:
    meta = json.load(f)
  del meta["format_version"]
  with open(path, "w") as f:
    json.dump(meta, f)
  with pytest.raises(ValueError, match="format 1.*re-run build_frame_store"):
    frame_store.FrameStore(old)


def test_corrupt_video_is_reported_not_stored(store):
  with open(os.path.join(store, frame_store.REPORT_FILE)) as f:
    report = json.load(f)
  assert report["skipped_videos"] == 1
  assert report["skipped"][0]["path"].endswith("corrupt.mp4") and report["skipped"][0]["error"]


def test_build_resumes_only_missing_shards(video_tree, tmp_path):
  out = str(tmp_path / "s")
  build_frame_store.build(video_tree, out, videos_per_shard=2, workers=1, progress=False)
  before = {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)
            if f.endswith(".array_record")}
  os.remove(os.path.join(out, "shard-00001.json"))  # as if killed while writing shard 1
  os.remove(os.path.join(out, frame_store.INDEX_FILE))
  with pytest.raises(FileNotFoundError, match="not a finished frame store"):
    frame_store.FrameStore(out)
  build_frame_store.build(video_tree, out, videos_per_shard=2, workers=1, progress=False)
  after = {f: os.path.getmtime(os.path.join(out, f)) for f in before}
  assert after["shard-00000.array_record"] == before["shard-00000.array_record"]
  assert after["shard-00001.array_record"] > before["shard-00001.array_record"]
  assert len(frame_store.FrameStore(out)) == 6


def data_config():
  cfg = configlib.pretrain_defaults().data
  cfg.num_workers = 0
  cfg.read_threads = 1
  return cfg


def test_gap_statistics_match_the_video_path(video_tree, store):
  """Same recipe on both sources: the (s, e) gap distribution agrees (closed form, both paths)."""
  cfg = data_config()
  cfg.max_gap = 5
  st = frame_store.FrameStore(store)
  sampler = pipeline.FramePairSampler(st, pipeline.PairRecipe.from_config(cfg, 32))
  files = pipeline.FramePairSampler(
      [p for p in index.list_videos(video_tree) if not p.endswith("corrupt.mp4")],
      pipeline.PairRecipe.from_config(cfg, 32))
  rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
  gaps_store, gaps_video = [], []
  choose = lambda rng, out: (lambda n: out.append(pipeline.transforms.sample_frame_pair(
      n, cfg.max_gap, rng)) or out[-1])
  for k in range(600):
    st.read_sampled_frames(k % 6, choose(rng_a, gaps_store))
  for k in range(600):
    files._reader.read_sampled_frames(k % 6, choose(rng_b, gaps_video))
  g_store = np.array([e - s for s, e in gaps_store])
  g_video = np.array([e - s for s, e in gaps_video])
  # The store keeps every frame, so with equal seeds the draws are identical...
  np.testing.assert_array_equal(g_store, g_video)
  # ...within the released bounds (the closed-form law itself is tested in test_data.py).
  assert g_store.min() == 1 and g_store.max() == cfg.max_gap - 1
  item = sampler.random_map(0, np.random.default_rng(1))
  assert item["frames"].shape == (2, 32, 32, 3) and item["frames"].dtype == np.uint8


def test_two_hosts_read_disjoint_videos(store):
  st = frame_store.FrameStore(store)
  seen = []
  for host in range(2):
    it = pipeline.make_train_iterator(data_config(), st, img_size=32, per_host_batch=3, seed=0,
                                      process_index=host, process_count=2)
    seen.append({int(v) for _ in range(4) for v in next(it)["video_index"]})
    it.close()
  assert seen[0] and seen[1] and not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(len(st)))


def test_pipeline_is_deterministic_on_the_store(store):
  st = frame_store.FrameStore(store)
  batches = []
  for _ in range(2):
    it = pipeline.make_train_iterator(data_config(), st, img_size=32, per_host_batch=4, seed=3)
    batches.append(next(it)["frames"])
    it.close()
  np.testing.assert_array_equal(*batches)


def test_training_runs_on_the_store(store, tmp_path):
  from test_train import read_metrics, tiny_config
  from dropmae_jax.train import loop
  config = tiny_config(store)
  config.data.format = "frames"
  config.total_steps = 2
  loop.train_and_evaluate(config, str(tmp_path / "w"))
  rows = read_metrics(str(tmp_path / "w"))
  assert sorted(rows) == [1, 2] and all(np.isfinite(r["loss"]) for r in rows.values())
