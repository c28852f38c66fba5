"""The notebooks in colabs/ run top to bottom (code cells executed in order, no Jupyter needed)."""
import json
import os

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLABS = os.path.join(os.path.dirname(__file__), "..", "colabs")


def run_notebook(path: str) -> dict:
  with open(path) as f:
    notebook = json.load(f)
  namespace: dict = {}
  for i, cell in enumerate(notebook["cells"]):
    if cell["cell_type"] == "code":
      exec(compile("".join(cell["source"]), f"{os.path.basename(path)}[{i}]", "exec"), namespace)
  return namespace


def test_tour_trains_reconstructs_and_shows_asad(tmp_path, monkeypatch):
  monkeypatch.setenv("DROPMAE_TOUR_WORKDIR", str(tmp_path / "tour"))
  monkeypatch.setenv("DROPMAE_TOUR_STEPS", "20")
  monkeypatch.setattr(plt, "show", lambda *a, **k: None)
  ns = run_notebook(os.path.join(COLABS, "dropmae_tour.ipynb"))
  try:
    config, model = ns["config"], ns["model"]
    assert os.path.isdir(tmp_path / "tour" / "checkpoints" / "20")   # it trained 20 steps
    size = config.model.img_size
    assert ns["images"].shape == (2, size, size, 3)
    # The captured layer is a real decoder layer: one row of softmax probabilities per query,
    # ASAD weights only on same-frame off-diagonal cells, exactly K cells dropped per head.
    n, length = model.tokens_per_frame, 2 * model.tokens_per_frame
    probs, weights, dropped = (np.asarray(ns[k][0]) for k in ("probs", "weights", "dropped"))
    assert probs.shape == (config.model.decoder_num_heads, length, length)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    same_frame = np.kron(np.eye(2), np.ones((n, n))).astype(bool) & ~np.eye(length, dtype=bool)
    assert (weights[:, ~same_frame] == 0).all() and (weights[:, same_frame] > 0).all()
    assert not dropped[:, ~same_frame].any()
    assert (dropped.sum(axis=(1, 2)) == ns["K"]).all()
  finally:
    plt.close("all")
