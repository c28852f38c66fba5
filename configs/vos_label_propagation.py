"""Zero-shot VOS by label propagation: the protocol of DINO's eval_video_segmentation.py.

  python -m dropmae_jax.vos propagate --weights=WORKDIR_OR_DIR_OR_PTH --root=DAVIS --out=DIR
      [--config=vos_label_propagation] [--config.vos.topk=10 ...]

Values are the defaults of facebookresearch/dino's eval_video_segmentation.py (its argparse:
n_last_frames 7, size_mask_neighborhood 12, topk 5; its code: exp(affinity / 0.1), frames with the
short side at 480 and the long side floored to a multiple of 64).
"""
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.vos = ml_collections.ConfigDict()
  c.vos.n_last_frames = 7             # context: the first frame + this many preceding frames
  c.vos.size_mask_neighborhood = 12   # keys within this many patches (rows and cols) of the query; <= 0: all
  c.vos.topk = 5                      # labels accumulated from the top-k affinities per query (all context frames jointly)
  c.vos.temperature = 0.1             # affinity = exp(cosine / temperature) (DINO hard-codes 0.1)
  c.vos.short_side = 480              # encoder input: short side resized to this (<= 0: the frame's own)
  c.vos.size_multiple = 64            # long side floored to a multiple of this (DINO: 64)
  c.vos.frame_embed = "x"             # frame-identity embedding per frame: x | z | none | z_first (z on frame 0, x elsewhere, as DropSeg)
  c.vos.dtype = "float32"             # encoder compute dtype
  c.vos.batch_size = 8                # frames per encoder call
  c.data = ml_collections.ConfigDict()
  c.data.subset = "val"               # ImageSets/<year>/<subset>.txt
  c.data.year = "2017"                # 2017 (multi-object) | 2016 (all objects merged into one)
  c.data.resolution = "480p"          # JPEGImages/<resolution>
  c.seed = 0                          # seed of --weights=random:CONFIG
  return c
