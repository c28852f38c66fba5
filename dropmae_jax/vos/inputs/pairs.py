"""One DropSeg training item: a frame pair of one video, its objects, STCN's augmentation.

jimmy-dq/DropSeg `dataset/vos_dataset.py` (`VOSDataset.__getitem__`, two frames), per item:

  up to `trials` (released 5) times:
    start ~ U{0 .. n-2}; second ~ U{start+1 .. min(n, start + max_jump) - 1} (start+1 if
    max_jump == 1); with probability 0.5 the pair is reversed (the memory frame is then later);
    read and augment both frames (`augment.augment_frame`, one sequence seed, a pair seed each);
    labels = the ids of the AUGMENTED memory-frame mask, minus 0;
    none: the draw failed, draw again from the same video; else stop.
  target = a random label; second = a random other label if any (selector [1, 1]) else none
  (selector [1, 0], all-zero second mask). After `trials` failed draws the last one is kept with
  no object at all (released: target -1, all-zero masks, selector [1, 0]).
  cls_gt of a frame: 0 background, 1 the target, 2 the second object.

Void (255 in DAVIS annotations) is background here: it is set to 0 when the mask is read, before
augmentation (the released reads the raw PNG and would take 255 as an object id; DAVIS-2017's
evaluation, `davis.DavisDataset`, also reads it as background, and a void region is not an
object to segment). Since NEAREST resampling and the affine's 0 fill never make a new id, this
equals zeroing 255 after augmentation.

Differences from the released loop, on inputs it would crash on: a frame or mask that cannot be
read, or a mask whose size differs from its frame, makes the item start again on another
(uniformly drawn) video; each such video counts in `skip_count`, and `max_retries` of them in a
row raise RuntimeError naming the last file.

Which video an item uses: the concatenated list is visited in a fresh permutation per epoch
(global item g is position g % N of epoch g // N's permutation, seeded by (seed, epoch)), as the
released DistributedSampler(shuffle=True) with set_epoch does; epochs follow each other without
dropping a partial last batch. Everything else an item draws comes from a numpy Generator seeded
by (seed, g) alone, so items do not depend on workers, threads or hosts.
"""
from __future__ import annotations

import grain
import numpy as np

from dropmae_jax.data import images
from dropmae_jax.vos import davis
from dropmae_jax.vos.inputs import augment
from dropmae_jax.vos.inputs.videos import TrainingVideo

_ITEM_TAG = 0      # keeps the item streams apart from the epoch permutations for one seed
_ORDER_TAG = 1
_SEED_LIMIT = 2147483647    # released: np.random.randint(2147483647) for both seeds


def draw_frame_pair(rng: np.random.Generator, num_frames: int, max_jump: int,
                    reverse_prob: float = 0.5) -> tuple[int, int]:
  """-> (memory frame, query frame): two distinct frames at most max_jump - 1 apart."""
  if num_frames < 2:
    raise ValueError(f"a pair needs 2 frames, the video has {num_frames}")
  start = int(rng.integers(0, num_frames - 1))
  if max_jump <= 1:
    second = start + 1
  else:
    second = int(rng.integers(start + 1, min(num_frames, start + max_jump)))
  if rng.random() < reverse_prob:
    return second, start
  return start, second


def choose_objects(rng: np.random.Generator, memory_ids: np.ndarray
                   ) -> tuple[int, int] | None:
  """Target and second object ids of the memory frame's mask (second 0 = none); None if empty."""
  labels = np.unique(memory_ids)
  labels = labels[labels != 0]
  if not len(labels):
    return None
  target = int(rng.choice(labels))
  rest = labels[labels != target]
  return target, (int(rng.choice(rest)) if len(rest) else 0)


