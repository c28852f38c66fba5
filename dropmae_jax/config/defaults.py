"""Default pre-training config shared by every file under `configs/`.

Each knob is named as the paper / released code names it. `configs/k700.py`, `configs/k400.py`
and `configs/demo.py` start from `pretrain_defaults()` and override what differs.
"""
from __future__ import annotations

import ml_collections


def pretrain_defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "pretrain"                 # what main.py runs
  c.seed = 0                          # seeds model init, masking, ASAD and the data order
  c.init_from = ""                    # start from these weights (python -m dropmae_jax.convert import ... --out DIR)

  # --- model (jimmy-dq/DropMAE `models_mae.py`; docs/pretraining.md) ---
  c.model = ml_collections.ConfigDict()
  c.model.variant = "B/16"            # encoder size/patch: tiny/S/B/L/H + "/patch"
  c.model.img_size = 224              # input frame side (pixels)
  c.model.decoder_embed_dim = 512     # decoder width
  c.model.decoder_depth = 8           # decoder blocks
  c.model.decoder_num_heads = 16      # decoder heads
  c.model.decoder_mlp_ratio = 4.0     # decoder MLP hidden = ratio * width
  c.model.mask_ratio = 0.75           # fraction of the 2n joint tokens hidden from the encoder
  c.model.masking = "random"          # 'random' (released: joint over both frames) | 'tube' (VideoMAE)
  c.model.norm_pix_loss = True        # per-patch normalised target (unbiased var, eps 1e-6)
  c.model.dtype = "bfloat16"          # compute dtype; params stay float32
  c.model.remat = False               # rematerialise blocks to save memory

  # --- ASAD: adaptive spatial-attention dropout ---
  c.asad = ml_collections.ConfigDict()
  c.asad.drop_ratio = 0.1             # P: fraction of the n-1 same-frame keys dropped per query (0 = TwinMAE)
  c.asad.temporal = "max"             # 'max' (released code) | 'sum' (paper) over the other frame
  c.asad.in_encoder = False           # also apply ASAD in encoder blocks (paper ablation)
  c.asad.impl = "auto"                # reference | pallas_gpu | pallas_tpu | auto (kernels verified on this hardware, else reference)
  c.asad.masked_attention = "auto"    # fused (impl's own attention) | cudnn (impl picks cells, jax.nn.dot_product_attention: cuDNN flash where supported) | auto (measured choice, else fused)

  # --- data (released K700 recipe) ---
  c.data = ml_collections.ConfigDict()
  c.data.format = "video"             # 'video': decode files with PyAV on the fly | 'frames': a frame store (build_frame_store) | 'tfds': a TFDS dataset (tfds_kinetics)
  c.data.root = ""                    # Kinetics-layout folder: ROOT/class_name/*.mp4
  c.data.list_file = ""               # optional text file of video paths (relative to root), one per line
  c.data.tfds_name = "kinetics_frames"  # format 'tfds': dataset name[:version] built by dropmae_jax/data/tfds_kinetics.py; its 'train' split
  c.data.tfds_data_dir = ""           # format 'tfds': the TFDS data_dir holding it ('' = $TFDS_DATA_DIR or ~/tensorflow_datasets)
  c.data.max_gap = 50                 # 'gap': frame e ~ U{s+1 .. min(T, s+gap)-1}
  c.data.crop_scale = (0.2, 1.0)      # RandomResizedCrop scale
  c.data.crop_ratio = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop aspect ratio
  c.data.hflip = True                 # random horizontal flip, independently per frame
  c.data.num_workers = 8              # grain worker processes per host (0 = in-process); batches do not depend on it
  c.data.prefetch = 2                 # batches buffered per worker
  c.data.read_threads = 4             # decoding threads per worker (PyAV, PIL release the GIL)
  c.data.read_buffer = 64             # items decoded ahead per worker, in whole batches (~0.3 MB each at 224 px)
  c.data.max_retries = 20             # unreadable videos skipped in a row before giving up

  # --- optimisation ---
  c.batch_size = 4096                 # global batch (pairs) per optimizer step
  c.accum_steps = 1                   # gradient accumulation micro-steps per optimizer step
  c.epochs = 800                      # total epochs
  c.warmup_epochs = 40                # per-step linear warm-up
  c.blr = 1.5e-4                      # base lr: lr = blr * batch_size / 256
  c.lr = -1.0                         # absolute lr; < 0 means derive from blr
  c.min_lr = 0.0                      # floor of the half-cycle cosine
  c.weight_decay = 0.05               # AdamW decoupled decay (not on 1-D params / biases)
  c.b1 = 0.9                          # AdamW beta1
  c.b2 = 0.95                         # AdamW beta2
  c.grad_clip_norm = 0.0              # 0 = no clipping (released)
  c.steps_per_epoch = -1              # < 0: len(dataset) // batch_size
  c.total_steps = -1                  # < 0: epochs * steps_per_epoch

  # --- parallelism ---
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                    # data-parallel axis size (-1 = all remaining devices)
  c.mesh.fsdp = 1                     # parameter-sharding axis size

  # --- bookkeeping ---
  c.log_every = 50                    # steps between metrics.jsonl / TensorBoard rows (>= 1; the last step is always logged)
  c.ckpt_every = 1000                 # steps between checkpoints (<= 0 = only at the end and on preemption)
  c.keep_ckpts = 3                    # checkpoints kept on disk (>= 1)
  c.restore_step = -1                 # resume from this checkpoint step (-1 = the newest undamaged; newer ones are moved aside)
  c.figure_every = 5000               # steps between reconstruction PNGs (<= 0 = never)
  c.max_steps = -1                    # stop after this many steps this run (testing; < 0 = run to the end)
  # --- zero-shot label propagation while pre-training (dropmae_jax/vos; DINO's protocol) ---
  c.eval = ml_collections.ConfigDict()
  c.eval.label_propagation_every = 0  # steps between evaluations, logged as davis_jf / davis_j / davis_f (<= 0 = never)
  c.eval.davis_root = "synthetic"     # DAVIS-layout root, or 'synthetic' (built once under WORKDIR/vos_synthetic)
  c.eval.davis_subset = "val"         # ImageSets/<year>/<subset>.txt
  c.eval.davis_year = "2017"          # 2017 (multi-object) | 2016 (objects merged)
  c.eval.davis_sequences = ""         # comma-separated sequence names ('' = the whole subset)
  c.eval.vos = ml_collections.ConfigDict()
  c.eval.vos.n_last_frames = 7        # context: the first frame + the last n frames (DINO: 7)
  c.eval.vos.size_mask_neighborhood = 12  # keys within this many patches of the query (DINO: 12)
  c.eval.vos.topk = 5                 # affinities kept per query (DINO: 5)
  c.eval.vos.temperature = 0.1        # softmax temperature of the affinities (DINO's code: 0.1)
  c.eval.vos.short_side = 480         # frames resized to this short side (<= 0: native size)
  c.eval.vos.size_multiple = 64       # long side floored to a multiple of this (DINO: 64)
  c.eval.vos.frame_embed = "x"        # frame-identity embedding per frame: x | z | none | z_first
  c.eval.vos.dtype = "float32"        # encoder compute dtype for the evaluation
  c.eval.vos.batch_size = 8           # frames per encoder call
  return c


