"""Released DropMAE recipe on Kinetics-400 (the K400-1600E checkpoint): ViT-B/16, 1600 epochs,
global batch 4096.

  python -m dropmae_jax.main --config=k400 --workdir=/ckpt/k400 \
      --config.data.root=/data/kinetics400/train

The released K400 checkpoint and its training log run 1600 epochs (the log ends at epoch 1599);
the released README's example command says 400, which is `k400_400ep`.
"""
from dropmae_jax.config import defaults as configlib


def get_config():
  c = configlib.pretrain_defaults()
  c.data.root = "/data/kinetics400/train"   # override with --config.data.root=...
  c.epochs = 1600
  return c
