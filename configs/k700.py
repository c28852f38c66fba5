"""Released DropMAE recipe on Kinetics-700: ViT-B/16, 800 epochs, global batch 4096.

  python -m dropmae_jax.main --config=configs/k700.py --workdir=/ckpt/k700 \
      --config.data.root=/data/kinetics700/train
"""
from dropmae_jax.config import defaults as configlib


def get_config():
  c = configlib.pretrain_defaults()
  c.data.root = "/data/kinetics700/train"   # override with --config.data.root=...
  c.epochs = 800
  return c
