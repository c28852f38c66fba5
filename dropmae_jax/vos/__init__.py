"""Video object segmentation: DAVIS-layout data, the official J&F, and zero-shot label propagation.

  python -m dropmae_jax.vos propagate --weights=WORKDIR_OR_DIR_OR_PTH --root=DAVIS --out=DIR
  python -m dropmae_jax.vos evaluate --root=DAVIS --results=DIR [--json OUT.json]
  python -m dropmae_jax.vos segment --weights=DROPSEG --root=DAVIS_OR_YOUTUBE_VALID --out=DIR
  python -m dropmae_jax.vos video --weights=W --video=in.mp4 --mask=first.png --out=out.mp4

Modules: `davis` (reader, palette PNGs), `metrics` (davis2017-evaluation's J, F and statistics in
numpy), `features` (frozen DropMAE encoder on full frames), `propagate` (DINO's label
propagation), `during_training` (the pre-training loop's `davis_jf`), `youtube` (YouTube-VOS
valid / test folders), `video` (`vos video`), `dropseg/` (the DropSeg segmenter: model, weights,
inference, `vos segment`).
"""
