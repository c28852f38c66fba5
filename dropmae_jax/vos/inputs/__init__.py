"""DropSeg fine-tuning input: jimmy-dq/DropSeg `train_dropseg.py` (stage 3) and
`dataset/vos_dataset.py`.

Modules: `videos` (DAVIS / YouTube-VOS training folders), `augment` (STCN's augmentation on PIL),
`pairs` (frame pair + object sampling per item), `pipeline` (grain batches for the trainer).
"""
