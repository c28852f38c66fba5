"""DropSeg, the released model (jimmy-dq/DropSeg, stage 3 on DAVIS-2017 + YouTube-VOS 2019):
ViT-B/16 from DropMAE, trained on 384x384 frame pairs, STCN's decoder.

Only the model exists so far (docs/segmentation.md): import the released weights, or start from
DropMAE's, and segment a frame from the first frame and its mask:

  python -m dropmae_jax.convert import-segmenter DropSeg_davis_ytvos.pth --out /ckpt/dropseg \
      --config dropseg_davis_ytvos
  python -m dropmae_jax.convert export-segmenter /ckpt/dropseg --out dropseg_ours.pth

Released training recipe, for the trainer to come: Adam lr 2e-5, weight decay 1e-7, 210,000
iterations, lr x0.1 at 125,000, batch 4 per GPU x 8, bootstrapped CE (top 15% after 20k-70k
iterations of warm-up), pairs with max_jump 25 (DAVIS) / 5 (YouTube-VOS), DAVIS repeated 5 times.
"""
from dropmae_jax.config import defaults as configlib


def get_config():
  c = configlib.dropseg_defaults()
  c.model.variant = "B/16"            # vit_base_patch16
  c.model.img_size = 384              # --img_size 384
  c.model.pretrain_img_size = 224     # the DropMAE ViT's pos_embed: 14x14
  c.model.drop_path_rate = 0.1        # --droppath_rate 0.1
  return c
