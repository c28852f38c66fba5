"""Shared pieces of the zero-shot VOS tests (tests/vos/test_davis_reader.py,
test_vos_metrics.py, test_label_propagation.py, test_vos_cli.py): DAVIS folders written by hand,
the micro encoder, its released-layout file and a small synthetic set. Fixtures are imported by
name into the test modules that use them.
"""
from __future__ import annotations

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from dropmae_jax.config import defaults as configlib
from dropmae_jax.vos import davis
from dropmae_jax.vos import features


def write_davis(root, sequences: dict, year: str = "2017", subset: str = "val"):
  """sequences: name -> (frames uint8 (T, H, W, 3), ids uint8 (T, H, W) or None per frame)."""
  os.makedirs(os.path.join(root, "ImageSets", year), exist_ok=True)
  with open(os.path.join(root, "ImageSets", year, f"{subset}.txt"), "w") as f:
    f.writelines(n + "\n" for n in sequences)
  for name, (frames, masks) in sequences.items():
    img_dir = os.path.join(root, "JPEGImages", "480p", name)
    ann_dir = os.path.join(root, "Annotations", "480p", name)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for t, frame in enumerate(frames):
      Image.fromarray(frame).save(os.path.join(img_dir, f"{t:05d}.jpg"), quality=95)
      if masks[t] is not None:
        davis.write_palette_png(os.path.join(ann_dir, f"{t:05d}.png"), masks[t])
  return str(root)


def square_ids(shape, boxes) -> np.ndarray:
  """(H, W) uint8 with id k+1 painted on boxes[k] = (y0, y1, x0, x1)."""
  ids = np.zeros(shape, np.uint8)
  for k, (y0, y1, x0, x1) in enumerate(boxes):
    ids[y0:y1, x0:x1] = k + 1
  return ids


def micro_config(img_size: int = 64) -> ml_collections.ConfigDict:
  c = configlib.pretrain_defaults()
  c.model.variant = "micro/16"
  c.model.img_size = img_size
  c.model.decoder_embed_dim = 32
  c.model.decoder_depth = 1
  c.model.decoder_num_heads = 2
  c.model.dtype = "float32"
  c.asad.impl = "reference"
  return c


@pytest.fixture(scope="module")
def micro_params():
  """Encoder params (no decoder submodules: the features never read them) and the config."""
  config = micro_config()
  return features.fresh_encoder_params(config), config


@pytest.fixture(scope="module")
def released_file(micro_params, tmp_path_factory):
  """The micro params as a released-layout file (safetensors: no torch needed)."""
  from dropmae_jax.convert import io as convert_io
  from dropmae_jax.convert import layout
  params, _ = micro_params
  path = str(tmp_path_factory.mktemp("weights") / "micro.safetensors")
  # Encoder keys only: what DropTrack / DropSeg keep of a released checkpoint.
  convert_io.write_torch_state_dict(layout.params_to_state_dict(params, grid=4,
                                                                encoder_only=True), path)
  return path


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
  from dropmae_jax.vos import synthetic as make_vos_sequences
  from dropmae_jax.data import samples
  root = str(tmp_path_factory.mktemp("vos") / "synth")
  # The first 40 frames of each bundled clip are enough (plans read the clips' decoded lengths).
  folder = samples.sample_video_dir()
  clips = {c: make_vos_sequences.scenes.decode_clip(os.path.join(folder, c), 40)
           for c in samples.SAMPLE_CLIPS}
  plans = make_vos_sequences.make_dataset(root, val=2, frames=16, size=(96, 64), seed=0,
                                          progress=False, clips=clips)
  return root, plans
