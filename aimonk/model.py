"""The model: a backbone from BACKBONES followed by a linear head with one logit per attribute."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aimonk.backbones import build_backbone
from aimonk.errors import AimonkError, CheckpointError


class AttributeClassifier(nn.Module):
    """Backbone features -> linear head with one logit per attribute.

    A frozen backbone has no trainable parameters and always runs in eval mode, so its BatchNorm
    statistics stay those of its weights while the head trains.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_attributes: int, train_backbone: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_attributes)
        self.train_backbone = train_backbone
        self.backbone.requires_grad_(train_backbone)

    def train(self, mode: bool = True) -> AttributeClassifier:
        super().train(mode)
        if not self.train_backbone:
            self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def build_model(
    num_attributes: int, backbone: str = "resnet18", weights: str = "auto", train_backbone: bool = False
) -> tuple[AttributeClassifier, str]:
    """The model and where its backbone weights came from (`imagenet:...`, `file:...` or `random`)."""
    network, width, origin = build_backbone(backbone, weights)
    return AttributeClassifier(network, width, num_attributes, train_backbone), origin


def model_from_checkpoint(checkpoint: dict, path: str | Path) -> AttributeClassifier:
    """The trained model of a loaded checkpoint, in eval mode, every tensor taken from the checkpoint."""
    try:
        with torch.device("meta"):  # no random initialisation: it would be overwritten anyway
            model, _ = build_model(len(checkpoint["attributes"]), checkpoint["backbone"], weights="none")
    except AimonkError as error:  # an unknown backbone: say which file names it
        raise CheckpointError(f"{path}: {error}") from None
    try:
        model.load_state_dict(checkpoint["state_dict"], assign=True)
    except RuntimeError as error:
        detail = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise CheckpointError(f"{path}: weights do not fit a {checkpoint['backbone']} model ({detail})") from None
    return model.eval()
