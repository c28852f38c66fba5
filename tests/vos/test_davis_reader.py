"""The DAVIS reader and palette PNGs: objects, void, DAVIS-2016 mode, bad input naming the
sequence and frame."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from dropmae_jax.vos import davis

from vos_cases import square_ids, write_davis  # noqa: I100


# ------------------------------------------------------------------------------------------
# palette and reader

def test_palette_is_the_davis_voc_colour_map():
  p = davis.DAVIS_PALETTE
  assert p.shape == (256, 3) and p.dtype == np.uint8
  expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
              5: (128, 0, 128), 6: (0, 128, 128), 7: (128, 128, 128), 8: (64, 0, 0),
              255: (224, 224, 192)}
  for i, rgb in expected.items():
    assert tuple(p[i]) == rgb, i


def test_palette_png_round_trip(tmp_path):
  ids = np.arange(60, dtype=np.uint8).reshape(6, 10) % 5
  path = str(tmp_path / "m.png")
  davis.write_palette_png(path, ids)
  with Image.open(path) as image:
    assert image.mode == "P"
    assert image.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
  np.testing.assert_array_equal(davis.read_ids_png(path), ids)
  assert os.listdir(tmp_path) == ["m.png"]   # no temporary left behind
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
  with pytest.raises(davis.VosDataError, match="rgb.png.*not an indexed mask"):
    davis.read_ids_png(str(tmp_path / "rgb.png"))


def test_reader_objects_void_and_2016_mode(tmp_path):
  frames = np.full((3, 32, 48, 3), 100, np.uint8)
  first = square_ids((32, 48), [(2, 10, 2, 10), (20, 30, 30, 40)])
  first[0, 0] = 255   # void reads as background
  later = first.copy()
  root = write_davis(tmp_path / "d17", {"seq": (frames, [first, later, later])})
  ds = davis.DavisDataset(root)
  masks, k = ds.read_annotations(ds.sequence("seq"))
  assert k == 2 and masks.shape == (3, 32, 48) and masks[0, 0, 0] == 0
  assert set(np.unique(masks)) == {0, 1, 2}
  ds16 = davis.DavisDataset(root, year="2017")
  ds16.year = "2016"   # same files, single-object mode: every non-zero pixel (255 too) is object 1
  masks16, k16 = ds16.read_annotations(ds16.sequence("seq"))
  assert k16 == 1 and masks16[0, 0, 0] == 1 and set(np.unique(masks16)) == {0, 1}


def test_reader_reads_davis2016_path_pair_lists(tmp_path):
  path = tmp_path / "val.txt"
  path.write_text("/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png\n"
                  "/JPEGImages/480p/bear/00001.jpg /Annotations/480p/bear/00001.png\n"
                  "/JPEGImages/480p/cows/00000.jpg /Annotations/480p/cows/00000.png\n")
  assert davis.read_sequence_list(str(path)) == ["bear", "cows"]


def test_reader_bad_input_names_sequence_and_frame(tmp_path):
  frames = np.zeros((3, 32, 48, 3), np.uint8)
  good = square_ids((32, 48), [(2, 10, 2, 10)])
  # Missing frame-0 annotation.
  root = write_davis(tmp_path / "a", {"nofirst": (frames, [None, good, good])})
  ds = davis.DavisDataset(root)
  with pytest.raises(davis.VosDataError, match="sequence nofirst frame 00000: no annotation"):
    ds.reference(ds.sequence("nofirst"))
  # An id in a later frame that frame 0 does not define.
  bad = square_ids((32, 48), [(2, 10, 2, 10), (12, 20, 12, 20), (22, 30, 22, 30)])
  root = write_davis(tmp_path / "b", {"newid": (frames, [good, good, bad])})
  ds = davis.DavisDataset(root)
  with pytest.raises(davis.VosDataError, match=r"sequence newid frame 00002: unexpected object ids \[2, 3\]"):
    ds.read_annotations(ds.sequence("newid"))
  # Non-contiguous ids in frame 0.
  gap = good.copy()
  gap[20:30, 20:30] = 3
  root = write_davis(tmp_path / "c", {"gap": (frames, [gap, gap, gap])})
  ds = davis.DavisDataset(root)
  with pytest.raises(davis.VosDataError, match=r"sequence gap frame 00000: unexpected object ids \[1, 3\]"):
    ds.reference(ds.sequence("gap"))
  # A frame of another size.
  root = write_davis(tmp_path / "d", {"resized": (frames, [good, good, good])})
  Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(
      os.path.join(root, "JPEGImages", "480p", "resized", "00001.jpg"))
  ds = davis.DavisDataset(root)
  with pytest.raises(davis.VosDataError, match="sequence resized frame 00001: size 48x40 differs"):
    ds.read_frames(ds.sequence("resized"))

