"""The notebooks in colabs/ run headless, top to bottom, in a real Jupyter kernel, and SHOW figures.

Each notebook is executed with nbclient in a `python3` kernel (CPU only, `DROPMAE_COLAB_QUICK=1`
for fewer training steps) and must leave at least as many `image/png` outputs as its metadata
declares (`"dropmae": {"min_images": N}`): a figure drawn but never displayed (e.g. a library that
forces the Agg backend) fails here. Checks that need the notebook's variables run as one extra cell
appended in the same kernel. The install cell's Colab branch is exercised with pip/git faked.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient

COLABS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "colabs")
NOTEBOOKS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(COLABS, "*.ipynb")))
CELL_TIMEOUT_S = 300      # one cell; the demo's training cell takes ~40 s on 2 idle cores
NOTEBOOK_TIMEOUT_S = 420  # a whole notebook, kernel start included
# Variables the test hands to the kernel; anything else is inherited (PATH, HOME, ...).
_DROPPED_ENV = ("XLA_FLAGS",     # conftest's 8 fake devices: a Colab CPU runtime has one
                "MPLBACKEND")    # a forced backend would hide what the notebook itself shows


def kernel_env(**extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
  env.update(JAX_PLATFORMS="cpu", DROPMAE_COLAB_QUICK="1", **extra)
  return env


def execute(nb: nbformat.NotebookNode, cwd: str, env: dict[str, str]) -> nbformat.NotebookNode:
  """Runs every code cell of `nb` in order in a fresh python3 kernel; outputs are stored in `nb`.

  Raises nbclient's CellExecutionError (with the cell's traceback) on the first failing cell,
  and TimeoutError when a cell or the whole notebook runs past its limit.
  """
  client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                          startup_timeout=120, resources={"metadata": {"path": cwd}})
  deadline = time.monotonic() + NOTEBOOK_TIMEOUT_S
  with client.setup_kernel(env=env):
    for index, cell in enumerate(nb.cells):
      if cell.cell_type != "code":
        continue
      left = deadline - time.monotonic()
      if left <= 0:
        raise TimeoutError(f"notebook ran past {NOTEBOOK_TIMEOUT_S} s before cell {index}")
      client.timeout = int(min(CELL_TIMEOUT_S, left)) + 1
      client.execute_cell(cell, index)
  return nb


def images_per_cell(nb: nbformat.NotebookNode) -> list[int]:
  """How many PNG images each code cell displayed (display_data / execute_result outputs)."""
  return [sum("image/png" in out.get("data", {}) for out in cell.get("outputs", [])
              if out.get("output_type") in ("display_data", "execute_result"))
          for cell in nb.cells if cell.cell_type == "code"]


def assert_shows_its_figures(nb: nbformat.NotebookNode, name: str) -> None:
  declared = nb.metadata.get("dropmae", {}).get("min_images")
  assert isinstance(declared, int) and declared >= 1, (
      f"{name}: notebook metadata must declare \"dropmae\": {{\"min_images\": N}} (N >= 1)")
  shown = sum(images_per_cell(nb))
  assert shown >= declared, (f"{name} showed {shown} image(s) but declares min_images={declared}: "
                             "a figure was drawn and not displayed")


def load(name: str) -> nbformat.NotebookNode:
  nb = nbformat.read(os.path.join(COLABS, name), as_version=4)
  nbformat.validate(nb)
  return nb


def check_cell(source: str) -> nbformat.NotebookNode:
  """An extra cell run after the notebook, in its kernel: asserts on the notebook's variables."""
  return nbformat.v4.new_code_cell(source)


# What each notebook must have computed, asserted inside its kernel after its last cell.
TOUR_CHECKS = """
import numpy as np
assert os.path.isdir(os.path.join(WORKDIR, "checkpoints", str(STEPS))), "the demo did not train"
size = config.model.img_size
assert images.shape == (2, size, size, 3)
# The captured layer is a real decoder layer: one row of softmax probabilities per query,
# ASAD weights only on same-frame off-diagonal cells, exactly K cells dropped per head.
n, length = model.tokens_per_frame, 2 * model.tokens_per_frame
probs, weights, dropped = (np.asarray(v[0]) for v in (probs, weights, dropped))
assert probs.shape == (config.model.decoder_num_heads, length, length)
np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
same_frame = np.kron(np.eye(2), np.ones((n, n))).astype(bool) & ~np.eye(length, dtype=bool)
assert (weights[:, ~same_frame] == 0).all() and (weights[:, same_frame] > 0).all()
assert not dropped[:, ~same_frame].any()
assert (dropped.sum(axis=(1, 2)) == K).all()
"""

