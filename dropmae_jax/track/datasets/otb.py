"""OTB-2015 (the layout OSTrack's `lib/test/evaluation/otbdataset.py` reads).

  ROOT/<seq>/img/0001.jpg.., ROOT/<seq>/groundtruth_rect*.txt (comma or whitespace); the 100
  OTB-2015 sequences with pytracking's start/end frames, names and Tiger1's 5 omitted frames.
"""
from __future__ import annotations

import os

from dropmae_jax.track.datasets.base import TableBenchmark
from dropmae_jax.track.datasets.sequence import DatasetError, Sequence


class OTB(TableBenchmark):
  dataset = "otb"

  def __init__(self, root: str, split: str):
    if not os.path.isdir(root):
      raise DatasetError(f"{root}: no such OTB root (expected ROOT/<seq>/img/, "
                         f"ROOT/<seq>/groundtruth_rect.txt)")
    entries = {e[0]: e for e in OTB100_SEQUENCES}
    present = [n for n, e in entries.items() if os.path.isdir(os.path.join(root, e[1], "img"))]
    if not present:
      raise DatasetError(f"{root} does not look like OTB: none of the 100 sequence folders "
                         f"ROOT/<seq>/img/ exist (e.g. {os.path.join(root, 'Basketball', 'img')})")
    if split == "test" and len(present) != len(entries):
      missing = [n for n in entries if n not in set(present)]
      raise DatasetError(f"{root}: {len(missing)} OTB-100 sequences missing, e.g. {missing[:3]}; "
                         f"use --split=all to score the ones present")
    super().__init__(root, split, {n: entries[n] for n in present}, "ROOT/<seq>/img/0001.jpg..")

  def sequence(self, name: str) -> Sequence:
    _, folder, first, last, digits, anno, omit = self.entries[name]
    frames, gt = self._frames_and_gt(
        name, os.path.join(self.root, folder, "img"), first, last, digits,
        os.path.join(self.root, folder, anno), omit, allow_nan=False)
    return Sequence(name, frames, gt, self.dataset)