def eval_defaults() -> ml_collections.ConfigDict:
  """`config.eval` (label propagation during pre-training) as pretrain_defaults() sets it."""
  return pretrain_defaults().eval


def droptrack_defaults() -> ml_collections.ConfigDict:
  """DropTrack (OSTrack-384 with candidate elimination) model + inference settings.

  Names follow OSTrack's yaml (`experiments/ostrack/vitb_384_mae_ce_32x4_got10k_ep100.yaml` after
  merging `lib/config/ostrack/config.py`), lower-cased; docs/tracking.md lists the values. The
  training data fields (`c.data`) come from `droptrack_data_defaults()`.
  """
  c = ml_collections.ConfigDict()
  c.task = "droptrack"                # what main.py runs
  c.seed = 42                         # released: 42 + local_rank; seeds init, drop-path and the data order
  c.init_from = ""                    # DropMAE weights to start from: .pth, imported DIR or pre-training WORKDIR ('' = random init)

  # --- model (MODEL.* / DATA.*.SIZE) ---
  c.model = ml_collections.ConfigDict()
  c.model.variant = "B/16"            # MODEL.BACKBONE.TYPE vit_base_patch16_224_ce, STRIDE 16
  c.model.depth = -1                  # blocks; < 0 = the variant's (12 for B); tests use small depths
  c.model.template_size = 192         # DATA.TEMPLATE.SIZE (pixels): 12x12 tokens
  c.model.search_size = 384           # DATA.SEARCH.SIZE (pixels): 24x24 tokens
  c.model.pretrain_img_size = 224     # the ViT's img_size: legacy pos_embed is (1, 1+(224/16)², D)
  c.model.ce_loc = (3, 6, 9)          # MODEL.BACKBONE.CE_LOC: blocks (0-based) that eliminate
  c.model.ce_keep_ratio = 0.7         # MODEL.BACKBONE.CE_KEEP_RATIO: search tokens kept per CE block
  c.model.ce_template_range = "CTR_POINT"  # MODEL.BACKBONE.CE_TEMPLATE_RANGE: CTR_POINT | CTR_REC | ALL
  c.model.head_channels = 256         # MODEL.HEAD.NUM_CHANNELS (CENTER head towers 256/128/64/32)
  c.model.drop_path_rate = 0.1        # TRAIN.DROP_PATH_RATE: stochastic depth, linear over blocks
  c.model.dtype = "float32"           # compute dtype; params stay float32 (released: AMP off)

  # --- tracker (TEST.*) ---
  c.tracker = ml_collections.ConfigDict()
  c.tracker.template_factor = 2.0     # TEST.TEMPLATE_FACTOR: template crop side = factor·sqrt(w·h)
  c.tracker.search_factor = 5.0       # TEST.SEARCH_FACTOR: search crop side = factor·sqrt(w·h)
  c.tracker.clip_margin = 10          # clip_box margin (pixels) when mapping the box back
  c.tracker.batch_sequences = 16      # sequences tracked in lock-step by the batched runner

  # --- training data (DATA.*; droptrack_data_defaults) ---
  c.data = droptrack_data_defaults()

  # --- optimisation (TRAIN.*) ---
  c.batch_size = 128                  # TRAIN.BATCH_SIZE 32 per GPU x 4 GPUs: global pairs per optimizer step
  c.accum_steps = 1                   # gradient accumulation micro-steps per optimizer step (not in the released code)
  c.epochs = 100                      # TRAIN.EPOCH
  c.lr = 2.5e-4                       # TRAIN.LR at batch 128 (head); the lr used is lr * batch_size / 128
  c.backbone_multiplier = 0.1         # TRAIN.BACKBONE_MULTIPLIER: backbone lr = lr * this
  c.weight_decay = 1e-4               # TRAIN.WEIGHT_DECAY: AdamW, on every parameter
  c.lr_drop_epoch = 80                # TRAIN.LR_DROP_EPOCH: StepLR period (epochs)
  c.lr_drop_factor = 0.1              # StepLR gamma
  c.grad_clip_norm = 0.1              # TRAIN.GRAD_CLIP_NORM (torch clip_grad_norm_)
  c.ce_start_epoch = 20               # TRAIN.CE_START_EPOCH: CE keep ratio 1 up to this epoch
  c.ce_warm_epoch = 50                # TRAIN.CE_WARM_EPOCH: cosine warm-up of the keep ratio to ce_keep_ratio
  c.ce_warmup_masked = True           # warm-up epochs mask eliminated tokens (one compile for all ratios, no CE saving there); False: one compile per ratio
  c.steps_per_epoch = -1              # < 0: data.samples_per_epoch // batch_size (released 60000 // 128 = 468)
  c.total_steps = -1                  # < 0: epochs * steps_per_epoch
  c.loss = ml_collections.ConfigDict()
  c.loss.focal_weight = 1.0           # focal (location) loss weight (hard-coded 1.0 in the released actor)
  c.loss.giou_weight = 2.0            # TRAIN.GIOU_WEIGHT
  c.loss.l1_weight = 5.0              # TRAIN.L1_WEIGHT

  # --- validation (DATA.VAL, TRAIN.VAL_EPOCH_INTERVAL) ---
  c.val_every_epochs = 20             # TRAIN.VAL_EPOCH_INTERVAL: val loss / IoU and AO every N epochs (<= 0 = never)
  c.val_ao_sequences = -1             # AO on the first N val sequences (< 0 = all, 0 = no AO)

  # --- parallelism ---
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                    # data-parallel axis size (-1 = all remaining devices)
  c.mesh.fsdp = 1                     # parameter-sharding axis size

  # --- bookkeeping ---
  c.log_every = 50                    # steps between metrics.jsonl / TensorBoard rows (>= 1; released: print_interval 50)
  c.ckpt_every = 468                  # steps between checkpoints (one epoch at the released batch; <= 0 = only at the end)
  c.keep_ckpts = 3                    # checkpoints kept on disk (>= 1)
  c.restore_step = -1                 # resume from this checkpoint step (-1 = the newest undamaged; newer ones are moved aside)
  c.figure_every = 2340               # steps between tracking figures (<= 0 = never)
  c.max_steps = -1                    # stop after this many steps this run (testing; < 0 = run to the end)
  return c


