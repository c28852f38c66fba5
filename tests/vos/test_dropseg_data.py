"""DropSeg fine-tuning input: pair / object sampling, the training videos, config errors, the
synthetic set and the grain pipeline (STCN's augmentation: test_dropseg_augment.py).

References: hand-made fixture videos whose object ids are painted in known colours (labels
checked against pixels); the released sampling rules in closed form.
"""
import logging
import os

import numpy as np
import pytest
from PIL import Image

from dropmae_jax.config import defaults as configlib
from dropmae_jax.config.loading import ConfigError
from dropmae_jax.vos import davis
from dropmae_jax.vos.inputs import pairs
from dropmae_jax.vos.inputs import pipeline
from dropmae_jax.vos.inputs import videos as vos_videos

COLOURS = {0: (40, 40, 40), 1: (230, 30, 30), 2: (30, 30, 230), 255: (40, 40, 40)}


# ------------------------------------------------------------------------------------------
# fixtures

def ids_frame(t: int, h: int = 48, w: int = 64, objects=(1, 2)) -> np.ndarray:
  ids = np.zeros((h, w), np.uint8)
  x = 4 + (t % 6)
  if 1 in objects:
    ids[8:40, x:x + 22] = 1
  if 2 in objects:
    ids[10:38, x + 30:x + 52] = 2
  return ids


def paint(ids: np.ndarray) -> np.ndarray:
  image = np.zeros(ids.shape + (3,), np.uint8)
  for k, colour in COLOURS.items():
    image[ids == k] = colour
  return image


def write_video(image_dir, mask_dir, masks, size_of_mask=None):
  os.makedirs(image_dir, exist_ok=True)
  os.makedirs(mask_dir, exist_ok=True)
  for t, ids in enumerate(masks):
    Image.fromarray(paint(ids)).save(os.path.join(image_dir, f"{t:05d}.jpg"), quality=95)
    png = ids if size_of_mask is None else np.zeros(size_of_mask, np.uint8)
    davis.write_palette_png(os.path.join(mask_dir, f"{t:05d}.png"), png)


def write_davis_root(root, videos: dict, subset="train"):
  os.makedirs(os.path.join(root, "ImageSets", "2017"), exist_ok=True)
  with open(os.path.join(root, "ImageSets", "2017", f"{subset}.txt"), "w") as f:
    f.writelines(n + "\n" for n in videos)
  for name, masks in videos.items():
    write_video(os.path.join(root, "JPEGImages", "480p", name),
                os.path.join(root, "Annotations", "480p", name), masks)
  return str(root)


def write_youtube_root(root, videos: dict):
  for name, masks in videos.items():
    write_video(os.path.join(root, "JPEGImages", name), os.path.join(root, "Annotations", name),
                masks)
  return str(root)


def data_config(davis_root="", youtube_root="", img_size=32, batch_size=4):
  c = configlib.dropseg_defaults()
  c.model.img_size = img_size
  c.batch_size = batch_size
  c.data.davis_root = davis_root
  c.data.youtube_root = youtube_root
  c.data.davis_repeat = 2
  c.data.num_workers = 0
  c.data.read_threads = 1
  return c


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
  base = tmp_path_factory.mktemp("vos_train")
  davis_root = write_davis_root(base / "davis", {
      "two": [ids_frame(t) for t in range(30)],
      "one": [ids_frame(t, objects=(1,)) for t in range(12)],
      "short": [ids_frame(0)],
  })
  youtube_root = write_youtube_root(base / "youtube", {
      "yv_a": [ids_frame(t) for t in range(8)],
      "yv_b": [ids_frame(t, objects=(2,)) for t in range(6)],
  })
  return davis_root, youtube_root


# ------------------------------------------------------------------------------------------
# pair and object sampling