INTEROP_CHECKS = """
import numpy as np
# The export is the released layout: every key of the released encoder and decoder, float32.
assert os.path.isfile(EXPORT)
assert all(v.dtype == torch.float32 for v in state_dict.values())
assert {"mask_token", "decoder_pred.weight", f"blocks.{encoder_size.depth - 1}.mlp.fc2.weight",
        "temporal_pos_embed_z"} <= set(state_dict)
# Both frameworks saw the same frames and agree feature by feature (not only in the figure).
n = (size // patch) ** 2
assert features_jax.shape == features_torch.shape == (2 * n, encoder_size.width)
np.testing.assert_allclose(features_torch, features_jax, rtol=1e-4,
                           atol=1e-4 * np.abs(features_jax).max())
assert np.abs(features_jax[:n] - features_jax[n:]).max() > 1e-3   # two different frames
assert panels.shape == (2, 4, size, size, 3)
"""


@pytest.fixture(scope="module")
def tour(tmp_path_factory) -> tuple[nbformat.NotebookNode, str]:
  """The tour, executed once (quick mode): its outputs and the workdir it trained."""
  root = tmp_path_factory.mktemp("tour")
  workdir = str(root / "workdir")
  nb = load("dropmae_tour.ipynb")
  nb.cells.append(check_cell(TOUR_CHECKS))
  execute(nb, str(root), kernel_env(DROPMAE_TOUR_WORKDIR=workdir))
  return nb, workdir


@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S + 60)
def test_tour_trains_shows_reconstruction_and_asad(tour):
  nb, workdir = tour
  assert_shows_its_figures(nb, "dropmae_tour.ipynb")
  # Figures come from the reconstruction cell and from the ASAD cell (two in that one).
  shown = [c for c in images_per_cell(nb) if c]
  assert shown == [1, 2], shown
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["10"]   # the quick mode's steps


@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S + 60)
def test_pytorch_interop_exports_and_features_match(tour, tmp_path):
  # The tour's trained workdir stands in for a user's checkpoint (CHECKPOINT = a workdir), so
  # this notebook does not train the same demo again.
  _, workdir = tour
  nb = load("pytorch_interop.ipynb")
  nb.cells.append(check_cell(INTEROP_CHECKS))
  execute(nb, str(tmp_path), kernel_env(DROPMAE_INTEROP_CHECKPOINT=workdir,
                                        DROPMAE_INTEROP_WORKDIR=str(tmp_path / "interop")))
  assert_shows_its_figures(nb, "pytorch_interop.ipynb")
  assert os.path.isfile(tmp_path / "interop" / "dropmae_export.pth")
  text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.outputs)
  assert "$ python -m dropmae_jax.convert export" in text and "wrote " in text
  assert "max |JAX - PyTorch|" in text


TRACKING_CHECKS = """
# Trained STEPS steps, tracked the clip's FRAMES frames and every val sequence, scored both.
assert os.listdir(os.path.join(WORKDIR, "checkpoints")) == [str(STEPS)]
assert boxes.shape == (FRAMES, 4) and tuple(boxes[0]) == BOX
assert len(val_names) == 2 and sorted(os.listdir(tracked)) == val_names
assert set(report["trackers"]) == {"DropTrack demo", "static box"}
assert all(0 <= t["metrics"]["AO"] <= 100 for t in report["trackers"].values())
"""

SEGMENTATION_CHECKS = """
assert len(dataset) == SEQUENCES == 2 and seq.num_frames == FRAMES
assert list(scores) == ["random init", "DropSeg, random init"]   # no PRETRAINED in CI
for _, report in scores.values():
  g = report["global"]
  assert 0 <= g["J&F-Mean"] <= 1 and abs(g["J&F-Mean"] - (g["J-Mean"] + g["F-Mean"]) / 2) < 1e-6
assert len(rows) == 3 and all(len(masks) == 5 for _, masks in rows)
assert os.path.isdir(os.path.join(SEG_WORKDIR, "segmenter_weights"))
"""


@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S + 60)
def test_tracking_fine_tunes_tracks_a_clip_and_scores(tmp_path):
  nb = load("tracking.ipynb")
  nb.cells.append(check_cell(TRACKING_CHECKS))
  execute(nb, str(tmp_path), kernel_env(DROPMAE_TRACKING_WORKDIR=str(tmp_path / "droptrack")))
  assert_shows_its_figures(nb, "tracking.ipynb")
  # The synthetic set, the real clip with boxes, the success plot, a val sequence with boxes.
  assert [c for c in images_per_cell(nb) if c] == [1, 1, 1, 1]
  text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.outputs)
  assert "$ python -m dropmae_jax.track video" in text and "got10k_success.png" in text


