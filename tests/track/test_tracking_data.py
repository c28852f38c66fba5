"""DropTrack fine-tuning data: pair sampling and STARK processing (COCO and the grain pipeline:
test_tracking_pipeline.py).

References are independent of the code under test: the released sampler's (t, s) distribution
computed in closed form from its rules (OSTrack `lib/train/data/sampler.py`), the released
processing written straightforwardly with cv2 / torch (`_released_processing`, OSTrack
`lib/train/data/processing.py` and `transforms.py`; the crop is
test_track_crop's cv2 `_released_sample_target`), and pixel measurements of a solid rectangle.
"""
import math

import numpy as np
import pytest

from dropmae_jax.track.inputs import pairs as tracking_pairs
from dropmae_jax.track.inputs import pipeline as tracking_pipeline
from dropmae_jax.track.inputs import processing as proc
from dropmae_jax.data.images import IMAGENET_MEAN, IMAGENET_STD
from dropmae_jax.track import datasets as track_datasets

cv2 = pytest.importorskip("cv2")
torch = pytest.importorskip("torch")
from test_track_crop import _released_sample_target  # noqa: E402  (cv2 reference crop)


# ------------------------------------------------------------------------------- fake sources

class FakeVideo:
  """In-memory video source: visibility patterns only (no frames are read by the sampler)."""
  is_video = True

  def __init__(self, name, visibles):
    self.name = name
    self.visibles = [np.asarray(v, bool) for v in visibles]
    self.reads = 0

  def __len__(self):
    return len(self.visibles)

  def describe(self, i):
    return f"{self.name}/{i}"

  def info(self, i):
    self.reads += 1
    v = self.visibles[i]
    return tracking_pairs.SequenceInfo(np.ones((len(v), 4)), v, [""] * len(v))


class FakeImages(FakeVideo):
  is_video = False


def _released_pair_distribution(visible, max_gap, gap_step=5, max_k=2000):
  """P(t, s) of the released 'causal' loop, in closed form over the attempt number k.

  Attempt k (gap increase 5k): t uniform over visible frames in [0, len-1); succeeds iff some
  visible frame lies in [t+1, min(t+max_gap+5k, len)), then s is uniform over those; otherwise
  attempt k+1 with a fresh t.
  """
  n = len(visible)
  base = [t for t in range(n - 1) if visible[t]]
  probs = {}
  reach = 1.0    # P(attempt k happens)
  for k in range(max_k):
    fails = 0
    for t in base:
      window = [s for s in range(t + 1, min(t + max_gap + gap_step * k, n)) if visible[s]]
      if not window:
        fails += 1
        continue
      for s in window:
        probs[(t, s)] = probs.get((t, s), 0.0) + reach / len(base) / len(window)
    reach *= fails / len(base)
    if reach < 1e-15:
      break
  return probs


def test_causal_frame_ids_follow_the_released_distribution():
  # Visible frames {0,1,2,3} and {300,301} of 500: t=3 needs 20 gap increases to reach 300;
  # t=301 never finds a later frame (a redraw every time).
  visible = np.zeros(500, bool)
  visible[[0, 1, 2, 3, 300, 301]] = True
  sampler = tracking_pairs.PairSampler([FakeVideo("v", [visible])], [1], max_gap=200)
  rng = np.random.default_rng(0)
  n = 6000
  counts = {}
  for _ in range(n):
    t, s = sampler.sample_frame_ids(visible, rng)
    assert visible[t] and visible[s] and t < s and t < len(visible) - 1
    counts[(t, s)] = counts.get((t, s), 0) + 1
  expected = _released_pair_distribution(visible, 200)
  assert set(counts) <= set(expected)
  assert (3, 300) in expected and (3, 301) in expected   # only reachable through the gap growth
  for pair, p in expected.items():
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(counts.get(pair, 0) - n * p) <= 5 * sigma + 1, (pair, counts.get(pair, 0), n * p)


def test_search_frame_within_max_gap_plus_growth():
  # Dense visibility: the window never grows, so s - t < max_gap always; and s - t reaches it.
  visible = np.ones(400, bool)
  visible[::7] = False
  sampler = tracking_pairs.PairSampler([FakeVideo("v", [visible])], [1], max_gap=50)
  rng = np.random.default_rng(1)
  gaps = []
  for _ in range(3000):
    t, s = sampler.sample_frame_ids(visible, rng)
    assert visible[t] and visible[s] and 0 <= t < 399
    gaps.append(s - t)
  assert min(gaps) >= 1 and max(gaps) == 49


