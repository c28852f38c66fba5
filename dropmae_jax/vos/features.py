"""Frozen DropMAE encoder features of single full frames, and the weights it loads.

One frame at a time (no partner frame): patch embedding + the 14x14 (training-grid) sin-cos table
bicubic-resized to the frame's patch grid with `convert/posemb.resize_bicubic` (PyTorch-exact, what
DropTrack / DropSeg do) + a frame-identity embedding, then the encoder blocks and the final
LayerNorm -- `DropMAE.encode` without masking, on one frame's tokens.

Frame-identity embedding (`frame_embed`): the encoder was pre-trained on pairs with
`temporal_pos_embed_x` on the earlier frame and `temporal_pos_embed_z` on the later one.
Label propagation compares every frame with every other, so by default every frame gets the same
one ('x': features of all frames live in one space). 'z' uses the other; 'none' adds neither;
'z_first' gives the first (reference) frame z and the others x, as DropSeg does for its
memory / query frames.

Frame size (DINO's `read_frame`): the short side is resized to `short_side` (480) and the long
side to the largest multiple of `size_multiple` (64) below its aspect-preserving length, with
cv2.resize's bilinear (reproduced bit-exactly by `data/resize.py`).
"""
from __future__ import annotations

import copy
import functools
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dropmae_jax.convert import posemb
from dropmae_jax.models import mae
from dropmae_jax.models import vit
from dropmae_jax.data import resize

FRAME_EMBEDS = ("x", "z", "none", "z_first")


