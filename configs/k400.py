"""Released DropMAE recipe on Kinetics-400: ViT-B/16, 400 epochs, global batch 4096.

  python -m dropmae_jax.main --config=configs/k400.py --workdir=/ckpt/k400 \
      --config.data.root=/data/kinetics400/train
"""
from dropmae_jax import configlib


def get_config():
  c = configlib.pretrain_defaults()
  c.data.root = "/data/kinetics400/train"   # override with --config.data.root=...
  c.epochs = 400
  return c
