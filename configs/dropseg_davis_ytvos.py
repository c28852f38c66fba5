"""DropSeg, the released model and recipe (jimmy-dq/DropSeg, stage 3 on DAVIS-2017 + YouTube-VOS
2019): ViT-B/16 from DropMAE, trained on 384x384 frame pairs, STCN's decoder.

Fine-tune from DropMAE weights (a pre-training WORKDIR, an imported DIR or the released .pth),
the data roots set on the command line:

  python -m dropmae_jax.main --config=dropseg_davis_ytvos --workdir=/ckpt/dropseg_run \
      --config.init_from=/ckpt/dropmae_k700_800e.pth \
      --config.data.davis_root=/data/DAVIS/2017/trainval \
      --config.data.youtube_root=/data/YouTube/train_480p \
      --config.data.val_root=/data/DAVIS/2017/trainval

or import the released weights, and go back to a released-layout state dict:

  python -m dropmae_jax.convert import-segmenter DropSeg_davis_ytvos.pth --out /ckpt/dropseg \
      --config dropseg_davis_ytvos
  python -m dropmae_jax.convert export-segmenter /ckpt/dropseg --out dropseg_ours.pth

The released recipe (`util/hyper_para.py`, `model/model.py`, `train_dropseg.py`): Adam lr 2e-5
with L2 weight decay 1e-7, 210,000 iterations, lr x0.1 at 125,000 (MultiStepLR per iteration),
batch 4 per GPU x 8 = 32, bootstrapped CE (plain mean until 20k, top 15% of the pixels after a
linear warm-up to 70k), drop-path 0.1, AMP (bfloat16 compute here; parameters float32), pairs
with max_jump 25 (DAVIS) / 5 (YouTube-VOS), DAVIS repeated 5 times. Differences: the trainer
also scores J&F on the first val_sequences of data.val_root's val subset every val_every steps
(the released one validates nothing; `val_sequences = 0` turns it off).
"""
from dropmae_jax.config import defaults as configlib


def get_config():
  c = configlib.dropseg_defaults()
  c.model.variant = "B/16"            # vit_base_patch16
  c.model.img_size = 384              # --img_size 384
  c.model.pretrain_img_size = 224     # the DropMAE ViT's pos_embed: 14x14
  c.model.drop_path_rate = 0.1        # --droppath_rate 0.1
  c.model.dtype = "bfloat16"          # the released AMP (torch.cuda.amp.autocast, float16)

  # Set on the command line (--config.data.davis_root=... etc.); '' = that source unused.
  c.data.davis_root = ""              # DAVIS-2017 trainval: train pairs from its 60 train videos
  c.data.youtube_root = ""            # YouTube-VOS 2019 train_480p
  c.data.val_root = ""                # DAVIS-2017 trainval again: J&F on its val subset
  c.data.val_subset = "val"

  c.batch_size = 32                   # 4 per GPU x 8 GPUs
  c.lr = 2e-5                         # --lr (stage 3)
  c.weight_decay = 1e-7               # --weight_decay
  c.lr_steps = (125000,)              # --steps
  c.lr_gamma = 0.1                    # --gamma
  c.total_steps = 210000              # --iterations
  c.loss.start_warm = 20000           # BootstrappedCE()
  c.loss.end_warm = 70000
  c.loss.top_p = 0.15
  c.val_every = 10000                 # with the released checkpoint interval
  c.val_sequences = -1                # all 30 DAVIS-2017 val sequences
  return c