@pytest.mark.parametrize("num_frames,max_jump", [(80, 25), (30, 5), (2, 25), (6, 1), (10, 2)])
def test_frame_pair_gaps_and_reversal(num_frames, max_jump):
  rng = np.random.default_rng(num_frames)
  draws = np.array([pairs.draw_frame_pair(rng, num_frames, max_jump) for _ in range(3000)])
  gaps = np.abs(draws[:, 0] - draws[:, 1])
  assert draws.min() >= 0 and draws.max() <= num_frames - 1
  expected = set(range(1, min(max(max_jump, 2), num_frames))) if max_jump > 1 else {1}
  assert set(gaps.tolist()) == expected       # 1 .. max_jump - 1, every gap reached
  reversed_rate = np.mean(draws[:, 0] > draws[:, 1])
  assert abs(reversed_rate - 0.5) < 0.04
  assert set(np.minimum(draws[:, 0], draws[:, 1]).tolist()) == set(range(num_frames - 1))


def test_items_objects_selector_and_labels(roots):
  davis_root, youtube_root = roots
  config = data_config(davis_root, youtube_root)
  video_list = pipeline.training_videos(config)
  item_map = pairs.VosItemMap(video_list, 32, seed=3)
  seen_second = seen_single = colour_checks = 0
  for index in range(40):
    item = item_map.map(index)
    video = video_list[int(item["video_index"])]
    assert 1 <= abs(int(item["memory_index"]) - int(item["query_index"])) < video.max_jump
    masks, labels, selector = item["memory_masks"], item["query_labels"], item["selector"]
    assert masks.dtype == np.float32 and masks.shape == (2, 32, 32)
    assert set(np.unique(masks).tolist()) <= {0.0, 1.0}
    assert labels.dtype == np.int32 and set(np.unique(labels).tolist()) <= {0, 1, 2}
    assert item["memory_frame"].dtype == np.uint8 and item["memory_frame"].shape == (32, 32, 3)
    if int(item["skip_count"]) >= 5:
      continue
    assert masks[0].sum() > 0                       # the target is in the memory frame
    assert not (masks[0] * masks[1]).any()
    if selector[1] == 1:
      seen_second += 1
      assert masks[1].sum() > 0
    else:
      seen_single += 1
      assert selector.tolist() == [1.0, 0.0] and masks[1].sum() == 0 and not (labels == 2).any()
    # Labels against pixels: the target's colour in the memory frame is the colour of label 1
    # in the query frame (red / blue objects, grey background, under mild jitter).
    mem = item["memory_frame"].astype(float)
    qry = item["query_frame"].astype(float)
    core = masks[0].astype(bool)
    target_colour = mem[core].mean(0)
    if (labels == 1).sum() > 20 and core.sum() > 20 and target_colour.std() > 30:
      assert np.abs(qry[labels == 1].mean(0) - target_colour).max() < 40
      colour_checks += 1
  assert seen_second > 3 and seen_single > 3 and colour_checks > 10


def test_void_is_never_an_object_and_five_trials(tmp_path):
  void_only = [np.where(ids_frame(t) > 0, 255, 0).astype(np.uint8) for t in range(6)]
  one_and_void = [np.where(ids_frame(t) == 2, 255, ids_frame(t)).astype(np.uint8)
                  for t in range(6)]
  root = write_davis_root(tmp_path / "d", {"void": void_only, "onevoid": one_and_void,
                                           "empty": [np.zeros((48, 64), np.uint8)] * 5})
  video_list = vos_videos.davis_videos(root)
  names = [v.name for v in video_list]
  item_map = pairs.VosItemMap(video_list, 24, seed=0)
  for index in range(18):
    item = item_map.map(index)
    name = names[int(item["video_index"])]
    if name in ("void", "empty"):
      assert int(item["skip_count"]) == 5             # 5 trials, then kept with no object
      assert item["selector"].tolist() == [1.0, 0.0]
      assert not item["memory_masks"].any() and not item["query_labels"].any()
    else:
      assert item["selector"].tolist() == [1.0, 0.0]  # 255 never becomes the second object
      assert set(np.unique(item["query_labels"]).tolist()) <= {0, 1}
  frame, ids = pairs.read_frame(video_list[0], 0)
  assert 255 not in ids and frame.shape == (48, 64, 3)


