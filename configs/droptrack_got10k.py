"""DropTrack on GOT-10k (released `vitb_384_mae_ce_32x4_got10k_ep100`): OSTrack-384-CE, ViT-B/16.

Model and inference settings only for now; fine-tuning fields come with the training code.
  python -m dropmae_jax.convert import-tracker DropTrack_got10k.pth.tar --out DIR \
      --config configs/droptrack_got10k.py
"""
from dropmae_jax import configlib


def get_config():
  return configlib.droptrack_defaults()
