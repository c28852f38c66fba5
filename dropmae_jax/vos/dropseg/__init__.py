"""DropSeg: video object segmentation fine-tuned from DropMAE (jimmy-dq/DropSeg, an STCN fork).

Modules: `model` (the network: one ViT pass per object over [memory frame + its mask ; query
frame], the ViTDet-style deconvolution pyramid and STCN's decoder; objects as a batch axis; soft
aggregation), `layout` (our variables <-> the released plain state dict, strict both ways),
`pretrain_init` (starting from DropMAE weights by the released rule), `weights` (the `convert
import-segmenter` / `export-segmenter` subcommands), `inference` (one-shot segmentation of a
later frame from frame 0 and its mask). docs/segmentation.md says what exists and what does not.
"""
