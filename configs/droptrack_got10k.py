"""DropTrack on GOT-10k (released `vitb_384_mae_ce_32x4_got10k_ep100`): OSTrack-384-CE, ViT-B/16.

GOT-10k protocol: trained on GOT-10k train_full (9,335 sequences) only, 100 epochs x 60,000 pairs
at global batch 128 (468 steps/epoch), lr 2.5e-4 (head) / 2.5e-5 (backbone) dropped x0.1 after
epoch 80, CE keep ratio 1 until epoch 20 then a cosine warm-up to 0.7 over 50 epochs; validation
(loss / IoU on GOT-10k val pairs and AO on the GOT-10k val sequences) every 20 epochs.

  python -m dropmae_jax.main --config=configs/droptrack_got10k.py --workdir=DIR \
      --config.data.roots.got10k=/data/got10k --config.init_from=PRETRAIN_WORKDIR_OR_PTH
  python -m dropmae_jax.track run --config=configs/droptrack_got10k.py \
      --weights=DIR/tracker_weights --benchmark=got10k --split=test --root=/data/got10k --out=RES

With fewer devices keep the global batch (config.accum_steps) or lower config.batch_size: the lr
follows as lr * batch_size / 128. Importing the released fine-tuned weights instead:
  python -m dropmae_jax.convert import-tracker DropTrack_got10k.pth.tar --out DIR \
      --config configs/droptrack_got10k.py
"""
from dropmae_jax.config import defaults as configlib


def get_config():
  c = configlib.droptrack_defaults()
  c.data.datasets = ("got10k",)       # DATA.TRAIN.DATASETS_NAME: GOT10K_train_full
  c.data.ratios = (1,)                # DATA.TRAIN.DATASETS_RATIO
  c.data.splits.got10k = "train"      # the whole train split (train_full: no split file)
  c.data.split_files.got10k = ""
  c.data.samples_per_epoch = 60000    # DATA.TRAIN.SAMPLE_PER_EPOCH
  c.data.val_dataset = "got10k"       # DATA.VAL.DATASETS_NAME: GOT10K_official_val
  c.data.val_split = "val"
  c.epochs = 100                      # TRAIN.EPOCH
  c.lr_drop_epoch = 80                # TRAIN.LR_DROP_EPOCH
  c.ce_start_epoch = 20               # TRAIN.CE_START_EPOCH
  c.ce_warm_epoch = 50                # TRAIN.CE_WARM_EPOCH
  c.val_every_epochs = 20             # TRAIN.VAL_EPOCH_INTERVAL
  return c
