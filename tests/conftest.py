"""Test-wide setup: 8 fake CPU devices for the sharding tests, absl flags parsed for grain."""
import os

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402

# grain's multiprocess prefetch reads an absl flag; outside app.run the flags are unparsed.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


import numpy as np  # noqa: E402
import pytest  # noqa: E402


def write_video(path, num_frames: int, height: int = 48, width: int = 64, seed: int = 0):
  """A real H.264 clip (container by extension) of a square drifting over noise: frames differ."""
  import av
  rng = np.random.default_rng(seed)
  background = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
  with av.open(str(path), mode="w") as container:
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for t in range(num_frames):
      img = background.copy()
      side = height // 4
      y, x = (5 + 2 * t) % (height - side), (7 + 3 * t) % (width - side)
      img[y:y + side, x:x + side] = (250, 200 - 4 * t % 200, 40)
      for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


@pytest.fixture(scope="session")
def video_tree(tmp_path_factory):
  """Kinetics-shaped tree: 3 classes x 2 clips of 12-30 frames, plus one corrupt file."""
  root = tmp_path_factory.mktemp("kinetics")
  for c in range(3):
    (root / f"class_{c}").mkdir()
    for k in range(2):
      write_video(root / f"class_{c}" / f"clip_{k}.mp4", num_frames=12 + 6 * (2 * c + k),
                  height=96, width=128, seed=10 * c + k)
  (root / "class_0" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
  return str(root)
