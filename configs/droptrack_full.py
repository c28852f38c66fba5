"""DropTrack on all data (released `vitb_384_mae_ce_32x4_ep300`): OSTrack-384-CE, ViT-B/16.

LaSOT train, GOT-10k vottrain (7,086 sequences), COCO-2017 train instances and TrackingNet
(all 12 TRAIN chunks), sampled 1:1:1:1; 300 epochs x 60,000 pairs at global batch 128
(468 steps/epoch), lr 2.5e-4 (head) / 2.5e-5 (backbone) dropped x0.1 after epoch 240, CE keep
ratio 1 until epoch 20 then a cosine warm-up to 0.7 over 80 epochs. For LaSOT / TrackingNet /
UAV123 / OTB evaluation (GOT-10k test numbers must come from droptrack_got10k.py).

  python -m dropmae_jax.main --config=configs/droptrack_full.py --workdir=DIR \
      --config.data.roots.lasot=/data/lasot --config.data.roots.got10k=/data/got10k \
      --config.data.roots.coco=/data/coco --config.data.roots.trackingnet=/data/trackingnet \
      --config.data.split_files.got10k=/data/got10k_vot_train_split.txt \
      --config.init_from=PRETRAIN_WORKDIR_OR_PTH

GOT-10k vottrain is the released `lib/train/data_specs/got10k_vot_train_split.txt` (7,086 names;
one sequence name a line here); without it the whole GOT-10k train split is used. Validation:
the released run validates on GOT-10k votval pairs (`got10k_vot_val_split.txt`); here it runs on
the GOT-10k val split (pairs for loss / IoU, sequences for AO), which needs no list file.
"""
from dropmae_jax.config import defaults as configlib


def get_config():
  c = configlib.droptrack_defaults()
  # DATA.TRAIN.DATASETS_NAME: LASOT, GOT10K_vottrain, COCO17, TRACKINGNET
  c.data.datasets = ("lasot", "got10k", "coco", "trackingnet")
  c.data.ratios = (1, 1, 1, 1)        # DATA.TRAIN.DATASETS_RATIO
  c.data.samples_per_epoch = 60000    # DATA.TRAIN.SAMPLE_PER_EPOCH
  c.data.val_dataset = "got10k"
  c.data.val_split = "val"
  c.epochs = 300                      # TRAIN.EPOCH
  c.lr_drop_epoch = 240               # TRAIN.LR_DROP_EPOCH
  c.ce_start_epoch = 20               # TRAIN.CE_START_EPOCH
  c.ce_warm_epoch = 80                # TRAIN.CE_WARM_EPOCH
  c.val_every_epochs = 20             # TRAIN.VAL_EPOCH_INTERVAL
  return c