def droptrack_data_defaults() -> ml_collections.ConfigDict:
  """DropTrack fine-tuning data (`config.data`): OSTrack's DATA.* for the GOT-10k recipe.

  OSTrack `lib/train/data/sampler.py` and `lib/train/data/processing.py` (docs/tracking.md);
  read by dropmae_jax/track/inputs/pipeline.py. Crop sizes are
  config.model.template_size / search_size. The full recipe (configs/droptrack_full.py) sets
  datasets=('lasot', 'got10k', 'coco', 'trackingnet'), ratios=(1, 1, 1, 1) and the vottrain list.
  """
  d = ml_collections.ConfigDict()
  d.datasets = ("got10k",)            # DATA.TRAIN.DATASETS_NAME: got10k | lasot | trackingnet | coco
  d.ratios = (1,)                     # DATA.TRAIN.DATASETS_RATIO: dataset picked with p ∝ ratio
  d.roots = ml_collections.ConfigDict({   # dataset folders; got10k may be 'synthetic' (WORKDIR/synthetic_tracking)
      "got10k": "", "lasot": "", "trackingnet": "", "coco": ""})
  d.splits = ml_collections.ConfigDict({  # split per dataset (coco: instances_<split>.json + <split>/)
      "got10k": "train", "lasot": "train", "trackingnet": "train", "coco": "train2017"})
  d.split_files = ml_collections.ConfigDict({  # '' or a list of names (or pytracking's 0-based index file)
      "got10k": "", "lasot": "", "trackingnet": "", "coco": ""})
  d.samples_per_epoch = 60000         # DATA.TRAIN.SAMPLE_PER_EPOCH: pairs per epoch (all hosts)
  d.max_sample_interval = 200         # DATA.MAX_SAMPLE_INTERVAL: search in [t+1, t+200+5k)
  d.template = ml_collections.ConfigDict()
  d.template.factor = 2.0             # DATA.TEMPLATE.FACTOR: crop side = factor * sqrt(w*h)
  d.template.center_jitter = 0.0      # DATA.TEMPLATE.CENTER_JITTER
  d.template.scale_jitter = 0.0       # DATA.TEMPLATE.SCALE_JITTER
  d.search = ml_collections.ConfigDict()
  d.search.factor = 5.0               # DATA.SEARCH.FACTOR
  d.search.center_jitter = 4.5        # DATA.SEARCH.CENTER_JITTER (OSTrack-256: 3)
  d.search.scale_jitter = 0.5         # DATA.SEARCH.SCALE_JITTER (OSTrack-256: 0.25)
  d.grayscale_prob = 0.05             # joint ToGrayscale probability (both frames)
  d.flip_prob = 0.5                   # joint RandomHorizontalFlip probability (both frames)
  d.brightness_jitter = 0.2           # ToTensorAndJitter: factor U[1-j, 1+j) per crop (train only)
  d.norm_flip_prob = 0.5              # RandomHorizontalFlip_Norm per crop, independent (train only)
  d.num_workers = 8                   # grain worker processes per host (0 = in-process); batches do not depend on it
  d.prefetch = 2                      # batches buffered per worker
  d.read_threads = 1                  # threads per worker, each building whole batches
  d.max_retries = 100                 # unusable pairs in a row (bad frames, rejected crops) before giving up
  d.val_dataset = "got10k"            # DATA.VAL.DATASETS_NAME (GOT10K_official_val = got10k 'val')
  d.val_split = "val"                 # its split (GOT10K_votval = split 'train' + the votval list)
  d.val_split_file = ""               # '' or the votval list for the full recipe
  d.val_samples = 10000               # DATA.VAL.SAMPLE_PER_EPOCH: pairs per validation pass
  d.synthetic = ml_collections.ConfigDict()   # the set made for roots.got10k='synthetic'
  d.synthetic.train = 8               # train sequences
  d.synthetic.val = 4                 # val sequences
  d.synthetic.frames = 0              # frames per sequence (0 = random 60-100)
  d.synthetic.size = (320, 240)       # frame width, height
  d.synthetic.seed = 0                # rendering seed
  return d


