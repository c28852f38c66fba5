"""Test-wide setup: 8 fake CPU devices for the sharding tests, absl flags parsed for grain, and
one persistent compilation cache for the session."""
import atexit
import os
import shutil
import tempfile

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Many tests run the same tiny model through fresh `jax.jit` objects (a new trainer run, a
# resume, a CLI subprocess); XLA's compile of the same program is most of their time on CPU.
# JAX's persistent cache keys executables by program, options and devices, so a hit is the
# executable XLA would have built. Environment variables, so subprocesses share it too. Set
# JAX_COMPILATION_CACHE_DIR yourself to keep it between sessions.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache_dir = tempfile.mkdtemp(prefix="dropmae-test-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

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
