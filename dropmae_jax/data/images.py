"""Image files and pixel normalisation shared by every task.

One reader for the JPEG / PNG frames of tracking and segmentation datasets (the released trackers
read with `cv2.imread` and convert BGR -> RGB; PIL's decode gives the same pixels for baseline
JPEGs and PNGs), and the ImageNet statistics the models normalise with.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # per RGB channel, on [0, 1] pixel values
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageReadError(RuntimeError):
  """A missing or unreadable image file; the message names the file."""


def read_rgb(path: str) -> np.ndarray:
  """An image file -> (H, W, 3) uint8 RGB.

  Raises:
    ImageReadError: the file is missing, truncated or not an image (message names the file).
  """
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"))
  except (OSError, ValueError, SyntaxError) as e:  # PIL raises SyntaxError on some broken PNGs
    raise ImageReadError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