def dropseg_defaults() -> ml_collections.ConfigDict:
  """DropSeg (video object segmentation fine-tuned from DropMAE) model settings.

  Names follow jimmy-dq/DropSeg: `model/models_vit.py` (`vit_base_patch16(num_classes=1000,
  drop_path_rate, global_pool=True, single_object=False, img_size)`, `fpn1`, `fpn2`),
  `model/network.py` (`Decoder`) and `util/hyper_para.py` (the command-line flags);
  docs/segmentation.md lists the values. The training data fields (`c.data`) come from
  `dropseg_data_defaults()`.
  """
  c = ml_collections.ConfigDict()
  c.task = "dropseg"                  # what main.py runs: DropSeg fine-tuning (vos/task.py)
  c.seed = 14159265                   # released torch / np / random seed (train_dropseg.py); seeds init here
  c.init_from = ""                    # --pretrained_net_path: DropMAE weights to start from (.pth, imported DIR or pre-training WORKDIR; '' = random init)

  # --- model (model/models_vit.py, model/network.py) ---
  c.model = ml_collections.ConfigDict()
  c.model.variant = "B/16"            # vit_base_patch16: ViT size/patch (mask_patch_embed uses the same patch)
  c.model.depth = -1                  # blocks; < 0 = the variant's (12 for B); tests use small depths
  c.model.img_size = 384              # --img_size: training frame side; pos_embed_two_frame is (1, 1 + 2·(img_size/16)², D)
  c.model.pretrain_img_size = 224     # timm VisionTransformer's img_size default: pos_embed is (1, 1 + (224/16)², D)
  c.model.num_classes = 1000          # num_classes: the timm classification head (head.*), unused by the forward
  c.model.fpn1_channels = 256         # fpn1: ConvTranspose2d(D, D) -> Norm2d -> GELU -> ConvTranspose2d(D, 256): the stride-4 map
  c.model.fpn2_channels = 512         # fpn2: ConvTranspose2d(D, 512): the stride-8 map
  c.model.compress_channels = 512     # Decoder.compress = ResBlock(768, 512) (up_16_8's up_c)
  c.model.decoder_channels = 256      # Decoder.up_16_8 = UpsampleBlock(512, 512, 256), up_8_4 = UpsampleBlock(256, 256, 256)
  c.model.drop_path_rate = 0.1        # --droppath_rate: stochastic depth, linear over blocks (evaluation builds the model with 0.0)
  c.model.dtype = "float32"           # compute dtype; params stay float32 (released: training under AMP, evaluation float32 unless --amp)

  # --- training data (dataset/vos_dataset.py; dropseg_data_defaults) ---
  c.data = dropseg_data_defaults()

  # --- optimisation (util/hyper_para.py stage 3, model/model.py) ---
  c.batch_size = 32                   # --batch_size 4 per GPU x 8 GPUs: global pairs per optimizer step
  c.accum_steps = 1                   # gradient accumulation micro-steps per optimizer step (not in the released code)
  c.lr = 2e-5                         # --lr (stage 3): Adam
  c.weight_decay = 1e-7               # --weight_decay: Adam's L2 term (added to the gradient, not decoupled)
  c.adam_b1 = 0.9                     # torch.optim.Adam betas[0] (default)
  c.adam_b2 = 0.999                   # torch.optim.Adam betas[1] (default)
  c.adam_eps = 1e-8                   # torch.optim.Adam eps (default)
  c.lr_steps = (125000,)              # --steps: MultiStepLR milestones (iterations)
  c.lr_gamma = 0.1                    # --gamma: MultiStepLR factor at each milestone
  c.total_steps = 210000              # --iterations: optimizer steps of the whole run
  c.steps_per_epoch = -1              # < 0: the videos of one pass over data (DAVIS x repeat + YouTube-VOS) // batch_size; a schedule unit only
  c.epochs = 1                        # unused when total_steps > 0
  c.grad_clip_norm = 0.0              # no gradient clipping in the released code (> 0: clip the global norm)
  c.loss = ml_collections.ConfigDict()
  c.loss.start_warm = 20000           # BootstrappedCE start_warm: plain mean CE before this iteration
  c.loss.end_warm = 70000             # BootstrappedCE end_warm: top-p falls linearly from 1 to top_p by here
  c.loss.top_p = 0.15                 # BootstrappedCE top_p: fraction of hardest pixels kept after the warm-up

  # --- validation (J&F of one-shot segmentation on data.val_root) ---
  c.val_every = 10000                 # steps between validation J&F passes (<= 0 = never; the end of the run always)
  c.val_sequences = -1                # J&F on the first N val sequences (< 0 = all, 0 = none)

  # --- parallelism ---
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                    # data-parallel axis size (-1 = all remaining devices)
  c.mesh.fsdp = 1                     # parameter-sharding axis size

  # --- bookkeeping ---
  c.log_every = 100                   # steps between metrics.jsonl / TensorBoard rows (>= 1; released: report_interval 100)
  c.ckpt_every = 10000                # steps between checkpoints (released: save_model_interval 10000; <= 0 = only at the end)
  c.keep_ckpts = 3                    # checkpoints kept on disk (>= 1)
  c.restore_step = -1                 # resume from this checkpoint step (-1 = the newest undamaged; newer ones are moved aside)
  c.figure_every = 10000              # steps between frame / ground truth / prediction figures (<= 0 = never)
  c.max_steps = -1                    # stop after this many steps this run (testing; < 0 = run to the end)
  return c


