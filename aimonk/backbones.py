"""BACKBONES: image networks whose classifier is dropped so they output features; ImageNet weights where obtainable.

Adding a torchvision family is one entry: `BACKBONES.add("convnext_tiny", torchvision_backbone(
models.convnext_tiny, models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1, "classifier"))`. The classifier is found by
its attribute path and its *last* `nn.Linear` is replaced, so heads that are an `nn.Sequential` (EfficientNet,
MobileNet, ConvNeXt's LayerNorm + Flatten + Linear, ViT's `heads`) keep everything before their final layer.
"""

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
from aimonk.images import IMAGENET_MEAN, IMAGENET_STD
from aimonk.registry import Registry


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone, where its classifier sits, its pretrained weights and their input normalisation."""

    build: Callable[[], nn.Module]  # the whole network, classifier included, randomly initialised
    classifier: str  # attribute path of the classification head, e.g. "fc", "classifier", "heads"
    pretrained: Callable[[], dict[str, torch.Tensor]]  # ImageNet state dict; raises if it cannot be had here
    pretrained_name: str  # recorded in checkpoints as `imagenet:<name>`
    remedy: str  # what a user can do when `pretrained` fails
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def torchvision_backbone(builder: Callable[..., nn.Module], weights: WeightsEnum, classifier: str) -> BackboneSpec:
    """A torchvision classification model; its weights come from the torch cache or a download."""
    file = Path(weights.url).name
    return BackboneSpec(
        build=lambda: builder(weights=None),
        classifier=classifier,
        pretrained=lambda: weights.get_state_dict(progress=False),
        pretrained_name=str(weights),
        remedy=f"run once with network access, copy {file} into $TORCH_HOME/hub/checkpoints/, pass a local "
        "state-dict file with --weights PATH, or use --weights none",
    )


BACKBONES.add("resnet18", torchvision_backbone(models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, "fc"),
              "torchvision ResNet18 (the reference)")
BACKBONES.add("resnet34", torchvision_backbone(models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1, "fc"),
              "torchvision ResNet34")
BACKBONES.add("resnet50", torchvision_backbone(models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2, "fc"),
              "torchvision ResNet50")
BACKBONES.add("efficientnet_b0", torchvision_backbone(
    models.efficientnet_b0, models.EfficientNet_B0_Weights.IMAGENET1K_V1, "classifier"), "torchvision EfficientNet-B0")
BACKBONES.add("mobilenet_v3_small", torchvision_backbone(
    models.mobilenet_v3_small, models.MobileNet_V3_Small_Weights.IMAGENET1K_V1, "classifier"),
    "torchvision MobileNetV3-Small")
BACKBONES.add("convnext_tiny", torchvision_backbone(
    models.convnext_tiny, models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1, "classifier"), "torchvision ConvNeXt-Tiny")


def drop_classifier(network: nn.Module, classifier: str) -> int:
    """Replace the last `nn.Linear` under the attribute path `classifier` by an identity; its input width."""
    parent = network.get_submodule(classifier)
    linears = [name for name, module in parent.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"no nn.Linear under {classifier!r} of {type(network).__name__}")
    path = f"{classifier}.{linears[-1]}" if linears[-1] else classifier
    width = network.get_submodule(path).in_features
    owner, _, attribute = path.rpartition(".")
    setattr(network.get_submodule(owner) if owner else network, attribute, nn.Identity())
    return width


def build_backbone(name: str, weights: str) -> tuple[nn.Module, int, str]:
    """The feature network, its feature width, and where its weights came from (`imagenet:...`, `file:...`, `random`).

    `weights`: `auto` (ImageNet if obtainable, else random with a warning), `imagenet` (required),
    `none` (random initialisation), or a path to a local state-dict file.
    """
    spec = BACKBONES[name]
    network = spec.build()
    width = drop_classifier(network, spec.classifier)
    state, origin = pretrained_state(spec, weights)
    if state is not None:
        # Drop the weights of the removed final layer only (ConvNeXt's classifier also holds a LayerNorm).
        own = network.state_dict().keys()
        state = {key: value for key, value in state.items() if key in own or not key.startswith(f"{spec.classifier}.")}
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            first_line = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
            raise WeightsUnavailableError(f"weights from {origin} do not fit {name}: {first_line}") from None
    return network, width, origin


def pretrained_state(spec: BackboneSpec, weights: str) -> tuple[dict | None, str]:
    """The state dict to load into the backbone (None for random initialisation) and its origin."""
    if weights == "none":
        return None, "random"
    if weights in ("auto", "imagenet"):
        try:
            state = spec.pretrained()
        except Exception as error:  # noqa: BLE001 - any download or cache failure means "not available"
            remedy = (f"ImageNet weights {spec.pretrained_name} are not available here ({type(error).__name__}: "
                      f"{error}). Remedies: {spec.remedy}")
            if weights == "imagenet":
                raise WeightsUnavailableError(remedy) from None
            warnings.warn(f"CONTINUING WITH A RANDOMLY INITIALISED BACKBONE: {remedy}", stacklevel=2)
            return None, "random"
        return state, f"imagenet:{spec.pretrained_name}"
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
