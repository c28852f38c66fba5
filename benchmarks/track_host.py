"""The tracker's host side, piece by piece: JPEG decoders on the same files, and the search crop.

  python benchmarks/track_host.py                  # 720p frames from the bundled Big Buck Bunny clip

JPEG decoding (ms per frame, one thread, the best of --repeats passes over the same files), and
whether each decoder's pixels equal the released reader's (`cv2.imread` + BGR->RGB):
  PIL                  Image.open(...).convert("RGB")
  cv2.imread           the released reader, + cvtColor BGR->RGB
  cv2.imdecode         from bytes already read, + cvtColor
  simplejpeg           libjpeg-turbo's TurboJPEG API, straight to RGB
  data.images.read_rgb what the package uses (simplejpeg + EXIF orientation; Pillow otherwise)
The files: --frames frames of the clip saved by Pillow at quality 90 (4:2:0) and at 95 (4:4:4), and
by OpenCV at 90. Then the 384-px search crop of a 1280x720 frame (factor 5) for three box sizes:
`crop.sample_target` (numpy, bit-exact), cv2 (`copyMakeBorder` + `resize`, what the released code
runs), and `device_crop.crop_frames` jitted on this machine's first device (the frame already
there). cv2 is a test dependency (pip install opencv-python-headless); without it its rows are
skipped. Prints tables and a RESULT line.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import numpy as np
from PIL import Image

from dropmae_jax.data import images
from dropmae_jax.data import samples
from dropmae_jax.track import crop as crop_lib
from dropmae_jax.track import device_crop

try:
  import cv2
except ImportError:   # a test dependency only
  cv2 = None


def _clip_frames(count: int) -> list[np.ndarray]:
  import av
  frames = []
  with av.open(os.path.join(samples.sample_video_dir(), "bigbuckbunny.mp4")) as container:
    for i, frame in enumerate(container.decode(video=0)):
      if i % 10 == 0:
        frames.append(frame.to_ndarray(format="rgb24"))
      if len(frames) == count:
        break
  return frames


def _best(fn, items, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for item in items:
      fn(item)
    best = min(best, (time.perf_counter() - start) / len(items))
  return best


def decoders():
  def pil(path):
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"))

  def simplejpeg_rgb(path):
    import simplejpeg
    with open(path, "rb") as f:
      return simplejpeg.decode_jpeg(f.read(), colorspace="RGB")

  table = [("PIL", pil)]
  if cv2 is not None:
    def cv2_imdecode(path):
      with open(path, "rb") as f:
        data = np.frombuffer(f.read(), np.uint8)
      return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    table += [("cv2.imread", _released_read), ("cv2.imdecode", cv2_imdecode)]
  return table + [("simplejpeg", simplejpeg_rgb), ("data.images.read_rgb", images.read_rgb)]


def _released_read(path):
  return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _cv2_crop(image, box, factor, size):
  """OSTrack's sample_target, the image part, as released (slice, copyMakeBorder, resize)."""
  crop_sz, x1, y1, x1_pad, x2_pad, y1_pad, y2_pad = crop_lib.crop_window(box, factor,
                                                                         image.shape[:2])
  patch = image[y1 + y1_pad:y1 + crop_sz - y2_pad, x1 + x1_pad:x1 + crop_sz - x2_pad]
  patch = cv2.copyMakeBorder(patch, y1_pad, y2_pad, x1_pad, x2_pad, cv2.BORDER_CONSTANT)
  return cv2.resize(patch, (size, size))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--frames", type=int, default=8, help="frames of the clip per JPEG kind")
  parser.add_argument("--repeats", type=int, default=5, help="passes; the best is kept")
  args = parser.parse_args()
  if cv2 is not None:
    cv2.setNumThreads(1)   # one thread, as a decode worker has
  frames = _clip_frames(args.frames)
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    kinds = {"PIL q90 4:2:0": [], "PIL q95 4:4:4": []}
    if cv2 is not None:
      kinds["OpenCV q90"] = []
    for i, frame in enumerate(frames):
      for k, (kind, paths) in enumerate(kinds.items()):
        path = os.path.join(tmp, f"kind{k}_{i}.jpg")
        if kind == "PIL q90 4:2:0":
          Image.fromarray(frame).save(path, quality=90)
        elif kind == "PIL q95 4:4:4":
          Image.fromarray(frame).save(path, quality=95, subsampling=0)
        else:
          cv2.imwrite(path, frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    h, w = frames[0].shape[:2]
    print(f"\nJPEG decoding, {w}x{h}, ms per frame (one thread, best of {args.repeats} passes over "
          f"{args.frames} files); 'same' = pixels equal cv2.imread + BGR->RGB")
    print(f"{'decoder':>22}" + "".join(f"{k:>22}" for k in kinds))
    for name, fn in decoders():
      cells = []
      for kind, paths in kinds.items():
        same = (all(np.array_equal(fn(p), _released_read(p)) for p in paths)
                if cv2 is not None else None)
        ms = 1e3 * _best(fn, paths, args.repeats)
        results[(name, kind)] = ms
        cells.append(f"{ms:.2f}" + ("" if same is None else (" same" if same else " DIFFERS")))
      print(f"{name:>22}" + "".join(f"{c:>22}" for c in cells))

  image = frames[0]
  size, factor = 384, 5.0
  device = jax.devices()[0]
  frame_dev = jax.device_put(image[None], device)
  print(f"\n{size}-px search crop of a {w}x{h} frame (factor {factor}), ms per crop (best of "
        f"{args.repeats} x 10); device: {device.device_kind}")
  print(f"{'box (w x h)':>14}{'crop side':>11}{'numpy':>10}{'cv2':>10}{'device':>10}")
  for bw, bh in ((40, 30), (120, 90), (300, 220)):
    box = (w / 2 - bw / 2, h / 2 - bh / 2, float(bw), float(bh))
    crop_sz = crop_lib.crop_window(box, factor, (h, w))[0]
    spec, _ = device_crop.make_spec(box, factor, size, (h, w))
    spec_dev = jax.device_put(spec[None], device)
    jax.block_until_ready(device_crop.crop_frames_jit(frame_dev, spec_dev, size))

    def run_device():
      jax.block_until_ready(device_crop.crop_frames_jit(frame_dev, spec_dev, size))

    numpy_ms = 1e3 * _best(lambda _: crop_lib.sample_target(image, box, factor, size),
                           range(10), args.repeats)
    cv2_ms = (1e3 * _best(lambda _: _cv2_crop(image, box, factor, size), range(10), args.repeats)
              if cv2 is not None else float("nan"))
    device_ms = 1e3 * _best(lambda _: run_device(), range(10), args.repeats)
    results[("crop", bw)] = (numpy_ms, cv2_ms, device_ms)
    print(f"{f'{bw} x {bh}':>14}{crop_sz:>11}{numpy_ms:>10.2f}{cv2_ms:>10.2f}{device_ms:>10.2f}")
  kind = "PIL q90 4:2:0"
  keys = [f"decode_ms_{name.split('.')[-1].lower()}={results[(name, kind)]:.2f}"
          for name, _ in decoders()]
  numpy_ms, cv2_ms, device_ms = results[("crop", 120)]
  keys += [f"crop_ms_numpy={numpy_ms:.2f}", f"crop_ms_cv2={cv2_ms:.2f}",
           f"crop_ms_device={device_ms:.2f}"]
  print("RESULT " + " ".join(keys))


if __name__ == "__main__":
  main()
