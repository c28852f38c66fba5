"""OSTrack's `TrackingSampler` in 'causal' mode (one template, one search frame).

Per item, the released sampler (lib/train/data/sampler.py) does:

  1. pick a dataset with probability ratio / sum(ratios);
  2. pick a sequence uniformly; video datasets redraw until it has more than 4 visible frames
     (2 * (1 + 1)) and at least 20 frames; image datasets (COCO) skip the check;
  3. video: template t = a uniformly drawn visible frame in [0, len - 1); search = a uniformly drawn
     visible frame in [t + 1, t + max_gap + d) (capped at len), d = 0 and growing by 5 whenever no
     such frame exists (t is redrawn each time) — so the search frame is always later;
     image: template and search are the same image;
  4. read both frames and run the processing (`inputs.processing.process_pair`); any exception
     or a rejected processing result starts again from 1.

Visibility is the released training loaders' (lib/train/dataset/*.py), never the test readers':
  got10k      (absence == 0) & (cover > 0) & (w > 0) & (h > 0)
  lasot       ~full_occlusion & ~out_of_view & (w > 0) & (h > 0)
  trackingnet (w > 0) & (h > 0)
  coco        not consulted (image dataset).

Differences from the released loop, all on inputs it would crash or spin on:
  * a sequence whose annotations cannot be read is treated like one with too few visible frames
    (released: the worker dies); such draws are counted in `sequence_skips`;
  * when every sequence of a chosen dataset is known to be unusable, `NoUsableDataError` is
    raised naming the dataset (released: an endless loop); `max_retries` failed items in a row
    raise RuntimeError with the last reason (released: retries forever).
Only usable sequences are ever returned, and they are drawn uniformly, as in the released
rejection loop (redrawing a known-bad sequence without re-reading it changes nothing but speed).

Determinism: `PairItemMap` seeds a fresh numpy Generator from (seed, split, global item index) for
each item, so an item depends on nothing else — not on the worker that made it, not on what the
worker's caches hold. All counts are per item and also independent of the caches.
"""
from __future__ import annotations

import collections
import dataclasses
import threading

import grain
import numpy as np

from dropmae_jax.data import images
from dropmae_jax.track.inputs import coco as coco_lib
from dropmae_jax.track.inputs import processing
from dropmae_jax.track import datasets as track_datasets
from dropmae_jax.track.datasets import DatasetError

VIDEO_DATASETS = ("got10k", "lasot", "trackingnet")
IMAGE_DATASETS = ("coco",)
DATASETS = VIDEO_DATASETS + IMAGE_DATASETS

MIN_VISIBLE = 4            # released: visible.sum() > 2 * (num_search + num_template) = 4
MIN_FRAMES = 20            # released: len(visible) >= 20
GAP_STEP = 5               # released: gap_increase += 5 per failed search-frame draw
_MAX_ID_ATTEMPTS = 10_000  # template redraws per sequence before giving up (never reached in practice)
_MAX_SEQUENCE_DRAWS = 1_000_000
_SPLIT_TAGS = {"train": 0, "val": 1}   # keeps train and val items apart for one seed


class NoUsableDataError(RuntimeError):
  """Every sequence of a dataset is unusable (no readable annotation, too few visible frames)."""


@dataclasses.dataclass
class SequenceInfo:
  """What the sampler needs of one sequence: boxes (N, 4) float64, visible (N,) bool, frames."""
  boxes: np.ndarray
  visible: np.ndarray
  frames: list[str]


def released_visibility(dataset: str, seq: track_datasets.Sequence) -> np.ndarray:
  """The released *training* loaders' per-frame `visible` for a sequence (module docstring)."""
  gt = seq.ground_truth
  valid = (gt[:, 2] > 0) & (gt[:, 3] > 0)   # NaN compares False: unknown boxes are invalid
  visible = valid.copy()
  if dataset in ("got10k", "lasot") and seq.target_visible is not None:
    visible &= seq.target_visible      # got10k: absence == 0; lasot: ~occlusion & ~out_of_view
  if dataset == "got10k" and seq.cover is not None:
    visible &= seq.cover > 0
  return visible


def _read_split_file(path: str, names: list[str]) -> list[str]:
  """A names file (one sequence a line), or pytracking's data_specs index files (0-based indices
  into the split's sequence list, e.g. got10k_vottrain_split.txt) -> sequence names."""
  entries = track_datasets.read_name_list(path)
  known = set(names)
  if all(e.isdigit() for e in entries) and not any(e in known for e in entries):
    out = []
    for line_no, e in enumerate(entries, 1):
      if int(e) >= len(names):
        raise DatasetError(f"{path}:{line_no}: index {e} but the split has {len(names)} sequences")
      out.append(names[int(e)])
    return out
  return entries


