"""A tiny DropSeg for CPU: the pre-training demo's micro/16 encoder (configs/demo.py: width 64,
depth 2, 4 heads, pre-trained at 112 px, so its position table is 7x7), trained at 128 px
(8x8 tokens per frame), with the pyramid and decoder narrowed in the released proportions
(768 -> 512 / 256 for fpn2 / fpn1, compress 512, decoder 256 become 64 -> 32 / 16, 32, 16).

  python -m dropmae_jax.convert export-segmenter DIR --out demo_segmenter.pth

The layout of its state dict is the released one (same keys, the same downsample convs), so it
exercises every conversion the released model does in seconds.
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
  return c