def pair_targets(memory_ids: np.ndarray, query_ids: np.ndarray, objects: tuple[int, int] | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """-> memory_masks float32 (2, S, S), query cls_gt int32 (S, S), selector float32 (2,)."""
  masks = np.zeros((2,) + memory_ids.shape, np.float32)
  cls_gt = np.zeros(query_ids.shape, np.int32)
  selector = np.array([1.0, 0.0], np.float32)
  if objects is None:
    return masks, cls_gt, selector
  target, second = objects
  masks[0] = memory_ids == target
  cls_gt[query_ids == target] = 1
  if second:
    masks[1] = memory_ids == second
    cls_gt[query_ids == second] = 2
    selector[1] = 1.0
  return masks, cls_gt, selector


def read_frame(video: TrainingVideo, t: int) -> tuple[np.ndarray, np.ndarray]:
  """uint8 (H, W, 3) RGB and uint8 (H, W) ids (void 255 -> 0) of frame t.

  Raises images.ImageReadError / davis.VosDataError (unreadable, or sizes that differ).
  """
  image = images.read_rgb(video.frame_path(t))
  ids = davis.read_ids_png(video.mask_path(t))
  if ids.shape != image.shape[:2]:
    raise davis.VosDataError(f"{video.mask_path(t)}: mask is {ids.shape[1]}x{ids.shape[0]}, "
                             f"its frame {image.shape[1]}x{image.shape[0]}")
  if (ids == davis.VOID_ID).any():
    ids = np.where(ids == davis.VOID_ID, 0, ids).astype(np.uint8)
  return image, ids


class VosItemMap(grain.transforms.Map):
  """Global item index -> one training pair (grain Map; picklable into worker processes).

  Output (one item; batches stack b of them):
    memory_frame, query_frame uint8 (S, S, 3)   RGB after augmentation (not normalised)
    memory_masks float32 (2, S, S)             target, second object in the memory frame
    query_labels int32 (S, S)                  the query frame's cls_gt in {0, 1, 2}
    selector float32 (2,)                      [1, 1] with a second object, else [1, 0]
    skip_count int32 ()                        failed draws (no object) + unreadable videos
    video_index, memory_index, query_index int32 ()   video of `videos`, its two frames
  """

  def __init__(self, videos: list[TrainingVideo], size: int, *, seed: int, trials: int = 5,
               reverse_prob: float = 0.5, max_retries: int = 100):
    if not videos:
      raise ValueError("no training videos")
    if trials < 1:
      raise ValueError(f"trials must be >= 1, got {trials}")
    self.videos = list(videos)
    self.size = int(size)
    self.seed = int(seed) & 0xFFFFFFFF
    self.trials = int(trials)
    self.reverse_prob = float(reverse_prob)
    self.max_retries = int(max_retries)

  def item_rng(self, index: int) -> np.random.Generator:
    return np.random.default_rng([self.seed, _ITEM_TAG, int(index)])

  def video_of(self, index: int) -> int:
    """The video of global item `index`: its position in its epoch's permutation."""
    n = len(self.videos)
    epoch, position = divmod(int(index), n)
    order = np.random.default_rng([self.seed, _ORDER_TAG, epoch]).permutation(n)
    return int(order[position])

  def _augmented(self, video: TrainingVideo, t: int, sequence_seed: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    image, ids = read_frame(video, t)
    pair_seed = int(rng.integers(_SEED_LIMIT))
    return augment.augment_frame(image, ids, sequence_seed, pair_seed, self.size)

  def _from_video(self, video: TrainingVideo, rng: np.random.Generator) -> dict:
    """The released trial loop on one video (module docstring); raises on unreadable files."""
    failed = 0
    for _ in range(self.trials):
      memory, query = draw_frame_pair(rng, video.num_frames, video.max_jump, self.reverse_prob)
      sequence_seed = int(rng.integers(_SEED_LIMIT))
      memory_frame, memory_ids = self._augmented(video, memory, sequence_seed, rng)
      query_frame, query_ids = self._augmented(video, query, sequence_seed, rng)
      objects = choose_objects(rng, memory_ids)
      if objects is not None:
        break
      failed += 1
    masks, cls_gt, selector = pair_targets(memory_ids, query_ids, objects)
    return dict(memory_frame=memory_frame, query_frame=query_frame, memory_masks=masks,
                query_labels=cls_gt, selector=selector, failed=failed,
                memory_index=memory, query_index=query)

  def map(self, element: int) -> dict[str, np.ndarray]:
    rng = self.item_rng(int(element))
    v = self.video_of(int(element))
    unreadable = 0
    while True:
      try:
        out = self._from_video(self.videos[v], rng)
        break
      except (images.ImageReadError, davis.VosDataError, OSError) as e:
        unreadable += 1
        if unreadable > self.max_retries:
          raise RuntimeError(
              f"{unreadable} videos in a row could not be read (more than "
              f"config.data.max_retries={self.max_retries}); last: "
              f"{self.videos[v].describe()}: {e}") from e
        v = int(rng.integers(0, len(self.videos)))
    skips = out.pop("failed") + unreadable
    return dict(
        memory_frame=out["memory_frame"], query_frame=out["query_frame"],
        memory_masks=out["memory_masks"], query_labels=out["query_labels"],
        selector=out["selector"], skip_count=np.int32(skips), video_index=np.int32(v),
        memory_index=np.int32(out["memory_index"]), query_index=np.int32(out["query_index"]))