class VideoSource:
  """A video dataset split read through `track.datasets` (names now, sequences on demand)."""
  is_video = True

  def __init__(self, name: str, root: str, split: str, split_file: str = ""):
    if name not in VIDEO_DATASETS:
      raise DatasetError(f"unknown video dataset {name!r}; known: {', '.join(VIDEO_DATASETS)}")
    self.name = name
    self.benchmark = track_datasets.open_benchmark(name, root, split)
    if split_file:
      self.benchmark.restrict(_read_split_file(split_file, self.benchmark.names), split_file)
    if not self.benchmark.names:
      raise DatasetError(f"{name} split {split!r} under {root} has no sequences")

  def __len__(self) -> int:
    return len(self.benchmark)

  def describe(self, i: int) -> str:
    return f"{self.name}/{self.benchmark.names[i]}"

  def info(self, i: int) -> SequenceInfo:
    seq = self.benchmark.sequence(self.benchmark.names[i])
    if not seq.fully_annotated:
      raise DatasetError(f"{self.describe(i)}: only the first frame is annotated (a test split "
                         f"cannot be trained on)")
    return SequenceInfo(seq.ground_truth, released_visibility(self.name, seq), seq.frames)


class CocoSource:
  """COCO instances: each non-crowd annotation is a one-frame sequence."""
  is_video = False
  name = "coco"

  def __init__(self, root: str, split: str = "train2017"):
    self.instances = coco_lib.load_coco_instances(root, split)

  def __len__(self) -> int:
    return len(self.instances)

  def describe(self, i: int) -> str:
    return f"coco/{self.instances.image_path(i)}#{i}"

  def info(self, i: int) -> SequenceInfo:
    box = self.instances.boxes[i][None]
    return SequenceInfo(box, (box[:, 2] > 0) & (box[:, 3] > 0), [self.instances.image_path(i)])


def open_source(name: str, root: str, split: str, split_file: str = ""):
  """The training source for a dataset name (got10k / lasot / trackingnet / coco)."""
  if name == "coco":
    if split_file:
      raise DatasetError("coco takes no split file (config.data.split_files.coco must be '')")
    return CocoSource(root, split)
  return VideoSource(name, root, split, split_file)


@dataclasses.dataclass
class Draw:
  """One sampled pair: which dataset / sequence, the frame ids and the sequence's info."""
  dataset: int
  sequence: int
  template_frame: int
  search_frame: int
  info: SequenceInfo