def test_dataset_ratios_and_usable_sequences():
  good = np.ones(30, bool)
  few_visible = np.zeros(30, bool)
  few_visible[:4] = True                      # 4 visible: not > 4
  short = np.ones(19, bool)                   # 19 frames: < 20
  a = FakeVideo("a", [good, few_visible, good, short, good])   # 3 usable of 5
  b = FakeVideo("b", [good, good])
  c = FakeImages("c", [np.zeros(1, bool)] * 3)   # image dataset: no visibility check
  sampler = tracking_pairs.PairSampler([a, b, c], [3, 1, 2], max_gap=200)
  rng = np.random.default_rng(2)
  n = 6000
  datasets, seqs_a, skips_a = [], [], []
  for _ in range(n):
    draw, skipped = sampler.sample(rng)
    datasets.append(draw.dataset)
    if draw.dataset == 0:
      seqs_a.append(draw.sequence)
      skips_a.append(skipped)
    elif draw.dataset == 2:
      assert draw.template_frame == draw.search_frame == 0
    else:
      assert skipped == 0
  datasets = np.asarray(datasets)
  for d, p in enumerate(np.array([3, 1, 2]) / 6):
    assert abs((datasets == d).sum() - n * p) <= 4.5 * math.sqrt(n * p * (1 - p))
  seqs_a = np.asarray(seqs_a)
  assert set(seqs_a.tolist()) == {0, 2, 4}
  m = len(seqs_a)
  for i in (0, 2, 4):   # uniform over the usable ones
    assert abs((seqs_a == i).sum() - m / 3) <= 4.5 * math.sqrt(m * (1 / 3) * (2 / 3))
  # Unusable draws before a usable one: geometric with mean 2/3 (2 bad of 5).
  mean, sd = np.mean(skips_a), math.sqrt((2 / 5) / (3 / 5) ** 2 / m)
  assert abs(mean - 2 / 3) <= 4.5 * sd
  assert a.reads <= 5        # a bad sequence is never read twice


def test_no_usable_sequence_is_a_clear_error():
  none_visible = np.zeros(40, bool)
  sampler = tracking_pairs.PairSampler([FakeVideo("empty_set", [none_visible] * 3)], [1])
  with pytest.raises(tracking_pairs.NoUsableDataError, match=r"no usable sequence in empty_set"):
    sampler.sample(np.random.default_rng(0))


def test_released_visibility_rules():
  gt = np.array([[1, 1, 5, 5], [1, 1, 0, 5], [1, 1, 5, 5], [1, 1, 5, 5], [1, 1, np.nan, 5]])
  seq = track_datasets.Sequence("s", [""] * 5, gt, "got10k",
                                target_visible=np.array([1, 1, 0, 1, 1], bool),
                                cover=np.array([8, 8, 8, 0, 8]))
  np.testing.assert_array_equal(tracking_pairs.released_visibility("got10k", seq),
                                [1, 0, 0, 0, 0])
  np.testing.assert_array_equal(tracking_pairs.released_visibility("lasot", seq),
                                [1, 0, 0, 1, 0])
  np.testing.assert_array_equal(tracking_pairs.released_visibility("trackingnet", seq),
                                [1, 0, 1, 1, 0])


# ------------------------------------------------------------------------- processing reference

