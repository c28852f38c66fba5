"""What the user sees: metrics.jsonl / TensorBoard, reconstruction figures, checkpoints."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from dropmae_jax.models import mae
from dropmae_jax.train import checkpoint
from dropmae_jax.train import figures
from dropmae_jax.train import metrics


def test_metrics_append_and_tensorboard(tmp_path):
  w = metrics.MetricWriter(str(tmp_path))
  w.write(1, {"loss": 1.5, "skipped_videos": 2})
  w.close()
  w = metrics.MetricWriter(str(tmp_path))  # a resumed run appends
  w.write(2, {"loss": float("nan"), "skipped_videos": 3})
  w.close()
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert rows == [{"step": 1, "loss": 1.5, "skipped_videos": 2},
                  {"step": 2, "loss": None, "skipped_videos": 3}]
  events = os.listdir(tmp_path / "tensorboard")
  assert events and all(e.startswith("events.out.tfevents") for e in events)
  silent = metrics.MetricWriter(str(tmp_path / "other"), is_main_process=False)
  silent.write(1, {"loss": 1.0})
  assert not os.path.exists(tmp_path / "other")


def test_figure_shows_the_frames_when_the_prediction_is_perfect(tmp_path):
  rng = np.random.default_rng(0)
  frames_uint8 = rng.integers(0, 256, (1, 2, 32, 32, 3), dtype=np.uint8)
  frames = np.asarray(mae.normalize_frames(jnp.asarray(frames_uint8)))[0]
  mask = (rng.random(8) < 0.75).astype(np.float32)
  perfect = np.asarray(mae.pair_targets(jnp.asarray(frames[None]), 16, True))[0]
  panels = figures.reconstruction_panels(frames, mask, perfect, patch_size=16, norm_pix_loss=True,
                                         mean=mae.IMAGENET_MEAN, std=mae.IMAGENET_STD)
  original = frames_uint8[0] / 255.0
  np.testing.assert_allclose(panels[:, 0], original, atol=1e-5)
  np.testing.assert_allclose(panels[:, 3], original, atol=1e-4)  # prediction + visible
  path = figures.reconstruction_figure(frames, mask, perfect, patch_size=16, norm_pix_loss=True,
                                       mean=mae.IMAGENET_MEAN, std=mae.IMAGENET_STD,
                                       path=str(tmp_path / "f" / "r.png"))
  assert os.path.getsize(path) > 5000


def test_checkpoint_roundtrip_keep_and_wrong_shape(tmp_path):
  devices = np.asarray(jax.devices())
  mesh = jax.sharding.Mesh(devices.reshape(-1), ("data",))
  sharded = NamedSharding(mesh, P("data"))
  n = len(devices) * 2
  state = {"w": jax.device_put(jnp.arange(n, dtype=jnp.float32), sharded),
           "step": jnp.asarray(3, jnp.int32)}
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, state, meta={"counters": {"skipped_videos": step}})
  ckpt.wait_until_finished()
  assert ckpt.all_steps() == [2, 3]
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        state)
  restored, meta = ckpt.restore(3, target)
  np.testing.assert_array_equal(restored["w"], np.arange(n))
  assert restored["w"].sharding == sharded
  assert meta["counters"]["skipped_videos"] == 3
  wrong = dict(target, w=jax.ShapeDtypeStruct((n + 1,), jnp.float32))
  with pytest.raises(checkpoint.CheckpointError, match="step 3"):
    ckpt.restore(3, wrong)
  ckpt.close()
