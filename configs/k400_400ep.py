"""DropMAE on Kinetics-400 for 400 epochs: the schedule of the released README's example command
(the released K400-1600E checkpoint is `k400`). ViT-B/16, global batch 4096.

  python -m dropmae_jax.main --config=k400_400ep --workdir=/ckpt/k400_400ep \
      --config.data.root=/data/kinetics400/train
"""
from dropmae_jax.config import defaults as configlib


def get_config():
  c = configlib.pretrain_defaults()
  c.data.root = "/data/kinetics400/train"   # override with --config.data.root=...
  c.epochs = 400
  return c
