"""Zero-shot label propagation (DINO's `eval_video_segmentation.py`), jitted.

Per target frame t = 1 .. T-1 (facebookresearch/dino, `label_propagation`):
  1. Context = the first frame (its ground-truth one-hot labels at patch resolution) plus the
     last `n_last_frames` targets (their *soft* propagated labels), features L2-normalised.
  2. Affinity of each target patch q to each context patch k: exp(<f_q, f_k> / temperature),
     multiplied by 0 outside a (2·size_mask_neighborhood + 1)² window around q's grid position.
  3. Per query, over all context frames jointly, keep the entries >= the top-k-th value
     (`aff[aff < tk_val_min] = 0`), normalise them to sum 1 and average the context labels.
  4. The soft labels (C, h, w) are upsampled ×patch with bilinear (align_corners=False), each
     channel min-max normalised if its max > 0 (`norm_mask`), argmax'ed, and resized to the
     original frame with PIL's nearest.
Frame 0's output is its annotation. `temperature` is 0.1 in DINO's code (`exp(aff / 0.1)`).

Differences from DINO's code, none of which changes the labels:
  * The context is a fixed-size ring buffer with a validity mask (invalid slots weigh 0, as
    masked neighbours do), so one compiled step serves every frame of every sequence.
  * Label channels are padded to a multiple of 8 with zero channels: they stay zero and never win
    the argmax (ties go to the lowest id), so fewer recompilations.
  * A channel whose soft labels are constant and positive makes DINO's `norm_mask` divide 0 by 0;
    the NaN wins torch's max, so here such a channel counts as +inf.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from dropmae_jax.convert import outputs
from dropmae_jax.vos import davis
from dropmae_jax.vos import features as features_lib

_CHANNEL_BUCKET = 8
_HIGHEST = jax.lax.Precision.HIGHEST


class ProtocolError(ValueError):
  """Protocol settings that cannot work (on these frames); one line naming them."""


@dataclasses.dataclass(frozen=True)
class Protocol:
  """DINO's defaults (eval_video_segmentation.py's argparse and code)."""
  n_last_frames: int = 7
  size_mask_neighborhood: int = 12
  topk: int = 5
  temperature: float = 0.1
  short_side: int = 480
  size_multiple: int = 64

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Protocol":
    return cls(**{f.name: type(f.default)(config[f.name]) for f in dataclasses.fields(cls)})

  def __post_init__(self):
    if self.n_last_frames < 0 or self.topk < 1 or self.temperature <= 0:
      raise ProtocolError(f"bad label-propagation protocol {self}: need n_last_frames >= 0, "
                       "topk >= 1, temperature > 0")


def neighborhood_mask(height: int, width: int, size: int) -> np.ndarray:
  """(h·w, h·w) float32: 1 where the key's grid cell is within `size` rows and columns of the
  query's (restrict_neighborhood); all ones when size <= 0."""
  if size <= 0:
    return np.ones((height * width,) * 2, np.float32)
  rows, cols = np.divmod(np.arange(height * width), width)
  near = ((np.abs(rows[:, None] - rows[None, :]) <= size)
          & (np.abs(cols[:, None] - cols[None, :]) <= size))
  return near.astype(np.float32)


def upsample_matrix(size_in: int, scale: int) -> np.ndarray:
  """(size_in·scale, size_in) float32: one axis of F.interpolate(scale_factor=scale,
  mode='bilinear', align_corners=False, recompute_scale_factor=False)."""
  dst = np.arange(size_in * scale, dtype=np.float64)
  src = np.maximum((dst + 0.5) / scale - 0.5, 0.0)
  i0 = np.floor(src).astype(np.int64)
  i1 = np.minimum(i0 + 1, size_in - 1)
  frac = src - i0
  matrix = np.zeros((size_in * scale, size_in))
  np.add.at(matrix, (np.arange(len(dst)), i0), 1 - frac)
  np.add.at(matrix, (np.arange(len(dst)), i1), frac)
  return matrix.astype(np.float32)


def propagate_labels(target: jax.Array, ctx_feats: jax.Array, ctx_labels: jax.Array,
                     ctx_valid: jax.Array, neighborhood: jax.Array, topk: int,
                     temperature: float) -> jax.Array:
  """One frame's soft labels from its context.

  Args:
    target: (q, D) L2-normalised target features (q = h·w patches).
    ctx_feats: (N, q, D) L2-normalised context features; ctx_labels: (N, q, C); ctx_valid: (N,).
    neighborhood: (q, q) 0/1 mask (query, key).
  Returns: (q, C) float32.
  """
  n, q, _ = ctx_feats.shape
  sim = jnp.einsum("qd,nkd->qnk", target, ctx_feats, precision=_HIGHEST)
  aff = jnp.exp(sim / temperature) * neighborhood[:, None, :] * ctx_valid[None, :, None]
  aff = aff.reshape(q, n * q)
  kth = jax.lax.top_k(aff, topk)[0][:, -1:]
  aff = jnp.where(aff >= kth, aff, 0.0)
  aff = aff / jnp.sum(aff, axis=1, keepdims=True)
  return jnp.einsum("qk,kc->qc", aff, ctx_labels.reshape(n * q, -1), precision=_HIGHEST)


