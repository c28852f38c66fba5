"""A tiny DropSeg fine-tuned on the synthetic DAVIS-layout set: about 12 minutes on a 2-core CPU.

  python -m dropmae_jax.main --config=configs/demo.py --workdir=/tmp/dropmae_demo      # pre-train
  python -m dropmae_jax.main --config=configs/dropseg_demo.py --workdir=/tmp/dropseg_demo \
      --config.init_from=/tmp/dropmae_demo                                          # fine-tune

The model is the pre-training demo's micro/16 encoder (configs/demo.py: width 64, depth 2,
4 heads, pre-trained at 112 px, so its position table is 7x7), trained at 128 px (8x8 tokens per
frame), with the pyramid and decoder narrowed in the released proportions (768 -> 512 / 256 for
fpn2 / fpn1, compress 512, decoder 256 become 64 -> 32 / 16, 32, 16). Its state dict has the
released layout (same keys, the same downsample convs):

  python -m dropmae_jax.convert export-segmenter /tmp/dropseg_demo/segmenter_weights \
      --out demo_segmenter.pth

`data.davis_root = data.val_root = 'synthetic'`: the synthetic DAVIS-layout set (real background
clips with one or two textured objects moving over them, `python -m dropmae_jax.vos.synthetic`;
32 train + 4 val sequences of 24 frames at 160x120) made once under
WORKDIR/vos_synthetic_dropseg; training pairs from its train sequences, J&F (val_jf in
metrics.jsonl) on its val sequences every 400 steps and at the end, figures under
WORKDIR/figures, the weights in WORKDIR/segmenter_weights.

Deviations from the released recipe (configs/dropseg_davis_ytvos.py), all for minutes on a CPU:
the tiny model; synthetic videos instead of DAVIS + YouTube-VOS; batch 16 instead of 32; 2,400
iterations instead of 210,000, the lr step at 1,800 (released 125k) and the bootstrapped-CE
warm-up over 300-990 (released 20k-70k); lr 1e-3 instead of 2e-5 (a short run from a tiny,
barely pre-trained encoder); float32 compute (the released run uses AMP); validation J&F during
training (the released trainer has none).

Measured results, with the commands that made them: docs/segmentation.md ("The demo").
"""
from dropmae_jax.config import defaults as configlib


def get_config():
  c = configlib.dropseg_defaults()
  c.seed = 0
  c.model.variant = "micro/16"        # the pre-training demo's encoder (configs/demo.py)
  c.model.pretrain_img_size = 112     # configs/demo.py img_size: pos_embed is (1, 1 + 7x7, 64)
  c.model.img_size = 128              # 8x8 tokens per frame
  c.model.num_classes = 1000          # the unused head, as released
  c.model.fpn1_channels = 16          # released 256 (of width 768)
  c.model.fpn2_channels = 32          # released 512
  c.model.compress_channels = 32      # released 512
  c.model.decoder_channels = 16       # released 256
  c.model.dtype = "float32"

  c.data.davis_root = "synthetic"     # WORKDIR/vos_synthetic_dropseg, generated once
  c.data.youtube_root = ""
  c.data.val_root = "synthetic"       # its val sequences
  c.data.synthetic.train = 32         # train sequences (160x120, 24 frames)
  c.data.num_workers = 2
  c.init_from = ""                    # the README passes --config.init_from=/tmp/dropmae_demo

  c.batch_size = 16                   # released 32
  c.lr = 1e-3                         # released 2e-5
  c.total_steps = 2400                # released 210,000
  c.lr_steps = (1800,)                # released 125,000 of 210,000
  c.loss.start_warm = 300             # released 20,000
  c.loss.end_warm = 990               # released 70,000
  c.val_every = 400
  c.val_sequences = -1                # every synthetic val sequence (4)
  c.log_every = 10
  c.ckpt_every = 500
  c.figure_every = 1200
  return c
