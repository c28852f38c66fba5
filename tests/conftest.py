"""Test-wide setup: 8 fake CPU devices for the sharding tests, XLA at -O0, absl flags parsed for
grain, one persistent compilation cache for the session, and the slowest files scheduled first."""
import atexit
import os
import shutil
import sys
import tempfile

# tests/ mirrors the package (tests/track/ for dropmae_jax/track/, ...). Test files share helpers
# across those folders (tests/convert uses tests/models/test_model.py's tables, several folders
# train test_train.py's tiny config), so every test folder is importable whatever was collected
# first.
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
for _entry in sorted(os.listdir(TESTS_DIR)):
  _folder = os.path.join(TESTS_DIR, _entry)
  if os.path.isdir(_folder) and not _entry.startswith((".", "_")) and _folder not in sys.path:
    sys.path.append(_folder)

# XLA CPU options for compiling fast: the suite's programs are tiny and run for a few steps, so
# compiling them is most of its time. LLVM at -O0 and XLA's classic (elemental) emitters for
# fusions instead of the newer MLIR fusion emitters: together they compile a tiny DropTrack train
# step in ~8 s instead of ~20 s (a DropMAE one in ~6 s instead of ~13 s), and run it slower by
# a fraction of a second. XLA's fast-math stays off either way. test_cli.py and
# test_multiprocess.py, which give their subprocesses XLA_FLAGS of their own, add these too.
FAST_COMPILE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"

# Must happen before JAX initialises its backends.
os.environ.setdefault("XLA_FLAGS",
                      f"--xla_force_host_platform_device_count=8 {FAST_COMPILE_XLA_FLAGS}")
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


# ------------------------------------------------------------------ order of files (xdist)

# CI runs `pytest -n 2 --dist loadfile`: each file runs whole on one worker, and a worker asks
# for the next file from a queue when it is nearly done with its current one. xdist orders that
# queue by the number of tests in a file, which put the files with few but slow tests (training
# runs, subprocesses, notebooks) last, where one of them could keep a worker busy for minutes
# after the other had run out of work. Slowest files first instead (longest processing time
# first): the files left for the end are the short ones, and both workers finish together.
# (It also runs test_train.py before test_faults.py and test_vos_cli.py, which train its compiled
# pre-training step, and test_droptrack_train.py before test_droptrack_sharding.py, which starts
# from its compiled tracker init: compilation-cache hits.) Approximate seconds of each
# file on one worker of a full 2-worker run; files not listed take a few seconds to ~20 s and
# keep their collection order after these. Re-measure with `--durations=0` when a file's time
# changes a lot.
FILE_SECONDS = {
    "test_asad_pallas.py": 280,
    "test_gpu_report.py": 210,
    "test_train.py": 200,
    "test_colabs.py": 190,
    "test_faults.py": 160,
    "test_droptrack_train.py": 120,
    "test_dropseg_train.py": 90,
    "test_dropseg_segment.py": 60,
    "test_asad.py": 90,
    "test_droptrack_sharding.py": 80,
    "test_vos_cli.py": 50,
    "test_determinism.py": 60,
    "test_dropseg_model.py": 40,
    "test_dropseg_data.py": 30,
    "test_convert.py": 60,
    "test_multiprocess.py": 60,
    "test_cli.py": 45,
    "test_model.py": 40,
    "test_tracker.py": 45,
    "test_train_utils.py": 25,
    "test_ostrack.py": 20,
}


def pytest_configure(config):
  # Keep the queue in the collection order set below (xdist >= 3.6 re-sorts it by test count).
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  # A stable sort: the tests of a file keep their order.
  items.sort(key=lambda item: -FILE_SECONDS.get(os.path.basename(str(item.path)), 0))


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