def labels_to_ids(soft: jax.Array, up_h: jax.Array, up_w: jax.Array) -> jax.Array:
  """(h, w, C) soft labels -> uint8 (h·p, w·p) ids: bilinear ×p, norm_mask, argmax."""
  up = jnp.einsum("Hh,hwc,Ww->cHW", up_h, soft, up_w, precision=_HIGHEST)
  low = up.min(axis=(1, 2), keepdims=True)
  high = up.max(axis=(1, 2), keepdims=True)
  span = high - low
  normed = jnp.where(span > 0, (up - low) / jnp.where(span > 0, span, 1.0), jnp.inf)
  up = jnp.where(high > 0, normed, up)
  return jnp.argmax(up, axis=0).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnames=("topk", "temperature", "grid"))
def _step(state, target, first_feat, first_labels, neighborhood, up_h, up_w, *, topk,
          temperature, grid):
  """Propagates to one frame and pushes it into the ring buffer. Returns (state, uint8 ids)."""
  queue_feats, queue_labels, queue_valid, head = state
  ctx_feats = jnp.concatenate([first_feat[None], queue_feats])
  ctx_labels = jnp.concatenate([first_labels[None], queue_labels])
  ctx_valid = jnp.concatenate([jnp.ones((1,), jnp.float32), queue_valid])
  soft = propagate_labels(target, ctx_feats, ctx_labels, ctx_valid, neighborhood, topk,
                          temperature)
  n = queue_feats.shape[0]
  if n:
    queue_feats = queue_feats.at[head].set(target)
    queue_labels = queue_labels.at[head].set(soft)
    queue_valid = queue_valid.at[head].set(1.0)
    head = (head + 1) % n
  ids = labels_to_ids(soft.reshape(grid + (-1,)), up_h, up_w)
  return (queue_feats, queue_labels, queue_valid, head), ids


def one_hot_small(ids: np.ndarray, grid_hw: tuple[int, int], channels: int) -> np.ndarray:
  """(H, W) ids -> (h·w, channels) float32 one-hot of the PIL-nearest downsampled map
  (read_seg + to_one_hot)."""
  h, w = grid_hw
  small = np.asarray(Image.fromarray(ids.astype(np.uint8)).resize((w, h), Image.NEAREST))
  return np.eye(channels, dtype=np.float32)[small.reshape(-1)]


