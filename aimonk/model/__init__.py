"""The model layer: networks, losses and the features they compute, built on the data layer.

- backbones.py     BACKBONES: feature networks as stages, their classifier removed; ImageNet weights (Lite0 offline)
- classifier.py    AttributeClassifier: backbone stages + linear head; the last N stages trainable
- runtime.py       a frozen backbone for inference: BatchNorm folded, channels_last, bf16, in workers
- features.py      on-disk cache of what the frozen stages output, keyed by image bytes and weights fingerprints
- cache_folders.py the cache's folders: the marker only it writes, what each holds, clearing only what it made
- losses.py        LOSSES (bce, focal, asymmetric), NA_MODES (ignore, negative, large_loss), POS_WEIGHTS; masking
- linear_heads.py  full-batch fit of linear heads (L-BFGS-B), L2 chosen per attribute on training folds
"""
