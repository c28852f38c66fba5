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

  # --- model (DESIGN.md §1) ---
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

  # --- data (released K700 recipe) ---
  c.data = ml_collections.ConfigDict()
  c.data.format = "video"             # 'video': decode files with PyAV on the fly | 'frames': a frame store (build_frame_store)
  c.data.root = ""                    # Kinetics-layout folder: ROOT/class_name/*.mp4
  c.data.list_file = ""               # optional text file of video paths (relative to root), one per line
  c.data.max_gap = 50                 # 'gap': frame e ~ U{s+1 .. min(T, s+gap)-1}
  c.data.crop_scale = (0.2, 1.0)      # RandomResizedCrop scale
  c.data.crop_ratio = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop aspect ratio
  c.data.hflip = True                 # random horizontal flip, independently per frame
  c.data.num_workers = 8              # grain worker processes per host (0 = in-process)
  c.data.prefetch = 2                 # batches buffered per worker
  c.data.read_threads = 4             # decoding threads per worker (PyAV, PIL release the GIL)
  c.data.read_buffer = 64             # items decoded ahead per worker (~0.3 MB each at 224 px)
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
  c.log_every = 50                    # steps between metrics.jsonl / TensorBoard rows
  c.ckpt_every = 1000                 # steps between checkpoints
  c.keep_ckpts = 3                    # checkpoints kept on disk
  c.figure_every = 5000               # steps between reconstruction PNGs (0 = never)
  c.max_steps = -1                    # stop after this many steps this run (testing; < 0 = run to the end)
  return c


def droptrack_defaults() -> ml_collections.ConfigDict:
  """DropTrack (OSTrack-384 with candidate elimination) model + inference settings.

  Names follow OSTrack's yaml (`experiments/ostrack/vitb_384_mae_ce_32x4_got10k_ep100.yaml` after
  merging `lib/config/ostrack/config.py`), lower-cased; downstream.md §1.2. Fine-tuning fields are
  added by the training code.
  """
  c = ml_collections.ConfigDict()
  c.task = "droptrack"                # what main.py runs
  c.seed = 42                         # released: 42 + local_rank; seeds init (and later training)
  c.init_from = ""                    # DropMAE weights to start from: .pth, imported DIR or WORKDIR

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
  return c