def propagate_sequence(encoder: features_lib.FrameEncoder, frames: np.ndarray,
                       first_ids: np.ndarray, num_objects: int, protocol: Protocol,
                       on_frame: Callable[[], None] | None = None
                       ) -> Iterator[tuple[int, np.ndarray]]:
  """Yields (t, uint8 (H, W) ids) for t = 0 .. T-1 (t = 0: the annotation itself).

  frames: uint8 (T, H, W, 3) at the original size; first_ids: (H, W) ids 0..num_objects.
  """
  t_total, height, width, _ = frames.shape
  in_h, in_w = features_lib.input_size(height, width, protocol.short_side,
                                       protocol.size_multiple)
  p = encoder.patch_size
  if in_h % p or in_w % p or in_h < p or in_w < p:
    raise ProtocolError(f"encoder input {in_w}x{in_h} (from {width}x{height}, short_side "
                     f"{protocol.short_side}, size_multiple {protocol.size_multiple}) is not a "
                     f"positive multiple of the patch size {p}")
  grid = (in_h // p, in_w // p)
  resized = np.stack([features_lib.resize_frame(f, in_h, in_w) for f in frames])
  feats = encoder(resized)
  feats = feats / jnp.maximum(jnp.linalg.norm(feats, axis=-1, keepdims=True), 1e-12)
  channels = -(-(num_objects + 1) // _CHANNEL_BUCKET) * _CHANNEL_BUCKET
  first_labels = jnp.asarray(one_hot_small(first_ids, grid, channels))
  q, d = feats.shape[1:]
  n = protocol.n_last_frames
  state = (jnp.zeros((n, q, d), jnp.float32), jnp.zeros((n, q, channels), jnp.float32),
           jnp.zeros((n,), jnp.float32), jnp.zeros((), jnp.int32))
  neighborhood = jnp.asarray(neighborhood_mask(*grid, protocol.size_mask_neighborhood))
  up_h, up_w = jnp.asarray(upsample_matrix(grid[0], p)), jnp.asarray(upsample_matrix(grid[1], p))
  yield 0, first_ids.astype(np.uint8)
  if on_frame:
    on_frame()
  for t in range(1, t_total):
    state, ids = _step(state, feats[t], feats[0], first_labels, neighborhood, up_h, up_w,
                       topk=protocol.topk, temperature=protocol.temperature, grid=grid)
    ids = np.asarray(ids)
    full = np.asarray(Image.fromarray(ids).resize((width, height), Image.NEAREST))
    if on_frame:
      on_frame()
    yield t, full


class OutputError(ValueError):
  """A results folder that would be overwritten or cannot be written; names the folder."""


def output_state(out_dir: str, seq: davis.VosSequence) -> str:
  """'missing', 'finished' (out_dir/<seq>/ holds a PNG for every frame: `run` renames a
  sequence's folder into place only when complete) or 'partial' (anything else at that path)."""
  folder = os.path.join(out_dir, seq.name)
  if not os.path.lexists(folder):
    return "missing"
  if not os.path.isdir(folder):
    return "partial"
  present = set(os.listdir(folder))
  return "finished" if all(f"{t}.png" in present for t in seq.frame_ids) else "partial"


def select_sequences(dataset: davis.DavisDataset, out_dir: str, overwrite: bool = False
                     ) -> tuple[list[davis.VosSequence], list[davis.VosSequence]]:
  """(sequences to propagate, sequences whose finished results in out_dir are kept).

  Without `overwrite`, finished results are kept, and a folder of a dataset sequence's name that
  is not a finished result (another tool's partial output, a file) stops the run before anything
  is written. With it, every sequence is propagated and its folder replaced.
  """
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise OutputError(f"--out {out_dir} is a file, not a results folder")
  sequences = list(dataset)
  if overwrite:
    return sequences, []
  states = {s.name: output_state(out_dir, s) for s in sequences}
  partial = [n for n, state in states.items() if state == "partial"]
  if partial:
    raise OutputError(
        f"{os.path.join(out_dir, partial[0])} exists but is not a finished result (a PNG for "
        f"every frame){f' (and {len(partial) - 1} more)' if len(partial) > 1 else ''}; remove it "
        f"or pass --overwrite to replace it")
  return ([s for s in sequences if states[s.name] == "missing"],
          [s for s in sequences if states[s.name] == "finished"])


def write_sequences(out_dir: str, sequences: list[davis.VosSequence],
                    labels_of: Callable[[davis.VosSequence], Iterator[tuple[int, np.ndarray]]],
                    *, desc: str, progress: bool = True) -> list[str]:
  """Writes out_dir/<seq>/<frame>.png (palette PNGs) of each of `sequences` from the
  (t, uint8 (H, W) values) that `labels_of(seq)` yields. Shared by `vos propagate` and
  `vos segment`.

  Each sequence is written into a temporary folder and renamed into place when complete (an
  existing one is replaced), so a crash never leaves a half-written sequence; a run that fails
  before its first sequence is complete also removes the folders it created for out_dir.
  Returns the names.
  """
  import tqdm
  if not sequences:
    return []
  created = outputs.missing_folders(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  bar = tqdm.tqdm(total=sum(s.num_frames for s in sequences), desc=desc, unit="frame",
                  disable=not progress)
  try:
    for seq in sequences:
      tmp = os.path.join(out_dir, f".{seq.name}.tmp-{os.getpid()}")
      shutil.rmtree(tmp, ignore_errors=True)
      try:
        os.makedirs(tmp)
        bar.set_postfix_str(seq.name)
        for t, values in labels_of(seq):
          davis.write_palette_png(os.path.join(tmp, f"{seq.frame_ids[t]}.png"), values)
          bar.update(1)
        target = os.path.join(out_dir, seq.name)
        if os.path.isdir(target) and not os.path.islink(target):
          shutil.rmtree(target)
        elif os.path.lexists(target):
          os.remove(target)
        os.replace(tmp, target)
      finally:
        shutil.rmtree(tmp, ignore_errors=True)
  except BaseException:
    for folder in created:   # only the folders this run made, and only while empty
      try:
        os.rmdir(folder)
      except OSError:
        break
    raise
  finally:
    bar.close()
  return [s.name for s in sequences]


def run(encoder: features_lib.FrameEncoder, dataset: davis.DavisDataset, out_dir: str,
        protocol: Protocol, progress: bool = True,
        sequences: list[davis.VosSequence] | None = None) -> list[str]:
  """Propagates `sequences` (default: every sequence of `dataset`) into out_dir/<seq>/<frame>.png
  (palette PNGs; `write_sequences`: each sequence whole or not at all). Returns the names."""
  sequences = list(dataset) if sequences is None else list(sequences)

  def labels_of(seq: davis.VosSequence) -> Iterator[tuple[int, np.ndarray]]:
    first_ids, k = dataset.reference(seq)
    yield from propagate_sequence(encoder, dataset.read_frames(seq), first_ids, k, protocol)

  return write_sequences(out_dir, sequences, labels_of, desc="propagate", progress=progress)
