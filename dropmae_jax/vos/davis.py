"""DAVIS-layout video object segmentation data: sequences, frames, palette-PNG object masks.

Layout (DAVIS 2017 trainval, and what `python -m dropmae_jax.vos.synthetic` writes):
  ROOT/JPEGImages/480p/<seq>/00000.jpg ...
  ROOT/Annotations/480p/<seq>/00000.png ...   palette PNGs, pixel value = object id (0 background)
  ROOT/ImageSets/2017/{train,val}.txt          one sequence name per line
  ROOT/ImageSets/2016/{train,val}.txt          DAVIS-2016's single-object subsets

Object ids follow davis2017-evaluation (`davis2017/davis.py`): the number of objects K of a sequence
is the largest id in its first annotation, and 255 (void) reads as background (the toolkit sets it
to 0 before it splits the objects). `year='2016'` is the single-object mode: every non-zero pixel
is the one object (DAVIS-2016 annotations are 0/255; DAVIS-2017 ones are merged).

Anything malformed -- no annotation for frame 0, an id the first frame does not define, frames of
different sizes within a sequence, a PNG that is not indexed -- raises `VosDataError` naming the
sequence and the frame.
"""
from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

from dropmae_jax.data import images

VOID_ID = 255
YEARS = ("2016", "2017")


class VosDataError(ValueError):
  """A dataset / results folder that cannot be read; the message names the sequence and frame."""


def _voc_palette() -> np.ndarray:
  """(256, 3) uint8: the PASCAL VOC colour map that DAVIS annotations carry (id 1 = (128, 0, 0)).

  Colour of id i: its bits 0, 1, 2 go to the top bits of R, G, B, then bits 3, 4, 5 to the next
  lower bits, and so on.
  """
  palette = np.zeros((256, 3), np.uint8)
  for i in range(256):
    c, r, g, b = i, 0, 0, 0
    for shift in range(7, -1, -1):
      r |= (c & 1) << shift
      g |= ((c >> 1) & 1) << shift
      b |= ((c >> 2) & 1) << shift
      c >>= 3
    palette[i] = (r, g, b)
  return palette


DAVIS_PALETTE = _voc_palette()


def read_ids_png(path: str) -> np.ndarray:
  """uint8 (H, W) object ids of an indexed PNG (mode P, or L / 1 as some methods write)."""
  try:
    with Image.open(path) as image:
      mode = image.mode
      ids = np.asarray(image)
  except (OSError, ValueError) as e:
    raise VosDataError(f"{path}: unreadable PNG ({type(e).__name__}: {e})") from e
  if mode in ("P", "L"):
    return ids.astype(np.uint8)
  if mode == "1":
    return ids.astype(np.uint8)
  if mode in ("I", "I;16", "I;16B") and ids.ndim == 2 and ids.size and ids.max() <= 255:
    return ids.astype(np.uint8)
  raise VosDataError(f"{path}: PNG mode {mode!r} of shape {ids.shape} is not an indexed mask "
                     "(expected a palette PNG whose pixel values are object ids)")


def write_palette_png(path: str, ids: np.ndarray, palette: np.ndarray = DAVIS_PALETTE) -> None:
  """Writes a (H, W) uint8 id map as a palette PNG, atomically (temporary file + rename)."""
  ids = np.asarray(ids)
  if ids.ndim != 2:
    raise ValueError(f"{path}: an id map must be (H, W), got {ids.shape}")
  image = Image.fromarray(ids.astype(np.uint8), mode="P")
  image.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(buffer.getvalue())
  os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class VosSequence:
  """One sequence: sorted frame paths and, per frame, its annotation path (None if absent)."""
  name: str
  frames: tuple[str, ...]
  annotations: tuple[str | None, ...]

  @property
  def num_frames(self) -> int:
    return len(self.frames)

  @property
  def frame_ids(self) -> tuple[str, ...]:
    """File stems ('00000', ...): results are named <stem>.png."""
    return tuple(os.path.splitext(os.path.basename(p))[0] for p in self.frames)


def read_sequence_list(path: str) -> list[str]:
  """Names from an ImageSets file: one per line (2017), or DAVIS-2016's 'JPEG PNG' path pairs."""
  if not os.path.isfile(path):
    raise VosDataError(f"{path}: sequence list not found")
  names: list[str] = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      if "/" in line:  # '/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png'
        line = line.split()[0].strip("/").split("/")[-2]
      if line not in names:
        names.append(line)
  return names