def input_size(height: int, width: int, short_side: int = 480, size_multiple: int = 64
               ) -> tuple[int, int]:
  """(H', W') the encoder sees, as DINO's read_frame: short side -> short_side (<= 0: keep it),
  long side -> int((short_side * long / short) // size_multiple * size_multiple)."""
  short = min(height, width) if short_side <= 0 else short_side
  if height > width:
    return int((short * height / width) // size_multiple * size_multiple), short
  return short, int((short * width / height) // size_multiple * size_multiple)


def resize_frame(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 (H, W, 3) -> uint8 (height, width, 3), bit-exact cv2.resize(INTER_LINEAR)."""
  if image.shape[:2] == (height, width):
    return image
  return resize.resize_bilinear_u8(lambda rows, cols: image[rows][:, cols], image.shape[0],
                                  image.shape[1], height, width)


def _encode(module: mae.DropMAE, images: jax.Array, pos: jax.Array, embed_xz: jax.Array
            ) -> jax.Array:
  """(B, H, W, 3) normalised frames -> (B, h·w, D): single-frame tokens through the encoder.

  pos: (h·w, D) position table of this grid; embed_xz: (B, 2) weights of temporal_pos_embed_x / z.
  """
  tokens = module.patch_embed(images) + pos[None].astype(jnp.float32)
  tokens = (tokens + embed_xz[:, 0, None, None] * module.temporal_pos_embed_x
            + embed_xz[:, 1, None, None] * module.temporal_pos_embed_z)
  for block in module.blocks:
    tokens = block(tokens)
  return module.norm(tokens)


class FrameEncoder:
  """Single-frame features of a DropMAE checkpoint: `encoder(frames_uint8) -> (T, h·w, D)`.

  Args:
    params: the full DropMAE params tree (as training / `convert.io.load_params` give it).
    model_config: the pre-training config the params belong to (its `model` fields).
    frame_embed: one of FRAME_EMBEDS (see the module docstring).
    dtype: compute dtype of the encoder ('float32' for evaluation by default).
    batch_size: frames per encoder call (the last batch is padded, so one compiled shape).
  """

  def __init__(self, params, model_config: ml_collections.ConfigDict, frame_embed: str = "x",
               dtype: str = "float32", batch_size: int = 8):
    if frame_embed not in FRAME_EMBEDS:
      raise ValueError(f"frame_embed must be one of {FRAME_EMBEDS}, got {frame_embed!r}")
    config = copy.deepcopy(model_config)
    with config.unlocked():
      config.model.dtype = dtype
      config.asad.in_encoder = False   # ASAD is a training-time dropout: plain attention here
      config.asad.impl = "reference"
    self.model = mae.DropMAE.from_config(config)
    self.patch_size = self.model.patch_size
    self.width = vit.decode_variant(self.model.variant)[0].width
    grid = self.model.img_size // self.patch_size
    self.train_table = vit.sincos_2d(self.width, grid)   # the model's (grid², D) constant
    self.params = params
    self.frame_embed = frame_embed
    self.batch_size = int(batch_size)
    self._apply = jax.jit(functools.partial(self.model.apply, method=_encode))
    self._tables: dict[tuple[int, int], jax.Array] = {}

  def pos_table(self, grid_hw: tuple[int, int]) -> jax.Array:
    """(h·w, D) the training table bicubic-resized to grid_hw (cached)."""
    if grid_hw not in self._tables:
      self._tables[grid_hw] = jnp.asarray(posemb.resize_bicubic(self.train_table, grid_hw))
    return self._tables[grid_hw]

  def embed_weights(self, frame_indices: np.ndarray) -> np.ndarray:
    """(B, 2) float32 weights of (x, z) embeddings for frames with these indices in the video."""
    idx = np.asarray(frame_indices)
    x = {"x": 1.0, "z": 0.0, "none": 0.0}.get(self.frame_embed)
    if x is not None:
      z = 1.0 if self.frame_embed == "z" else 0.0
      return np.tile(np.float32([x, z]), (len(idx), 1))
    first = (idx == 0).astype(np.float32)   # 'z_first'
    return np.stack([1 - first, first], axis=1)

  def __call__(self, frames: np.ndarray, frame_indices: np.ndarray | None = None) -> jax.Array:
    """uint8 (T, H, W, 3), H and W multiples of the patch -> float32 (T, h·w, D) on device.

    frame_indices: position of each frame in its video (only 'z_first' reads it; default 0..T-1).
    """
    frames = np.asarray(frames)
    chex.assert_rank(frames, 4)
    t, height, width, _ = frames.shape
    p = self.patch_size
    if height % p or width % p:
      raise ValueError(f"frames of {width}x{height} are not multiples of the patch size {p}")
    pos = self.pos_table((height // p, width // p))
    indices = np.arange(t) if frame_indices is None else np.asarray(frame_indices)
    weights = self.embed_weights(indices)
    b = min(self.batch_size, t)
    outputs = []
    for start in range(0, t, b):
      chunk = frames[start:start + b]
      w = weights[start:start + b]
      n = len(chunk)
      if n < b:  # pad the last batch: one compiled shape per frame size
        chunk = np.concatenate([chunk, np.zeros((b - n,) + chunk.shape[1:], chunk.dtype)])
        w = np.concatenate([w, np.zeros((b - n, 2), np.float32)])
      images = mae.normalize_frames(jnp.asarray(chunk))
      out = self._apply({"params": self.params}, images, pos, jnp.asarray(w))
      outputs.append(out[:n].astype(jnp.float32))
    return jnp.concatenate(outputs, axis=0)


# --- weights ---

def fresh_encoder_params(config: ml_collections.ConfigDict) -> dict:
  """Initialised params of the config's model, as `convert`'s `fresh_params` draws them, minus
  the decoder submodules (initialised through `encode_all`, so only the encoder is compiled;
  Flax derives each parameter's RNG from its name, so the values are the same)."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.asad.drop_ratio = 0.0
    config.asad.in_encoder = False
    config.asad.impl = "reference"
  model = mae.DropMAE.from_config(config)
  size = config.model.img_size
  rngs = {k: jax.random.key(config.seed + i) for i, k in enumerate(("params", "masking", "asad"))}
  init = jax.jit(functools.partial(model.init, method=mae.DropMAE.encode_all))
  params = init(rngs, jnp.zeros((1, 2, size, size, 3)))["params"]
  return jax.tree.map(np.asarray, params)


def load_weights(spec: str, seed: int = 0) -> tuple[dict, ml_collections.ConfigDict, str]:
  """(params, pre-training config, description) from
    * a training WORKDIR (its latest checkpoint) or an imported DIR (`convert import`),
    * a released .pth / .safetensors (read with `convert`'s loaders; decoder keys are not used),
    * 'random:CONFIG' -- fresh initialisation of a config's model (CONFIG: a path or installed
      config name such as 'demo'), with `seed`.
  File and random weights come without the decoder's submodules (the encoder never reads them).
  """
  from dropmae_jax.convert import io as convert_io
  from dropmae_jax.convert import layout
  if spec.startswith("random:"):
    from dropmae_jax.config import loading as config_loading
    config = config_loading.load_config(spec.split(":", 1)[1])
    with config.unlocked():
      config.seed = seed
    return (fresh_encoder_params(config), config,
            f"random init of {config.model.variant} (seed {seed})")
  if os.path.isdir(spec):
    params, config = convert_io.load_params(spec)
    return params, config, f"{spec} ({config.model.variant} @ {config.model.img_size}px)"
  state = convert_io.read_torch_state_dict(spec)
  layout.check_is_mae_vit(state)
  config = convert_io.infer_model_config(state)
  grid = config.model.img_size // int(config.model.variant.split("/")[1])
  params, _ = layout.state_dict_to_params(state, fresh_encoder_params(config), grid=grid)
  return params, config, f"{spec} ({config.model.variant} @ {config.model.img_size}px)"