def _released_processing(t_img, t_box, s_img, s_box, settings, draws):
  """STARKProcessing + the released transforms (OSTrack `lib/train/data/processing.py`,
  `transforms.py`), written straight with cv2 / torch, for fixed draws. Returns None (invalid)
  or (t_norm, t_box, s_norm, s_box) where *_norm are the float32 CHW->HWC normalised tensors
  and *_box the normalised labels."""
  def joint(img, box):
    box = [float(v) for v in box]
    if draws.grayscale:
      g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
      img = np.stack([g, g, g], axis=2)
    if draws.flip:
      img = np.fliplr(img).copy()
      w_img = img.shape[1]
      xs = [(w_img - 1) - box[0], (w_img - 1) - (box[0] + box[2])]   # corners mapped, min/max
      box = [min(xs), box[1], max(xs) - min(xs), box[3]]
    return img, box

  out = []
  for img, box, bd, bs in ((t_img, t_box, draws.template, settings.template),
                           (s_img, s_box, draws.search, settings.search)):
    img, box = joint(img, box)
    box_t = torch.tensor(box, dtype=torch.float64)
    size = box_t[2:4] * torch.exp(torch.tensor(bd.scale_noise, dtype=torch.float64)
                                  * bs.scale_jitter)
    max_offset = size.prod().sqrt() * bs.center_jitter
    centre = box_t[0:2] + 0.5 * box_t[2:4] + max_offset * (
        torch.tensor(bd.centre_noise, dtype=torch.float64) - 0.5)
    jittered = torch.cat((centre - 0.5 * size, size)).tolist()
    if math.ceil(math.sqrt(jittered[2] * jittered[3]) * bs.factor) < 1:
      return None
    crop, rf, att = _released_sample_target(img, jittered, bs.factor, bs.output_size,
                                            mask_dtype=np.float32)
    # transform_image_to_crop(normalize=True)
    sz = bs.output_size
    c_gt = np.array(box[:2]) + 0.5 * np.array(box[2:])
    c_ex = np.array(jittered[:2]) + 0.5 * np.array(jittered[2:])
    c_out = (sz - 1) / 2 + (c_gt - c_ex) * rf
    wh = np.array(box[2:]) * rf
    label = np.concatenate([c_out - 0.5 * wh, wh]) / sz
    image = torch.from_numpy(crop.transpose(2, 0, 1).copy()).float().mul(
        bd.brightness / 255.0).clamp(0.0, 1.0)
    att_t = torch.from_numpy(att)
    if bd.norm_flip:
      image = image.flip((2,))
      att_t = att_t.flip((-1,))
      xs = [1 - label[0], 1 - (label[0] + label[2])]
      label = np.array([min(xs), label[1], max(xs) - min(xs), label[3]])
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    image = (image - mean) / std
    if att_t.all():
      return None
    down = torch.nn.functional.interpolate(att_t[None, None].float(), size=sz // 16).to(torch.bool)
    if down.all():
      return None
    out += [image.permute(1, 2, 0).numpy(), label]
  return out


def _noise_image(rng, h, w):
  yy, xx = np.mgrid[0:h, 0:w]
  base = np.stack([xx * 255 // w, yy * 255 // h, (xx * 3 + yy) % 256], -1)
  return np.clip(base + rng.integers(-30, 30, (h, w, 3)), 0, 255).astype(np.uint8)


SETTINGS = proc.ProcessingSettings(
    template=proc.BranchSettings(output_size=64, factor=2.0, center_jitter=0.0, scale_jitter=0.0),
    search=proc.BranchSettings(output_size=128, factor=5.0, center_jitter=4.5, scale_jitter=0.5))


def test_processing_matches_the_released_pipeline_for_fixed_draws():
  rng = np.random.default_rng(3)
  accepted = rejected = 0
  for case in range(40):
    h, w = int(rng.integers(60, 140)), int(rng.integers(60, 160))
    t_img, s_img = _noise_image(rng, h, w), _noise_image(rng, h, w)
    same = case % 5 == 0                      # COCO-like: one image for both
    if same:
      s_img = t_img
    def box():
      bw, bh = rng.uniform(4, w / 2), rng.uniform(4, h / 2)
      return np.array([rng.uniform(-bw / 2, w - bw / 2), rng.uniform(-bh / 2, h - bh / 2), bw, bh])
    t_box = box()
    s_box = t_box if same else box()
    draws = proc.draw_pair(rng, SETTINGS)
    # Force every joint / per-crop combination to occur.
    draws = proc.PairDraws(grayscale=case % 4 == 1, flip=case % 2 == 1,
                           template=draws.template, search=draws.search)
    ours, why = proc.process_pair(t_img, t_box, s_img, s_box, SETTINGS, draws)
    ref = _released_processing(t_img, t_box, s_img, s_box, SETTINGS, draws)
    assert (ours is None) == (ref is None), (case, why)
    if ours is None:
      rejected += 1
      continue
    accepted += 1
    batch = {k: np.asarray(v)[None] for k, v in ours.items()}
    t_in, s_in = tracking_pipeline.model_inputs(batch)
    np.testing.assert_allclose(np.asarray(t_in[0]), ref[0], atol=2e-6, rtol=0)
    np.testing.assert_allclose(np.asarray(s_in[0]), ref[2], atol=2e-6, rtol=0)
    np.testing.assert_allclose(ours["template_box"], ref[1], atol=2e-6)
    np.testing.assert_allclose(ours["search_box"], ref[3], atol=2e-6)
    assert ours["template"].dtype == np.uint8 and ours["template"].shape == (64, 64, 3)
    assert ours["search"].shape == (128, 128, 3)
  assert accepted >= 20


def test_grayscale_equals_cv2():
  # Every (R, G) pair against 16 blue levels: OpenCV rounds 15-bit fixed-point weights.
  rg = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1).reshape(-1, 2)
  img = np.concatenate([np.repeat(rg, 16, 0), np.tile(np.arange(0, 256, 17), len(rg))[:, None]],
                       1).astype(np.uint8).reshape(1024, -1, 3)
  g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
  np.testing.assert_array_equal(proc.rgb_to_gray(img), np.stack([g, g, g], -1))


def test_box_label_is_the_object_in_the_crop():
  """A solid white rectangle on black: the label, scaled to pixels, is where the crop is white."""
  h, w = 120, 160
  box = np.array([50.0, 30.0, 40.0, 24.0])
  img = np.zeros((h, w, 3), np.uint8)
  img[30:54, 50:90] = 255
  rng = np.random.default_rng(5)
  settings = proc.ProcessingSettings(
      template=SETTINGS.template,
      search=proc.BranchSettings(output_size=128, factor=5.0, center_jitter=1.0,
                                 scale_jitter=0.2))
  for k in range(12):
    d = proc.draw_pair(rng, settings)
    d = proc.PairDraws(grayscale=False, flip=k % 2 == 0, template=d.template,
                       search=proc.BranchDraws(d.search.scale_noise, d.search.centre_noise,
                                               1.0, k % 3 == 0))
    item, why = proc.process_pair(img, box, img, box, settings, d)
    assert item is not None, why
    for name, size, bd, bs in (("template", 64, d.template, settings.template),
                               ("search", 128, d.search, settings.search)):
      white = item[name][..., 0] > 127
      cols, rows = np.flatnonzero(white.any(0)), np.flatnonzero(white.any(1))
      x, y, bw, bh = item[f"{name}_box"] * size
      side = math.ceil(math.sqrt(np.prod(box[2:] * np.exp(np.array(bd.scale_noise)
                                                           * bs.scale_jitter))) * bs.factor)
      rf = size / side
      # The released label is the box up to its own quirks: the crop corner's rounding (0.5 px
      # of the image), the (S - 1) / 2 crop centre (0.5 px of the crop) and, after the joint
      # flip, x' = (W - 1) - (x + w) (1 px of the image); plus 0.5 px for the resize's blur.
      tol_x = 1.0 + rf * (1.5 if d.flip else 0.5)
      tol_y = 1.0 + rf * 0.5
      assert abs(cols[0] - x) <= tol_x and abs(cols[-1] + 1 - (x + bw)) <= tol_x, (name, k)
      assert abs(rows[0] - y) <= tol_y and abs(rows[-1] + 1 - (y + bh)) <= tol_y, (name, k)
      # The extent itself is the box scaled by the resize factor (no quirk touches the size).
      assert abs((cols[-1] + 1 - cols[0]) - bw) <= 2 and abs((rows[-1] + 1 - rows[0]) - bh) <= 2


def _centred_draws(norm_flip=False):
  b = proc.BranchDraws((0.0, 0.0), (0.5, 0.5), 1.0, norm_flip)
  return proc.PairDraws(False, False, b, b)


def test_rejection_rules():
  img = np.full((100, 100, 3), 128, np.uint8)
  settings = proc.ProcessingSettings(template=SETTINGS.template, search=SETTINGS.template)
  ok = np.array([30.0, 30.0, 32.0, 32.0])
  assert proc.process_pair(img, ok, img, ok, settings, _centred_draws())[0] is not None
  # Zero-area box: crop side ceil(0) < 1.
  item, why = proc.process_pair(img, [30, 30, 0, 10], img, ok, settings, _centred_draws())
  assert item is None and "crop side < 1" in why
  # Far outside the image: the crop is all padding.
  item, why = proc.process_pair(img, ok, img, [500, 500, 32, 32], settings, _centred_draws())
  assert item is None and why == "search: crop is all padding"
  # 64-px crop at scale 1 whose real pixels are output columns 50..63 only: not all padding at
  # full resolution, but the stride-16 samples (columns 0, 16, 32, 48) all are.
  sliver = np.array([-34.0, 30.0, 32.0, 32.0])
  patch, _, att = proc.crop_lib.sample_target(img, sliver, 2.0, 64)
  assert not att.all() and att[:, [0, 16, 32, 48]].all()
  item, why = proc.process_pair(img, ok, img, sliver, settings, _centred_draws())
  assert item is None and why == "search: crop is all padding at stride 16"
  # The released check runs after the normalised flip: flipped, the sliver sits at columns
  # 0..13, and column 0 is sampled, so the pair is kept.
  item, why = proc.process_pair(img, ok, img, sliver, settings, _centred_draws(norm_flip=True))
  assert item is not None, why


def test_model_inputs_against_numpy():
  rng = np.random.default_rng(6)
  batch = {"template": rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
           "search": rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8),
           "template_brightness": np.array([0.8, 1.2], np.float32),
           "search_brightness": np.array([1.0, 1.19], np.float32)}
  t, s = tracking_pipeline.model_inputs(batch)
  for got, key in ((t, "template"), (s, "search")):
    x = batch[key].astype(np.float64) / 255 * batch[f"{key}_brightness"].astype(
        np.float64)[:, None, None, None]
    x = (np.clip(x, 0, 1) - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.asarray(got), x, atol=1e-5)
  assert float(np.asarray(s[1]).max()) <= (1 - min(IMAGENET_MEAN)) / min(IMAGENET_STD) + 1e-5
