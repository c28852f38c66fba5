"""A tiny DropTrack fine-tuned on synthetic GOT-10k-layout sequences: minutes on a laptop CPU.

  python -m dropmae_jax.main --config=configs/demo.py --workdir=/tmp/dropmae_demo   # pre-train
  python -m dropmae_jax.main --config=configs/droptrack_demo.py --workdir=/tmp/droptrack_demo \
      --config.init_from=/tmp/dropmae_demo                                         # fine-tune

`data.roots.got10k = 'synthetic'` generates the synthetic sequences (real background clips with a
textured object moving over them, `python -m dropmae_jax.track.synthetic`) under
WORKDIR/synthetic_tracking. The encoder is the pre-training demo's micro/16 ViT (width 64,
depth 2, 4 heads, pre-trained at 112 px, so its position table is 7x7); template 64 px (4x4
tokens) and search 128 px (8x8 tokens), one CE layer in the last block: the OSTrack-256 shapes
(256 / 128) halved, so the crops follow the released 256 recipe (search factor 4, centre
jitter 3, scale jitter 0.25; template factor 2). 3000 steps of 16 pairs, about 12 minutes on an
idle 2-core CPU. The run ends by tracking the synthetic val sequences (val_ao in metrics.jsonl)
and writing WORKDIR/tracker_weights. Everything else is the released recipe, scaled down.
"""
from dropmae_jax.config import defaults as configlib


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
  c.data.synthetic.train = 32         # train sequences (the 4 val sequences are the same for any count)
  c.data.search.factor = 4.0          # OSTrack-256's DATA.SEARCH.FACTOR (this is its shape, halved)
  c.data.search.center_jitter = 3.0   # OSTrack-256's DATA.SEARCH.CENTER_JITTER
  c.data.search.scale_jitter = 0.25   # OSTrack-256's DATA.SEARCH.SCALE_JITTER
  c.tracker.search_factor = 4.0       # OSTrack-256's TEST.SEARCH_FACTOR
  c.data.num_workers = 2
  c.data.samples_per_epoch = 320      # 20 steps of 16 pairs count as one epoch
  c.data.val_samples = 64             # 4 validation batches
  c.batch_size = 16
  c.lr = 8e-3                         # at batch 128: lr used 8e-3 * 16 / 128 = 1e-3 (backbone 1e-4)
  c.epochs = 150                      # 3000 steps
  c.lr_drop_epoch = 120               # 80% of training, as released
  c.ce_start_epoch = 30               # CE from epoch 31, warm-up over 50 epochs (20% / 33% of training, as 20 / 50 of 100... scaled)
  c.ce_warm_epoch = 50
  c.val_every_epochs = 50
  c.val_ao_sequences = -1             # every synthetic val sequence
  c.log_every = 10
  c.ckpt_every = 500
  c.figure_every = 1000
  return c