def test_unreadable_files_are_skipped_and_counted(tmp_path):
  root = write_davis_root(tmp_path / "d", {"good": [ids_frame(t) for t in range(5)],
                                           "badjpeg": [ids_frame(t) for t in range(5)]})
  for t in range(5):
    with open(os.path.join(root, "JPEGImages", "480p", "badjpeg", f"{t:05d}.jpg"), "wb") as f:
      f.write(b"\xff\xd8\xff\xe0 not a jpeg")
  write_video(os.path.join(root, "JPEGImages", "480p", "badmask"),
              os.path.join(root, "Annotations", "480p", "badmask"),
              [ids_frame(t) for t in range(5)], size_of_mask=(40, 30))
  with open(os.path.join(root, "ImageSets", "2017", "train.txt"), "a") as f:
    f.write("badmask\n")
  video_list = vos_videos.davis_videos(root)
  item_map = pairs.VosItemMap(video_list, 24, seed=1)
  skipped = 0
  for index in range(12):
    item = item_map.map(index)
    assert video_list[int(item["video_index"])].name == "good"
    skipped += int(item["skip_count"])
  assert skipped >= 8            # two of three videos are broken: most items skip at least one
  broken = pairs.VosItemMap([v for v in video_list if v.name != "good"], 24, seed=1,
                            max_retries=4)
  with pytest.raises(RuntimeError, match=r"max_retries=4.*(badjpeg/\d+\.jpg|badmask/\d+\.png)"):
    broken.map(0)


# ------------------------------------------------------------------------------------------
# videos, config errors, the synthetic set

def test_training_videos_concatenation(roots, caplog):
  davis_root, youtube_root = roots
  config = data_config(davis_root, youtube_root)
  config.data.davis_repeat = 3
  with caplog.at_level(logging.WARNING):
    video_list = pipeline.training_videos(config)
  names = [(v.source, v.name, v.max_jump) for v in video_list]
  davis_part = [("davis", "two", 25), ("davis", "one", 25)]
  assert names == davis_part * 3 + [("youtube", "yv_a", 5), ("youtube", "yv_b", 5)]
  assert "1 of 3 videos left out" in caplog.text          # 'short' has one frame
  assert pipeline.num_videos(config) == 8
  subset = os.path.join(os.path.dirname(youtube_root), "yv_subset.txt")
  with open(subset, "w") as f:
    f.write("yv_b\nnot_there\n")
  config.data.youtube_subset = subset
  assert [v.name for v in pipeline.training_videos(config)][-1:] == ["yv_b"]
  assert pipeline.num_videos(config) == 7


def test_config_errors_name_the_field(roots, tmp_path):
  davis_root, youtube_root = roots
  cases = [
      (data_config(), "config.data.davis_root and config.data.youtube_root"),
      (data_config(str(tmp_path / "missing")), "config.data.davis_root"),
      (data_config("", str(tmp_path / "missing")), "config.data.youtube_root"),
      (data_config(davis_root, youtube_root="synthetic"), "config.data.youtube_root"),
      (data_config(youtube_root, ""), "config.data.davis_root"),   # not a DAVIS layout
  ]
  bad_subset = data_config(davis_root)
  bad_subset.data.davis_subset = "nope"
  cases.append((bad_subset, "config.data.davis_subset"))
  short = data_config(davis_root)
  short.data.min_videos_frames = 1
  cases.append((short, "config.data.min_videos_frames"))
  for config, field in cases:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
      pipeline.training_videos(config)
  with pytest.raises(ConfigError, match="--workdir"):
    pipeline.training_videos(data_config("synthetic"), workdir="")
  odd = data_config(davis_root)
  with pytest.raises(ConfigError, match=r"config\.batch_size"):
    pipeline.make_dataset(odd, seed=0, process_count=3)


