"""DropTrack fine-tuning data: the COCO reader and items, and the grain pipeline over GOT-10k
folders (skipped frames, resume, sharding, worker count, the val split, the synthetic root).
Pair sampling and STARK processing: test_tracking_data.py."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from dropmae_jax.config import defaults as configlib
from dropmae_jax.track.inputs import coco as coco_lib
from dropmae_jax.track.inputs import pairs as tracking_pairs
from dropmae_jax.track.inputs import pipeline as tracking_pipeline
from dropmae_jax.track.inputs import processing as proc
from dropmae_jax.track.datasets import DatasetError

from test_tracking_data import SETTINGS, _noise_image  # noqa: I100  (shared fixtures)


# ------------------------------------------------------------------------------------- COCO

def _write_coco(root, annotations, images=None, split="train2017"):
  os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
  os.makedirs(os.path.join(root, split), exist_ok=True)
  images = images or [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"},
                      {"id": 3, "file_name": "c.jpg"}]
  with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
    json.dump({"images": images, "annotations": annotations, "categories": []}, f)
  return str(root)


def test_coco_reader(tmp_path):
  anns = [{"id": 10, "image_id": 1, "bbox": [5, 6, 20, 30], "iscrowd": 0},
          {"id": 11, "image_id": 2, "bbox": [0, 0, 50, 50], "iscrowd": 1},   # crowd-only image
          {"id": 12, "image_id": 1, "bbox": [1, 2, 3], "iscrowd": 0},       # malformed bbox
          {"id": 13, "image_id": 99, "bbox": [1, 2, 3, 4], "iscrowd": 0},   # unknown image
          {"id": 14, "image_id": 3, "bbox": [7, 8, 9, 10], "iscrowd": 0},
          {"id": 15, "image_id": 3, "bbox": [0, 0, 9, 9], "iscrowd": 1}]
  root = _write_coco(tmp_path / "coco", anns)
  inst = coco_lib.load_coco_instances(root, "train2017")
  np.testing.assert_array_equal(inst.boxes, [[5, 6, 20, 30], [7, 8, 9, 10]])
  assert inst.image_path(0) == os.path.join(root, "train2017", "a.jpg")
  assert inst.image_path(1) == os.path.join(root, "train2017", "c.jpg")
  assert inst.stats == {"instances": 2, "crowd": 2, "crowd_only_images": 1, "malformed": 2}


def test_coco_crowd_only_and_malformed_json_are_clear_errors(tmp_path):
  root = _write_coco(tmp_path / "crowd", [
      {"id": 1, "image_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1}])
  with pytest.raises(DatasetError, match=r"instances_train2017\.json: no usable instance.*"
                                         r"1 crowd annotations on 1 crowd-only images"):
    coco_lib.load_coco_instances(root, "train2017")
  bad = tmp_path / "bad"
  os.makedirs(bad / "annotations")
  (bad / "annotations" / "instances_train2017.json").write_text('{"images": [\n {"id": 1,,}]}')
  with pytest.raises(DatasetError, match=r"instances_train2017\.json:2:\d+: not valid JSON"):
    coco_lib.load_coco_instances(str(bad), "train2017")


def test_coco_items_use_one_image_and_skip_unreadable_files(tmp_path):
  anns = [{"id": i, "image_id": 1 + i % 3, "bbox": [20, 15, 30, 25], "iscrowd": 0}
          for i in range(6)]
  root = _write_coco(tmp_path / "coco", anns)
  img = _noise_image(np.random.default_rng(7), 80, 100)
  Image.fromarray(img).save(os.path.join(root, "train2017", "a.jpg"), quality=95)
  Image.fromarray(img).save(os.path.join(root, "train2017", "b.jpg"), quality=95)
  with open(os.path.join(root, "train2017", "c.jpg"), "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 not a jpeg")
  sampler = tracking_pairs.PairSampler([tracking_pairs.CocoSource(root, "train2017")], [1])
  item_map = tracking_pairs.PairItemMap(sampler, SETTINGS, seed=0)
  skips = 0
  for index in range(30):
    item = item_map.map(index)
    assert item["template_frame"] == item["search_frame"] == 0
    assert item["sequence_index"] % 3 != 2          # c.jpg (instances 2, 5) never used
    skips += int(item["skip_count"])
  assert skips > 0


# ------------------------------------------------------------------------ GOT-10k on disk

def _write_got10k(root, split, sequences, size=(96, 72)):
  """sequences: name -> (boxes (N, 4), absence (N,), cover (N,), corrupt frame ids)."""
  w, h = size
  split_dir = os.path.join(root, split)
  os.makedirs(split_dir, exist_ok=True)
  rng = np.random.default_rng(8)
  for name, (boxes, absence, cover, corrupt) in sequences.items():
    d = os.path.join(split_dir, name)
    os.makedirs(d)
    for i, (x, y, bw, bh) in enumerate(boxes):
      path = os.path.join(d, f"{i + 1:08d}.jpg")
      if i in corrupt:
        with open(path, "wb") as f:
          f.write(b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(40))
        continue
      img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
      img[int(y):int(y + bh), int(x):int(x + bw)] = (240, 200, 30)
      Image.fromarray(img).save(path, quality=90)
    np.savetxt(os.path.join(d, "groundtruth.txt"), boxes, fmt="%.4f", delimiter=",")
    np.savetxt(os.path.join(d, "absence.label"), absence, fmt="%d")
    np.savetxt(os.path.join(d, "cover.label"), cover, fmt="%d")
  with open(os.path.join(split_dir, "list.txt"), "w") as f:
    f.writelines(n + "\n" for n in sequences)


def _moving_boxes(n, w=96, h=72):
  t = np.arange(n)
  return np.stack([10 + (t * 3) % (w - 40), 8 + (t * 2) % (h - 30), 20 + 0 * t, 16 + 0 * t],
                  1).astype(np.float64)


@pytest.fixture(scope="module")
def got10k_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("got10k"))
  n = 24
  absence = np.zeros(n, int)
  absence[5:8] = 1
  cover = np.full(n, 8)
  cover[5:8] = 0
  cover[12] = 0                        # cover 0 alone also makes a frame invisible
  _write_got10k(root, "train", {
      "seq_a": (_moving_boxes(n), absence, cover, {3, 17}),       # corrupt frames 3 and 17
      "seq_b": (_moving_boxes(n), np.zeros(n, int), np.full(n, 8), set()),
      "seq_dark": (_moving_boxes(n), np.ones(n, int), np.zeros(n, int), set()),  # never visible
  })
  _write_got10k(root, "val", {
      "val_a": (_moving_boxes(n), np.zeros(n, int), np.full(n, 8), set()),
      "val_b": (_moving_boxes(n), np.zeros(n, int), np.full(n, 8), set()),
  })
  _write_got10k(root, "dark", {
      "x": (_moving_boxes(n), np.ones(n, int), np.zeros(n, int), set())})
  return root


def _config(root, **data):
  c = configlib.droptrack_defaults()
  c.model.template_size, c.model.search_size = 64, 128
  c.batch_size = 4
  c.data.roots.got10k = root
  c.data.num_workers = 0
  c.data.val_samples = 8
  for k, v in data.items():
    c.data[k] = v
  return c


def test_items_skip_corrupt_frames_and_use_visible_frames_only(got10k_root):
  sampler = tracking_pipeline.make_sampler(_config(got10k_root), "train")
  item_map = tracking_pairs.PairItemMap(sampler, SETTINGS, seed=1)
  names = sampler.sources[0].benchmark.names
  skips = seq_skips = 0
  for index in range(40):
    item = item_map.map(index)
    name = names[int(item["sequence_index"])]
    t, s = int(item["template_frame"]), int(item["search_frame"])
    assert name != "seq_dark" and t < s
    if name == "seq_a":
      assert {t, s}.isdisjoint({3, 17}) and {t, s}.isdisjoint({5, 6, 7, 12})
    skips += int(item["skip_count"])
    seq_skips += int(item["sequence_skips"])
  assert skips > 0 and seq_skips > 0


def test_dataset_without_visible_frames_is_a_clear_error(got10k_root, tmp_path):
  os.symlink(os.path.join(got10k_root, "dark"), tmp_path / "train")
  c = _config(str(tmp_path))
  item_map = tracking_pairs.PairItemMap(tracking_pipeline.make_sampler(c, "train"), SETTINGS,
                                        seed=0)
  with pytest.raises(tracking_pairs.NoUsableDataError, match="no usable sequence in got10k"):
    item_map.map(0)


def _same(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_iterator_resume_sharding_and_worker_count(got10k_root):
  c = _config(got10k_root)
  it = tracking_pipeline.make_tracking_iterator(c, seed=5)
  first = next(it)
  state = it.get_state()
  expected = next(it)
  fresh = tracking_pipeline.make_tracking_iterator(c, seed=5)
  fresh.set_state(state)
  assert _same(next(fresh), expected)
  # Batch 0 is items 0..3; with two hosts (2 items each), host 1's batches are items 1, 3 / 5, 7.
  item_map = tracking_pairs.PairItemMap(tracking_pipeline.make_sampler(c, "train"),
                                        proc.ProcessingSettings.from_config(c, "train"), seed=5)
  for k, index in enumerate(range(4)):
    assert _same({key: v[k] for key, v in first.items()}, item_map.map(index))
  host1 = tracking_pipeline.make_tracking_iterator(c, seed=5, process_index=1, process_count=2)
  for indices in ((1, 3), (5, 7)):
    batch = next(host1)
    assert batch["search"].shape[0] == 2
    for k, index in enumerate(indices):
      assert _same({key: v[k] for key, v in batch.items()}, item_map.map(index))
  # Worker processes give the same batches as the in-process pipeline.
  c_workers = _config(got10k_root, num_workers=2, prefetch=1)
  workers = tracking_pipeline.make_tracking_iterator(c_workers, seed=5)
  try:
    got = [next(workers) for _ in range(3)]
  finally:
    tracking_pipeline.close_iterator(workers)
  inproc = tracking_pipeline.make_tracking_iterator(c, seed=5)
  for g in got:
    assert _same(g, next(inproc))
  tracking_pipeline.close_iterator(it)
  tracking_pipeline.close_iterator(fresh)
  tracking_pipeline.close_iterator(inproc)


def test_val_split_is_finite_and_unaugmented(got10k_root):
  c = _config(got10k_root)
  batches = list(tracking_pipeline.make_tracking_iterator(c, split="val", seed=0))
  assert len(batches) == 2       # 8 val items / batch 4
  for b in batches:
    np.testing.assert_array_equal(b["template_brightness"], 1.0)
    np.testing.assert_array_equal(b["search_brightness"], 1.0)
    assert (b["template_frame"] < b["search_frame"]).all()


def test_synthetic_root_is_made_once_in_the_workdir(tmp_path):
  c = _config("synthetic")
  c.data.synthetic.update(train=2, val=1, frames=20, size=(64, 48))
  it = tracking_pipeline.make_tracking_iterator(c, seed=0, workdir=str(tmp_path))
  batch = next(it)
  assert batch["search"].shape == (4, 128, 128, 3)
  made = tmp_path / tracking_pipeline.SYNTHETIC_DIR / "train" / "list.txt"
  stamp = made.stat().st_mtime_ns
  next(tracking_pipeline.make_tracking_iterator(c, seed=0, workdir=str(tmp_path)))
  assert made.stat().st_mtime_ns == stamp
  assert [p.name for p in tmp_path.iterdir()] == [tracking_pipeline.SYNTHETIC_DIR]
