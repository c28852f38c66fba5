"""A tiny DropSeg fine-tuned on the synthetic DAVIS-layout set: minutes on a laptop CPU.

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
clips with one or two textured objects moving over them, `python -m dropmae_jax.vos.synthetic`)
made once under WORKDIR/vos_synthetic_dropseg; training pairs from its train sequences, J&F
(val_jf in metrics.jsonl) on its val sequences every 200 steps and at the end, figures under
WORKDIR/figures, the weights in WORKDIR/segmenter_weights.

Deviations from the released recipe (configs/dropseg_davis_ytvos.py), all for a few minutes on
a CPU: the tiny model; synthetic videos instead of DAVIS + YouTube-VOS; batch 16 instead of 32;
800 iterations instead of 210,000, with the lr step (125k -> 480) and the bootstrapped-CE
warm-up (20k-70k -> 80-264) at the same fractions of the run; lr 1e-3 instead of 2e-5 (a short
run from a tiny, barely pre-trained encoder); float32 compute (the released run uses AMP);
validation J&F during training (the released trainer has none).

Measured on a shared 2-core CPU (2026-12-06, init_from the pre-training demo): 4 min 16 s for
the whole command, of which 800 steps in 4 min 12 s (58 pairs/s, 3.2 steps/s); the training IoU
of the target rises from 0 to about 0.24 and val_jf ends at 0.104 (0.126 at step 200);
predicting no object at all scores 0.091 on these val sequences (J = F = 1 only on the frames
where an object is fully hidden). So the tiny model learns the task only a little in a few
minutes: the demo shows the machinery, not a useful segmenter.
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
  c.total_steps = 800                 # released 210,000
  c.lr_steps = (480,)                 # released 125,000 of 210,000
  c.loss.start_warm = 80              # released 20,000
  c.loss.end_warm = 264               # released 70,000
  c.val_every = 200
  c.val_sequences = -1                # every synthetic val sequence (4)
  c.log_every = 10
  c.ckpt_every = 500
  c.figure_every = 200
  return c
