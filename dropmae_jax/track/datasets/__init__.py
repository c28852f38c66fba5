"""Single-object tracking benchmarks as they lie on disk, read lazily and validated.

Layouts (the ones pytracking / OSTrack's `lib/test/evaluation/*dataset.py` and the GOT-10k toolkit read):

  got10k       ROOT/{train,val,test}/list.txt, ROOT/<split>/<seq>/{00000001.jpg.., groundtruth.txt,
               absence.label, cover.label, cut_by_image.label, meta_info.ini}; the test split's
               groundtruth.txt holds only the first frame's box and no labels.
  lasot        ROOT/<class>/<class>-<n>/{img/00000001.jpg.., groundtruth.txt, full_occlusion.txt,
               out_of_view.txt}; split 'test' = the 280-sequence protocol-II list pytracking ships,
               'train' = every other sequence found, 'all' = every sequence found.
  trackingnet  ROOT/<chunk>/{anno/<seq>.txt, frames/<seq>/<i>.jpg (from 0)}; chunk TEST (first-frame
               box only) or TRAIN_0..TRAIN_11; split 'test', 'train' (all TRAIN_* found) or a chunk name.
  uav          ROOT/data_seq/UAV123/<folder>/000001.jpg.., ROOT/anno/UAV123/<seq>.txt (NaN rows = target
               absent); 123 (sub)sequences with pytracking's start/end frames and names (uav_<seq>).
  otb          ROOT/<seq>/img/0001.jpg.., ROOT/<seq>/groundtruth_rect*.txt (comma or whitespace); the 100
               OTB-2015 sequences with pytracking's start/end frames, names and Tiger1's 5 omitted frames.

One module per benchmark (got10k, lasot, trackingnet, uav, otb) on a common
`Sequence` (sequence.py), file readers (files.py) and lazy reader base (base.py); registry.py opens
a benchmark by name. This package exposes the public API.

Boxes are float64 (x, y, w, h), x/y the top-left pixel. Every malformed input raises `DatasetError`
naming the file (and line) at fault.
"""
from dropmae_jax.track.datasets.base import Benchmark
from dropmae_jax.track.datasets.files import read_flags, read_name_list, read_table
from dropmae_jax.track.datasets.registry import BENCHMARKS, load_dataset, open_benchmark
from dropmae_jax.track.datasets.sequence import DatasetError, Sequence, frame_size

__all__ = ["BENCHMARKS", "Benchmark", "DatasetError", "Sequence", "frame_size", "load_dataset",
           "open_benchmark", "read_flags", "read_name_list", "read_table"]
