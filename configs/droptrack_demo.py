"""A tiny DropTrack fine-tuned on synthetic GOT-10k-layout sequences: minutes on a laptop CPU.

  python -m dropmae_jax.main --config=configs/demo.py --workdir=/tmp/dropmae_demo   # pre-train
  python -m dropmae_jax.main --config=configs/droptrack_demo.py --workdir=/tmp/droptrack_demo \
      --config.init_from=/tmp/dropmae_demo                                         # fine-tune

`data.roots.got10k = 'synthetic'` generates the synthetic sequences (real background clips with a
textured object moving over them, `python -m dropmae_jax.data.make_tracking_sequences`) under
WORKDIR/synthetic_tracking. The encoder is the pre-training demo's micro/16 ViT (width 64,
depth 2, 4 heads, pre-trained at 112 px, so its position table is 7x7); template 64 px (4x4
tokens) and search 128 px (8x8 tokens), one CE layer in the last block. The run ends by tracking
the synthetic val sequences (val_ao in metrics.jsonl) and writing WORKDIR/tracker_weights.
Everything else is the released recipe, scaled down.
"""
from dropmae_jax import configlib


def get_config():
  c = configlib.droptrack_defaults()
  c.model.variant = "micro/16"        # the pre-training demo's encoder (configs/demo.py)
  c.model.pretrain_img_size = 112     # configs/demo.py img_size: pos_embed is (1, 1 + 7x7, 64)
  c.model.template_size = 64          # 4x4 template tokens
  c.model.search_size = 128           # 8x8 search tokens (score map 8x8)
  c.model.ce_loc = (1,)               # one CE layer in the last of the 2 blocks
  c.model.head_channels = 64          # head towers 64/32/16/8 (released 256/128/64/32)
  c.tracker.batch_sequences = 4
  c.data.datasets = ("got10k",)
  c.data.ratios = (1,)
  c.data.roots.got10k = "synthetic"   # WORKDIR/synthetic_tracking, generated once
  c.data.num_workers = 2
  c.data.samples_per_epoch = 320      # 20 steps of 16 pairs count as one epoch
  c.data.val_samples = 64             # 4 validation batches
  c.batch_size = 16
  c.lr = 8e-3                         # at batch 128: lr used 8e-3 * 16 / 128 = 1e-3 (backbone 1e-4)
  c.epochs = 30                       # 600 steps
  c.lr_drop_epoch = 24                # 80% of training, as released
  c.ce_start_epoch = 6                # CE from epoch 7, warm-up over 10 epochs (20% / 33%, as 20/100, 50/100... scaled)
  c.ce_warm_epoch = 10
  c.val_every_epochs = 10
  c.val_ao_sequences = -1             # every synthetic val sequence
  c.log_every = 10
  c.ckpt_every = 100
  c.figure_every = 200
  return c