class PairSampler:
  """Steps 1-3 of the module docstring over `sources` (VideoSource / CocoSource objects)."""

  def __init__(self, sources: list, ratios, max_gap: int = 200, cache_size: int = 256):
    if len(sources) != len(ratios) or not sources:
      raise ValueError(f"{len(sources)} datasets but {len(ratios)} ratios")
    ratios = np.asarray(ratios, np.float64)
    if (ratios < 0).any() or not ratios.sum() > 0:
      raise ValueError(f"dataset ratios must be >= 0 with a positive sum, got {ratios.tolist()}")
    self.sources = list(sources)
    self.probs = ratios / ratios.sum()
    self.max_gap = int(max_gap)
    self._cache_size = int(cache_size)
    self._reset_caches()

  def _reset_caches(self) -> None:
    # Per-process memo (rebuilt in each grain worker): recently read sequence infos and the
    # sequences found unusable, with the reason, so a redraw of one never re-reads its files.
    self._infos: collections.OrderedDict = collections.OrderedDict()
    self._unusable: list[dict[int, str]] = [{} for _ in self.sources]
    self._lock = threading.Lock()

  def __getstate__(self):
    state = dict(self.__dict__)
    for key in ("_infos", "_unusable", "_lock"):
      state.pop(key)
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._reset_caches()

  def _info(self, d: int, i: int) -> SequenceInfo | str:
    """The sequence's info if usable, else why not (memoised)."""
    with self._lock:
      if i in self._unusable[d]:
        return self._unusable[d][i]
      if (d, i) in self._infos:
        self._infos.move_to_end((d, i))
        return self._infos[(d, i)]
    source = self.sources[d]
    try:
      info = source.info(i)
      why = ""
      if source.is_video and not (int(info.visible.sum()) > MIN_VISIBLE
                                  and len(info.visible) >= MIN_FRAMES):
        why = (f"{source.describe(i)}: {int(info.visible.sum())} visible of {len(info.visible)} "
               f"frames (needs > {MIN_VISIBLE} visible and >= {MIN_FRAMES} frames)")
    except (DatasetError, OSError, ValueError) as e:
      why = f"{source.describe(i)}: {e}"
    with self._lock:
      if why:
        self._unusable[d][i] = why
        return why
      self._infos[(d, i)] = info
      while len(self._infos) > self._cache_size:
        self._infos.popitem(last=False)
    return info

  def sample_sequence(self, d: int, rng: np.random.Generator
                      ) -> tuple[int, SequenceInfo, int]:
    """A uniformly drawn usable sequence of dataset d -> (index, info, unusable draws)."""
    source = self.sources[d]
    n = len(source)
    skipped = 0
    for _ in range(_MAX_SEQUENCE_DRAWS):
      i = int(rng.integers(0, n))
      info = self._info(d, i)
      if not isinstance(info, str):
        return i, info, skipped
      skipped += 1
      if len(self._unusable[d]) >= n:
        examples = list(self._unusable[d].values())[:3]
        raise NoUsableDataError(
            f"no usable sequence in {source.name} ({n} sequences; a video needs > {MIN_VISIBLE} "
            f"visible frames, >= {MIN_FRAMES} frames and readable annotations), e.g. "
            + "; ".join(examples))
    raise NoUsableDataError(f"{source.name}: {_MAX_SEQUENCE_DRAWS} sequence draws without a "
                            f"usable one ({len(self._unusable[d])} of {n} known unusable)")

  def sample_frame_ids(self, visible: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """Released 'causal' ids: t visible in [0, len-1), s visible in [t+1, t+max_gap+d)."""
    n = len(visible)
    base = np.flatnonzero(visible[:n - 1])
    gap_increase = 0
    for _ in range(_MAX_ID_ATTEMPTS):
      t = int(base[rng.integers(0, len(base))])
      lo, hi = t + 1, min(t + self.max_gap + gap_increase, n)
      later = np.flatnonzero(visible[lo:hi]) + lo if hi > lo else np.empty(0, np.int64)
      if len(later):
        return t, int(later[rng.integers(0, len(later))])
      gap_increase += GAP_STEP
    raise RuntimeError(f"no search frame after {_MAX_ID_ATTEMPTS} template draws")

  def sample(self, rng: np.random.Generator) -> tuple[Draw, int]:
    """Steps 1-3 -> (Draw, unusable-sequence draws passed over on the way)."""
    d = int(rng.choice(len(self.sources), p=self.probs))
    i, info, skipped = self.sample_sequence(d, rng)
    if self.sources[d].is_video:
      t, s = self.sample_frame_ids(info.visible, rng)
    else:
      t = s = 0
    return Draw(d, i, t, s, info), skipped


class PairItemMap(grain.transforms.Map):
  """Global item index -> one processed pair (grain Map; picklable into worker processes).

  The item's RNG is seeded from (seed, split, index) alone. Output (one item; grain stacks b):
    template uint8 (Hz, Hz, 3), search uint8 (Hx, Hx, 3)      crops after flips, before brightness
    template_box, search_box float32 (4,)                     normalised (x, y, w, h) in the crop
    template_brightness, search_brightness float32 ()        U[0.8, 1.2) factors (1 for val)
    skip_count int32 ()        resamples for this item: unreadable frames, exceptions, rejections
    sequence_skips int32 ()    unusable sequences drawn and passed over (released loop, counted)
    dataset_index, sequence_index, template_frame, search_frame int32 ()   what was used
  """

  def __init__(self, sampler: PairSampler, settings: processing.ProcessingSettings, *,
               seed: int, split: str = "train", max_retries: int = 100):
    if split not in _SPLIT_TAGS:
      raise ValueError(f"split must be one of {tuple(_SPLIT_TAGS)}, got {split!r}")
    self.sampler = sampler
    self.settings = settings
    self.seed = int(seed)
    self.split = split
    self.max_retries = int(max_retries)

  def item_rng(self, index: int) -> np.random.Generator:
    return np.random.default_rng([self.seed & 0xFFFFFFFF, _SPLIT_TAGS[self.split], int(index)])

  def map(self, element: int) -> dict[str, np.ndarray]:
    rng = self.item_rng(int(element))
    failures = 0
    sequence_skips = 0
    reasons: list[str] = []
    while True:
      draw, skipped = self.sampler.sample(rng)   # NoUsableDataError propagates: nothing to retry
      sequence_skips += skipped
      try:
        paths = draw.info.frames
        template = images.read_rgb(paths[draw.template_frame])
        search = (template if draw.search_frame == draw.template_frame
                  else images.read_rgb(paths[draw.search_frame]))
        draws = processing.draw_pair(rng, self.settings)
        item, why = processing.process_pair(
            template, draw.info.boxes[draw.template_frame], search,
            draw.info.boxes[draw.search_frame], self.settings, draws)
      except Exception as e:  # pylint: disable=broad-except
        # Released: a bare `except` resamples on anything (TrackingNet read failures, cv2 errors).
        item, why = None, f"{type(e).__name__}: {e}"
      if item is not None:
        break
      failures += 1
      reasons.append(f"{self.sampler.sources[draw.dataset].describe(draw.sequence)} frames "
                     f"{draw.template_frame}/{draw.search_frame}: {why}")
      if failures > self.max_retries:
        raise RuntimeError(
            f"{failures} pairs in a row were unusable (more than config.data.max_retries="
            f"{self.max_retries}); last reasons: " + " | ".join(reasons[-3:]))
    item.update(
        skip_count=np.int32(failures), sequence_skips=np.int32(sequence_skips),
        dataset_index=np.int32(draw.dataset), sequence_index=np.int32(draw.sequence),
        template_frame=np.int32(draw.template_frame), search_frame=np.int32(draw.search_frame))
    return item