def test_ensure_synthetic_beside_label_propagation_set(tmp_path):
  workdir = str(tmp_path / "wd")
  os.makedirs(os.path.join(workdir, "vos_synthetic", "ImageSets", "2017"))   # val-only set
  data = configlib.dropseg_data_defaults()
  data.synthetic.train, data.synthetic.val, data.synthetic.frames = 2, 1, 16
  data.synthetic.size = (96, 72)
  root = pipeline.ensure_synthetic(workdir, data)
  assert root == os.path.join(os.path.abspath(workdir), "vos_synthetic_dropseg")
  assert davis.read_sequence_list(os.path.join(root, "ImageSets", "2017", "train.txt")) == [
      "synth-train-000", "synth-train-001"]
  assert os.path.isfile(os.path.join(root, "ImageSets", "2017", "val.txt"))
  assert os.listdir(os.path.join(workdir, "vos_synthetic", "ImageSets", "2017")) == []
  stamp = os.stat(root).st_mtime_ns
  assert pipeline.ensure_synthetic(workdir, data) == root and os.stat(root).st_mtime_ns == stamp
  config = data_config("synthetic")
  config.data.synthetic = data.synthetic
  config.data.davis_repeat = 1
  item = pairs.VosItemMap(pipeline.training_videos(config, workdir), 32, seed=0).map(0)
  assert item["memory_frame"].shape == (32, 32, 3)
  assert [p for p in os.listdir(workdir) if ".tmp" in p] == []


# ------------------------------------------------------------------------------------------
# the grain pipeline

def take(iterator, n):
  out = [{k: np.array(v) for k, v in next(iterator).items()} for _ in range(n)]
  return out


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_contract_resume_and_hosts(roots):
  davis_root, youtube_root = roots
  config = data_config(davis_root, youtube_root, batch_size=4)
  it = pipeline.make_vos_iterator(config, seed=5)
  first = take(it, 2)
  state = it.get_state()
  rest = take(it, 2)
  pipeline.close_iterator(it)
  batch = first[0]
  want = {"memory_frame": (np.uint8, (4, 32, 32, 3)), "query_frame": (np.uint8, (4, 32, 32, 3)),
          "memory_masks": (np.float32, (4, 2, 32, 32)), "query_labels": (np.int32, (4, 32, 32)),
          "selector": (np.float32, (4, 2)), "skip_count": (np.int32, (4,)),
          "video_index": (np.int32, (4,)), "memory_index": (np.int32, (4,)),
          "query_index": (np.int32, (4,))}
  assert {k: (v.dtype, v.shape) for k, v in batch.items()} == want
  # One epoch (DAVIS x 2 + YouTube-VOS = 6 videos) = items 0..5: every entry exactly once.
  epoch = np.concatenate([b["video_index"] for b in first])[:6]
  assert sorted(epoch.tolist()) == list(range(6))
  resumed = pipeline.make_vos_iterator(config, seed=5)
  resumed.set_state(state)
  assert_batches_equal(take(resumed, 2), rest)
  pipeline.close_iterator(resumed)
  # Two hosts of batch 2 each: their batches interleave into the one-host batches.
  hosts = []
  for p in range(2):
    host_it = pipeline.make_vos_iterator(config, seed=5, process_index=p, process_count=2)
    hosts.append(take(host_it, 2))
    pipeline.close_iterator(host_it)
  for k in range(2):
    merged = {key: np.stack([hosts[i % 2][k][key][i // 2] for i in range(4)])
              for key in batch}
    # host p holds items p, p + 2 of the block: one-host order is h0, h1, h0, h1
    assert_batches_equal([merged], [first[k]])
  other_seed = pipeline.make_vos_iterator(config, seed=6)
  assert not np.array_equal(take(other_seed, 1)[0]["memory_frame"], batch["memory_frame"])
  pipeline.close_iterator(other_seed)


def test_same_batches_for_num_workers_0_and_2(roots):
  davis_root, youtube_root = roots
  batches = {}
  for workers in (0, 2):
    config = data_config(davis_root, youtube_root, batch_size=2)
    config.data.num_workers = workers
    config.data.read_threads = 2 if workers else 1
    config.data.prefetch = 1
    it = pipeline.make_vos_iterator(config, seed=9)
    batches[workers] = take(it, 4)
    pipeline.close_iterator(it)
    del it
  assert_batches_equal(batches[0], batches[2])