@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S + 60)
def test_segmentation_propagates_and_shows_masks_with_jf(tmp_path):
  nb = load("segmentation.ipynb")
  nb.cells.append(check_cell(SEGMENTATION_CHECKS))
  execute(nb, str(tmp_path), kernel_env(DROPMAE_SEGMENTATION_WORKDIR=str(tmp_path / "seg")))
  assert_shows_its_figures(nb, "segmentation.ipynb")
  assert [c for c in images_per_cell(nb) if c] == [1, 1]   # the set; masks over frames
  text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.outputs)
  assert "J&F" in text and "random init" in text
  assert "$ python -m dropmae_jax.vos segment" in text and "DropSeg, random init" in text


def test_every_notebook_is_executed_here_and_declares_its_figures():
  # A new notebook must get an execution test above (and its min_images), not slip past CI.
  assert NOTEBOOKS == ["dropmae_tour.ipynb", "pytorch_interop.ipynb", "segmentation.ipynb",
                       "tracking.ipynb"], NOTEBOOKS
  for name in NOTEBOOKS:
    nb = load(name)
    assert nb.metadata["kernelspec"]["name"] == "python3", name
    assert nb.metadata["dropmae"]["min_images"] >= 1, name
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.source.startswith("# Install."), f"{name}: the first code cell must install"
    assert "%matplotlib inline" in "".join(c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.timeout(120)
def test_image_count_sees_a_figure_that_is_not_shown(tmp_path):
  """The check catches issue 9's bug: a figure shown after Agg was forced is no image output.

  Importing our figures module must leave the notebook's inline backend alone (it used to call
  matplotlib.use("Agg") on import); a cell that forces Agg itself shows nothing.
  """
  nb = nbformat.v4.new_notebook(metadata={"dropmae": {"min_images": 2}})
  nb.cells = [
      nbformat.v4.new_code_cell("%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                                "from dropmae_jax.pretrain import figures\n"
                                "plt.plot([0, 1], [1, 0])\nplt.show()"),
      nbformat.v4.new_code_cell("import matplotlib\nmatplotlib.use('Agg')\n"
                                "plt.plot([0, 1], [0, 1])\nplt.show()"),
  ]
  execute(nb, str(tmp_path), kernel_env())
  assert images_per_cell(nb) == [1, 0]
  with pytest.raises(AssertionError, match="showed 1 image"):
    assert_shows_its_figures(nb, "synthetic.ipynb")


def install_source(name: str) -> str:
  return next(c for c in load(name).cells if c.cell_type == "code").source


@pytest.mark.parametrize("name, extras, packages", [
    ("dropmae_tour.ipynb", "", []),
    ("pytorch_interop.ipynb", "[torch]", ["timm"]),
    ("tracking.ipynb", "", []),
    ("segmentation.ipynb", "", []),
])
def test_install_cell_on_a_fresh_runtime(name, extras, packages, tmp_path, monkeypatch):
  """The Colab branch, with dropmae_jax 'not installed' and git/pip recorded instead of run."""
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda mod, *a: None if mod == "dropmae_jax" else real_find_spec(mod, *a))
  calls: list[list[str]] = []
  monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(list(cmd)))
  monkeypatch.setattr(sys, "path", list(sys.path))
  repo_dir = str(tmp_path / "dropmae_jax")
  source = install_source(name).replace('"/content/dropmae_jax"', repr(repo_dir))
  assert repo_dir in source

  # The placeholder URL left as it is: one clear error, nothing run.
  with pytest.raises(ValueError, match="set REPO_URL"):
    exec(compile(source, name, "exec"), {})
  assert calls == []

  url = "https://example.org/someone/dropmae_jax"
  exec(compile(source.replace("https://github.com/<your-org>/dropmae_jax", url), name, "exec"), {})
  assert calls == [
      ["git", "clone", "--depth", "1", url, repo_dir],
      [sys.executable, "-m", "pip", "install", "-q", "-e", repo_dir + extras, *packages]]
  assert sys.path[0] == repo_dir   # importable in this kernel without a restart

  # A checkout already in REPO_DIR is installed as it is (no clone).
  calls.clear()
  os.makedirs(repo_dir, exist_ok=True)
  open(os.path.join(repo_dir, "setup.py"), "w").close()
  exec(compile(source, name, "exec"), {})
  assert [c[:4] for c in calls] == [[sys.executable, "-m", "pip", "install"]]


def test_install_cell_is_a_no_op_where_installed(monkeypatch):
  monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("must not run anything"))
  for name in NOTEBOOKS:
    exec(compile(install_source(name), name, "exec"), {})   # placeholder URL: still no error
