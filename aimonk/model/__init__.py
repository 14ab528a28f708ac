"""The model layer: networks, the loss they train with, and the features they compute, built on the data layer.

- backbones.py     BACKBONES: feature networks as stages, their classifier removed; ImageNet weights (Lite0 offline)
- classifier.py    AttributeClassifier: backbone stages + linear head, the last N stages trainable; the masked loss
                   (LOSSES bce, NA_MODES ignore and negative, POS_WEIGHTS)
- losses.py        more LOSSES (focal, asymmetric) and NA_MODES (large_loss, large_loss_correct)
- features.py      `features_of`: what the frozen stages output for a list of images, from a FeatureStore where it
                   holds them (BatchNorm folded, channels_last, bf16, in the DataLoader workers); weight fingerprints
- linear_heads.py  full-batch fit of linear heads (L-BFGS-B), L2 chosen per attribute on training folds
"""