# Transcribed from pytracking (botaoye/OSTrack @ 33b5e12, lib/test/evaluation/otbdataset.py).
# OTB-2015: (name, folder, first frame, last frame, digits, annotation file, frames omitted at start).
OTB100_SEQUENCES = (
  ("Basketball", "Basketball", 1, 725, 4, "groundtruth_rect.txt", 0),
  ("Biker", "Biker", 1, 142, 4, "groundtruth_rect.txt", 0),
  ("Bird1", "Bird1", 1, 408, 4, "groundtruth_rect.txt", 0),
  ("Bird2", "Bird2", 1, 99, 4, "groundtruth_rect.txt", 0),
  ("BlurBody", "BlurBody", 1, 334, 4, "groundtruth_rect.txt", 0),
  ("BlurCar1", "BlurCar1", 247, 988, 4, "groundtruth_rect.txt", 0),
  ("BlurCar2", "BlurCar2", 1, 585, 4, "groundtruth_rect.txt", 0),
  ("BlurCar3", "BlurCar3", 3, 359, 4, "groundtruth_rect.txt", 0),
  ("BlurCar4", "BlurCar4", 18, 397, 4, "groundtruth_rect.txt", 0),
  ("BlurFace", "BlurFace", 1, 493, 4, "groundtruth_rect.txt", 0),
  ("BlurOwl", "BlurOwl", 1, 631, 4, "groundtruth_rect.txt", 0),
  ("Board", "Board", 1, 698, 5, "groundtruth_rect.txt", 0),
  ("Bolt", "Bolt", 1, 350, 4, "groundtruth_rect.txt", 0),
  ("Bolt2", "Bolt2", 1, 293, 4, "groundtruth_rect.txt", 0),
  ("Box", "Box", 1, 1161, 4, "groundtruth_rect.txt", 0),
  ("Boy", "Boy", 1, 602, 4, "groundtruth_rect.txt", 0),
  ("Car1", "Car1", 1, 1020, 4, "groundtruth_rect.txt", 0),
  ("Car2", "Car2", 1, 913, 4, "groundtruth_rect.txt", 0),
  ("Car24", "Car24", 1, 3059, 4, "groundtruth_rect.txt", 0),
  ("Car4", "Car4", 1, 659, 4, "groundtruth_rect.txt", 0),
  ("CarDark", "CarDark", 1, 393, 4, "groundtruth_rect.txt", 0),
  ("CarScale", "CarScale", 1, 252, 4, "groundtruth_rect.txt", 0),
  ("ClifBar", "ClifBar", 1, 472, 4, "groundtruth_rect.txt", 0),
  ("Coke", "Coke", 1, 291, 4, "groundtruth_rect.txt", 0),
  ("Couple", "Couple", 1, 140, 4, "groundtruth_rect.txt", 0),
  ("Coupon", "Coupon", 1, 327, 4, "groundtruth_rect.txt", 0),
  ("Crossing", "Crossing", 1, 120, 4, "groundtruth_rect.txt", 0),
  ("Crowds", "Crowds", 1, 347, 4, "groundtruth_rect.txt", 0),
  ("Dancer", "Dancer", 1, 225, 4, "groundtruth_rect.txt", 0),
  ("Dancer2", "Dancer2", 1, 150, 4, "groundtruth_rect.txt", 0),
  ("David", "David", 300, 770, 4, "groundtruth_rect.txt", 0),
  ("David2", "David2", 1, 537, 4, "groundtruth_rect.txt", 0),
  ("David3", "David3", 1, 252, 4, "groundtruth_rect.txt", 0),
  ("Deer", "Deer", 1, 71, 4, "groundtruth_rect.txt", 0),
  ("Diving", "Diving", 1, 215, 4, "groundtruth_rect.txt", 0),
  ("Dog", "Dog", 1, 127, 4, "groundtruth_rect.txt", 0),
  ("Dog1", "Dog1", 1, 1350, 4, "groundtruth_rect.txt", 0),
  ("Doll", "Doll", 1, 3872, 4, "groundtruth_rect.txt", 0),
  ("DragonBaby", "DragonBaby", 1, 113, 4, "groundtruth_rect.txt", 0),
  ("Dudek", "Dudek", 1, 1145, 4, "groundtruth_rect.txt", 0),
  ("FaceOcc1", "FaceOcc1", 1, 892, 4, "groundtruth_rect.txt", 0),
  ("FaceOcc2", "FaceOcc2", 1, 812, 4, "groundtruth_rect.txt", 0),
  ("Fish", "Fish", 1, 476, 4, "groundtruth_rect.txt", 0),
  ("FleetFace", "FleetFace", 1, 707, 4, "groundtruth_rect.txt", 0),
  ("Football", "Football", 1, 362, 4, "groundtruth_rect.txt", 0),
  ("Football1", "Football1", 1, 74, 4, "groundtruth_rect.txt", 0),
  ("Freeman1", "Freeman1", 1, 326, 4, "groundtruth_rect.txt", 0),
  ("Freeman3", "Freeman3", 1, 460, 4, "groundtruth_rect.txt", 0),
  ("Freeman4", "Freeman4", 1, 283, 4, "groundtruth_rect.txt", 0),
  ("Girl", "Girl", 1, 500, 4, "groundtruth_rect.txt", 0),
  ("Girl2", "Girl2", 1, 1500, 4, "groundtruth_rect.txt", 0),
  ("Gym", "Gym", 1, 767, 4, "groundtruth_rect.txt", 0),
  ("Human2", "Human2", 1, 1128, 4, "groundtruth_rect.txt", 0),
  ("Human3", "Human3", 1, 1698, 4, "groundtruth_rect.txt", 0),
  ("Human4_2", "Human4", 1, 667, 4, "groundtruth_rect.2.txt", 0),
  ("Human5", "Human5", 1, 713, 4, "groundtruth_rect.txt", 0),
  ("Human6", "Human6", 1, 792, 4, "groundtruth_rect.txt", 0),
  ("Human7", "Human7", 1, 250, 4, "groundtruth_rect.txt", 0),
  ("Human8", "Human8", 1, 128, 4, "groundtruth_rect.txt", 0),
  ("Human9", "Human9", 1, 305, 4, "groundtruth_rect.txt", 0),
  ("Ironman", "Ironman", 1, 166, 4, "groundtruth_rect.txt", 0),
  ("Jogging_1", "Jogging", 1, 307, 4, "groundtruth_rect.1.txt", 0),
  ("Jogging_2", "Jogging", 1, 307, 4, "groundtruth_rect.2.txt", 0),
  ("Jump", "Jump", 1, 122, 4, "groundtruth_rect.txt", 0),
  ("Jumping", "Jumping", 1, 313, 4, "groundtruth_rect.txt", 0),
  ("KiteSurf", "KiteSurf", 1, 84, 4, "groundtruth_rect.txt", 0),
  ("Lemming", "Lemming", 1, 1336, 4, "groundtruth_rect.txt", 0),
  ("Liquor", "Liquor", 1, 1741, 4, "groundtruth_rect.txt", 0),
  ("Man", "Man", 1, 134, 4, "groundtruth_rect.txt", 0),
  ("Matrix", "Matrix", 1, 100, 4, "groundtruth_rect.txt", 0),
  ("Mhyang", "Mhyang", 1, 1490, 4, "groundtruth_rect.txt", 0),
  ("MotorRolling", "MotorRolling", 1, 164, 4, "groundtruth_rect.txt", 0),
  ("MountainBike", "MountainBike", 1, 228, 4, "groundtruth_rect.txt", 0),
  ("Panda", "Panda", 1, 1000, 4, "groundtruth_rect.txt", 0),
  ("RedTeam", "RedTeam", 1, 1918, 4, "groundtruth_rect.txt", 0),
  ("Rubik", "Rubik", 1, 1997, 4, "groundtruth_rect.txt", 0),
  ("Shaking", "Shaking", 1, 365, 4, "groundtruth_rect.txt", 0),
  ("Singer1", "Singer1", 1, 351, 4, "groundtruth_rect.txt", 0),
  ("Singer2", "Singer2", 1, 366, 4, "groundtruth_rect.txt", 0),
  ("Skater", "Skater", 1, 160, 4, "groundtruth_rect.txt", 0),
  ("Skater2", "Skater2", 1, 435, 4, "groundtruth_rect.txt", 0),
  ("Skating1", "Skating1", 1, 400, 4, "groundtruth_rect.txt", 0),
  ("Skating2_1", "Skating2", 1, 473, 4, "groundtruth_rect.1.txt", 0),
  ("Skating2_2", "Skating2", 1, 473, 4, "groundtruth_rect.2.txt", 0),
  ("Skiing", "Skiing", 1, 81, 4, "groundtruth_rect.txt", 0),
  ("Soccer", "Soccer", 1, 392, 4, "groundtruth_rect.txt", 0),
  ("Subway", "Subway", 1, 175, 4, "groundtruth_rect.txt", 0),
  ("Surfer", "Surfer", 1, 376, 4, "groundtruth_rect.txt", 0),
  ("Suv", "Suv", 1, 945, 4, "groundtruth_rect.txt", 0),
  ("Sylvester", "Sylvester", 1, 1345, 4, "groundtruth_rect.txt", 0),
  ("Tiger1", "Tiger1", 1, 354, 4, "groundtruth_rect.txt", 5),
  ("Tiger2", "Tiger2", 1, 365, 4, "groundtruth_rect.txt", 0),
  ("Toy", "Toy", 1, 271, 4, "groundtruth_rect.txt", 0),
  ("Trans", "Trans", 1, 124, 4, "groundtruth_rect.txt", 0),
  ("Trellis", "Trellis", 1, 569, 4, "groundtruth_rect.txt", 0),
  ("Twinnings", "Twinnings", 1, 472, 4, "groundtruth_rect.txt", 0),
  ("Vase", "Vase", 1, 271, 4, "groundtruth_rect.txt", 0),
  ("Walking", "Walking", 1, 412, 4, "groundtruth_rect.txt", 0),
  ("Walking2", "Walking2", 1, 500, 4, "groundtruth_rect.txt", 0),
  ("Woman", "Woman", 1, 597, 4, "groundtruth_rect.txt", 0),
)