def dropseg_data_defaults() -> ml_collections.ConfigDict:
  """DropSeg fine-tuning data (`config.data`): jimmy-dq/DropSeg `train_dropseg.py` stage 3 and
  `dataset/vos_dataset.py` (`VOSDataset`), read by dropmae_jax/vos/inputs/.

  Frame pairs from DAVIS-2017 train (repeated) and YouTube-VOS 2019 train_480p, augmented as
  STCN does; the frame side is config.model.img_size.
  """
  d = ml_collections.ConfigDict()
  d.davis_root = ""                   # DAVIS-2017 trainval (JPEGImages/480p, Annotations/480p); 'synthetic' = WORKDIR/vos_synthetic_dropseg; '' = none
  d.davis_subset = "train"            # ImageSets/2017/<subset>.txt (released: util/davis_subset.txt, the 60 train videos)
  d.davis_repeat = 5                  # ConcatDataset([davis] * 5 + [youtube])
  d.davis_max_jump = 25               # VOSDataset max_jump for DAVIS (every frame kept)
  d.youtube_root = ""                 # YouTube-VOS 2019 train_480p (JPEGImages/, Annotations/); '' = none
  d.youtube_max_jump = 5              # 25 // 5: train_480p keeps every 5th frame
  d.youtube_subset = ""               # file of video names to keep (released: util/yv_subset.txt, 3464 videos); '' = every video
  d.max_redraws = 5                   # VOSDataset trials: pair draws per video while the memory frame holds no object (then the last draw is kept, no object)
  d.max_retries = 100                 # unreadable videos (frame / mask / mask size) skipped in a row for one item before RuntimeError
  d.reverse_prob = 0.5                # time order of the pair reversed with this probability
  d.min_videos_frames = 2             # videos shorter than this are left out (a pair needs two frames)
  d.num_workers = 8                   # grain worker processes per host (0 = in-process); batches do not depend on it
  d.prefetch = 2                      # batches buffered per worker
  d.read_threads = 1                  # threads per worker, each building whole batches
  d.val_root = ""                     # DAVIS-layout folder scored during training; 'synthetic' = WORKDIR/vos_synthetic_dropseg; '' = none
  d.val_subset = "val"                # its ImageSets/2017/<subset>.txt
  d.synthetic = ml_collections.ConfigDict()   # the set made for 'synthetic' roots (python -m dropmae_jax.vos.synthetic)
  d.synthetic.train = 8               # train sequences
  d.synthetic.val = 4                 # val sequences
  d.synthetic.frames = 24             # frames per sequence
  d.synthetic.size = (160, 120)       # frame width, height
  d.synthetic.seed = 0                # rendering seed
  return d
