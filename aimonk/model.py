"""ResNet-style backbone from torchvision with its classifier replaced by one logit per attribute."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models
from torchvision.models import WeightsEnum

from aimonk.checkpoint import load_safely
from aimonk.errors import CheckpointError, WeightsUnavailableError


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one torchvision backbone: its constructor, ImageNet weights and classifier attribute."""

    builder: Callable[..., nn.Module]
    imagenet_weights: WeightsEnum
    classifier: str


# Adding a backbone is one line here (e.g. resnet50 with ResNet50_Weights.IMAGENET1K_V2, "fc").
BACKBONES = {
    "resnet18": BackboneSpec(models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, "fc"),
    "resnet34": BackboneSpec(models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1, "fc"),
    "resnet50": BackboneSpec(models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2, "fc"),
}


class AttributeClassifier(nn.Module):
    """Backbone features -> linear head with one logit per attribute.

    A frozen backbone has no trainable parameters and always runs in eval mode, so its BatchNorm
    statistics stay those of its weights while the head trains.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_attributes: int, frozen: bool = True):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_attributes)
        self.frozen = frozen
        self.backbone.requires_grad_(not frozen)

    def train(self, mode: bool = True) -> AttributeClassifier:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def build_model(
    num_attributes: int, backbone: str = "resnet18", weights: str = "auto", frozen: bool = True
) -> tuple[AttributeClassifier, str]:
    """The model and where its backbone weights came from (`imagenet:...`, `file:...` or `random`).

    `weights`: `auto` (ImageNet if obtainable, else random with a warning), `imagenet` (required),
    `none` (random initialisation), or a path to a local state-dict file.
    """
    spec = backbone_spec(backbone)
    network = spec.builder(weights=None)
    feature_dim = getattr(network, spec.classifier).in_features
    setattr(network, spec.classifier, nn.Identity())
    state, origin = backbone_state_dict(spec, weights)
    if state is not None:
        state = {key: value for key, value in state.items() if not key.startswith(f"{spec.classifier}.")}
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            first_line = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
            raise WeightsUnavailableError(f"weights from {origin} do not fit {backbone}: {first_line}") from None
    return AttributeClassifier(network, feature_dim, num_attributes, frozen), origin


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise WeightsUnavailableError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def backbone_state_dict(spec: BackboneSpec, weights: str) -> tuple[dict | None, str]:
    """The state dict to load into the backbone (None for random initialisation) and its origin."""
    if weights == "none":
        return None, "random"
    if weights in ("auto", "imagenet"):
        try:
            state = spec.imagenet_weights.get_state_dict(progress=False)
        except Exception as error:  # noqa: BLE001 - any download or cache failure means "not available"
            remedy = (
                f"ImageNet weights for {spec.imagenet_weights} are not in the torch cache and could not be "
                f"downloaded ({type(error).__name__}: {error}). Remedies: run once with network access, copy "
                f"{Path(spec.imagenet_weights.url).name} into $TORCH_HOME/hub/checkpoints/, pass a local "
                "state-dict file with --weights PATH, or use --weights none"
            )
            if weights == "imagenet":
                raise WeightsUnavailableError(remedy) from None
            warnings.warn(f"CONTINUING WITH A RANDOMLY INITIALISED BACKBONE: {remedy}", stacklevel=2)
            return None, "random"
        return state, f"imagenet:{spec.imagenet_weights}"
    return _state_dict_file(Path(weights))


def _state_dict_file(path: Path) -> tuple[dict, str]:
    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: weights file not found (--weights expects auto, imagenet, none "
                                      "or a path to a state-dict file)")
    try:
        data = path.read_bytes()
        state = load_safely(path)
    except (OSError, CheckpointError) as error:
        raise WeightsUnavailableError(f"--weights {error}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # an aimonk checkpoint
        state = {k.removeprefix("backbone."): v for k, v in state["state_dict"].items() if k.startswith("backbone.")}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{path}: expected a dict of tensors (a state dict)")
    return state, f"file:{path.name}:sha256:{hashlib.sha256(data).hexdigest()[:16]}"