class DavisDataset:
  """A DAVIS-layout folder. Frames and masks are read on demand.

  Args:
    root: folder holding JPEGImages/, Annotations/, ImageSets/.
    subset: 'train' | 'val' (any ImageSets/<year>/<subset>.txt).
    year: '2017' (multi-object) | '2016' (single-object: all non-zero ids merged into 1).
    resolution: '480p' | 'Full-Resolution'.
    sequences: names to use instead of the ImageSets list.
  """

  def __init__(self, root: str, subset: str = "val", year: str = "2017",
               resolution: str = "480p", sequences: Sequence[str] | None = None):
    if year not in YEARS:
      raise ValueError(f"year must be one of {YEARS}, got {year!r}")
    self.root, self.subset, self.year, self.resolution = root, subset, year, resolution
    self.image_dir = os.path.join(root, "JPEGImages", resolution)
    self.mask_dir = os.path.join(root, "Annotations", resolution)
    if not os.path.isdir(root):
      raise VosDataError(f"{root}: DAVIS root not found")
    for folder in (self.image_dir, self.mask_dir):
      if not os.path.isdir(folder):
        raise VosDataError(f"{folder}: not found (expected the DAVIS layout "
                           "JPEGImages/<res>/<seq>, Annotations/<res>/<seq>)")
    if sequences is None:
      sequences = read_sequence_list(os.path.join(root, "ImageSets", year, f"{subset}.txt"))
    self.names = list(sequences)
    if not self.names:
      raise VosDataError(f"{root}: no sequences in subset {subset!r} ({year})")

  def __len__(self) -> int:
    return len(self.names)

  def __iter__(self) -> Iterator[VosSequence]:
    for name in self.names:
      yield self.sequence(name)

  def sequence(self, name: str) -> VosSequence:
    folder = os.path.join(self.image_dir, name)
    frames = sorted(f for f in os.listdir(folder) if f.lower().endswith(".jpg")) \
        if os.path.isdir(folder) else []
    if not frames:
      raise VosDataError(f"sequence {name}: no JPEG frames in {folder}")
    annotations = []
    for frame in frames:
      png = os.path.join(self.mask_dir, name, os.path.splitext(frame)[0] + ".png")
      annotations.append(png if os.path.isfile(png) else None)
    return VosSequence(name, tuple(os.path.join(folder, f) for f in frames), tuple(annotations))

  # --- frames ---

  def read_frames(self, seq: VosSequence, indices: Sequence[int] | None = None) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB; every frame must have the first frame's size."""
    indices = range(seq.num_frames) if indices is None else indices
    frames, size = [], None
    for t in indices:
      try:
        image = images.read_rgb(seq.frames[t])
      except images.ImageReadError as e:
        raise VosDataError(str(e)) from e
      size = size or self.frame_size(seq)
      if image.shape[:2] != size:
        raise VosDataError(f"sequence {seq.name} frame {seq.frame_ids[t]}: size "
                           f"{image.shape[1]}x{image.shape[0]} differs from the first frame's "
                           f"{size[1]}x{size[0]}")
      frames.append(image)
    return np.stack(frames)

  def frame_size(self, seq: VosSequence) -> tuple[int, int]:
    """(H, W) of the first frame."""
    with Image.open(seq.frames[0]) as image:
      return image.size[1], image.size[0]

  # --- annotations ---

  def _ids(self, raw: np.ndarray) -> np.ndarray:
    if self.year == "2016":
      return (raw > 0).astype(np.uint8)
    ids = raw.copy()
    ids[ids == VOID_ID] = 0   # davis2017-evaluation: void reads as background
    return ids

  def reference(self, seq: VosSequence) -> tuple[np.ndarray, int]:
    """(frame-0 ids uint8 (H, W), number of objects K); ids are exactly 0..K."""
    path = seq.annotations[0]
    if path is None:
      raise VosDataError(f"sequence {seq.name} frame {seq.frame_ids[0]}: no annotation for the "
                         f"first frame (expected {os.path.join(self.mask_dir, seq.name, seq.frame_ids[0] + '.png')})")
    ids = self._ids(read_ids_png(path))
    size = self.frame_size(seq)
    if ids.shape != size:
      raise VosDataError(f"sequence {seq.name} frame {seq.frame_ids[0]}: annotation is "
                         f"{ids.shape[1]}x{ids.shape[0]}, the frame {size[1]}x{size[0]}")
    present = sorted(int(v) for v in np.unique(ids) if v)
    if not present:
      raise VosDataError(f"sequence {seq.name} frame {seq.frame_ids[0]}: the first annotation "
                         "holds no object")
    k = present[-1]
    if present != list(range(1, k + 1)):
      missing = sorted(set(range(1, k + 1)) - set(present))
      raise VosDataError(f"sequence {seq.name} frame {seq.frame_ids[0]}: unexpected object ids "
                         f"{present} (ids must be 1..{k}; {missing} absent from the first frame)")
    return ids, k

  def read_annotations(self, seq: VosSequence) -> tuple[np.ndarray, int]:
    """(uint8 (T, H, W) ids of every frame, K). Every frame needs an annotation whose ids are
    in 0..K (or the void 255), K from frame 0."""
    first, k = self.reference(seq)
    masks = np.zeros((seq.num_frames,) + first.shape, np.uint8)
    masks[0] = first
    for t in range(1, seq.num_frames):
      path = seq.annotations[t]
      if path is None:
        raise VosDataError(f"sequence {seq.name} frame {seq.frame_ids[t]}: no annotation "
                           f"({os.path.join(self.mask_dir, seq.name, seq.frame_ids[t] + '.png')})")
      raw = read_ids_png(path)
      if raw.shape != first.shape:
        raise VosDataError(f"sequence {seq.name} frame {seq.frame_ids[t]}: annotation is "
                           f"{raw.shape[1]}x{raw.shape[0]}, frame 0's {first.shape[1]}x{first.shape[0]}")
      ids = self._ids(raw)
      bad = sorted(int(v) for v in np.unique(ids) if v > k)
      if bad:
        raise VosDataError(f"sequence {seq.name} frame {seq.frame_ids[t]}: unexpected object ids "
                           f"{bad} (the first frame defines 1..{k})")
      masks[t] = ids
    return masks, k
