"""The model: a backbone from BACKBONES, as a sequence of stages, followed by a linear head with one logit per
attribute. The last `trainable_stages` stages train; the others stay frozen, in eval mode (their BatchNorm
statistics stay those of the weights), and can be run once and cached.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aimonk.errors import AimonkError, CheckpointError, state_dict_mismatch
from aimonk.model.backbones import build_backbone
from aimonk.registry import BACKBONES


def backbone_autocast(precision: str, device: torch.device) -> torch.autocast:
    """bf16 autocast when asked for (CPU and GPU), otherwise a disabled context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def standardising(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, scale) that standardise `features` (rows x dims): the population deviation, and 1 for a dimension
    without spread, as scikit-learn's StandardScaler."""
    mean = features.mean(0)
    scale = features.std(0, correction=0)
    return mean, torch.where(scale > 1e-6 * scale.max().clamp(min=1e-12), scale, torch.ones_like(scale))


class AttributeClassifier(nn.Module):
    """Backbone stages -> (optionally standardised) features -> linear head."""

    def __init__(self, backbone: nn.Module, stages: list[nn.Module], feature_dim: int, num_attributes: int,
                 trainable_stages: int = 0):
        super().__init__()
        if not 0 <= trainable_stages <= len(stages):
            raise AimonkError(f"trainable_stages must be between 0 and {len(stages)} (the backbone's stages), "
                              f"got {trainable_stages}")
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_attributes)
        self.stages = tuple(stages)  # views into `backbone`: a tuple is not registered, so state-dict keys stay
        self.trainable_stages = trainable_stages
        self.input_scaling: tuple[torch.Tensor, torch.Tensor] | None = None  # (mean, scale) of the head's input
        self.backbone.requires_grad_(False)
        self.trainable_part.requires_grad_(True)

    @property
    def frozen_part(self) -> nn.Sequential:
        return nn.Sequential(*self.stages[: len(self.stages) - self.trainable_stages])

    @property
    def trainable_part(self) -> nn.Sequential:
        return nn.Sequential(*self.stages[len(self.stages) - self.trainable_stages :])

    def split_state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The state dict in two: what trains (the head and the trainable stages) and what stays frozen.

        The tensors are the model's own (parameters included): detach them to keep them."""
        trains = {id(tensor) for part in (self.head, self.trainable_part)
                  for tensor in (*part.parameters(), *part.buffers())}
        trainable: dict[str, torch.Tensor] = {}
        frozen: dict[str, torch.Tensor] = {}
        for name, tensor in self.state_dict(keep_vars=True).items():
            (trainable if id(tensor) in trains else frozen)[name] = tensor
        return trainable, frozen

    def train(self, mode: bool = True) -> AttributeClassifier:
        super().train(mode)
        (self.frozen_part if self.trainable_stages else self.backbone).eval()
        return self

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.input_scaling is not None:
            mean, scale = self.input_scaling
            features = (features - mean) / scale
        return self.head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.trainable_part(self.frozen_part(images)))

    def standardise_head_input(self, features: torch.Tensor) -> None:
        """Feed the head features standardised with the mean and deviation of `features` (rows x dims), as
        `standardising` finds them."""
        mean, scale = standardising(features)
        self.input_scaling = (mean.to(self.head.weight), scale.to(self.head.weight))

    def fold_input_scaling(self) -> None:
        """Fold the standardisation into the head, so the saved model is a plain linear head on raw features."""
        if self.input_scaling is None:
            return
        mean, scale = self.input_scaling
        with torch.no_grad():
            self.head.weight.div_(scale)
            self.head.bias.sub_(self.head.weight @ mean)
        self.input_scaling = None


class TrainedPart(nn.Module):
    """The trainable stages and the head of a model, as one module: the frozen stages' output -> logits.

    What training runs on cached (or freshly computed) frozen outputs, and what DistributedDataParallel wraps: the
    frozen stages are never part of it. It holds the model's own modules, so training it trains the model.
    """

    def __init__(self, model: AttributeClassifier, precision: str):
        super().__init__()
        self.stages = model.trainable_part
        self.head = model.head
        self.head_logits = model.head_logits  # the head with the model's input scaling (a method, not a module)
        self.precision = precision

    def features(self, frozen: torch.Tensor) -> torch.Tensor:
        """What the head sees: the trainable stages' output (under the backbone's autocast), in float32."""
        if not len(self.stages):
            return frozen.float()
        with backbone_autocast(self.precision, frozen.device):
            return self.stages(frozen.contiguous(memory_format=torch.channels_last)).float()

    def forward(self, frozen: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.features(frozen))


def build_model(
    num_attributes: int, backbone: str = "resnet18", weights: str = "auto", trainable_stages: int = 0
) -> tuple[AttributeClassifier, str]:
    """The model and where its backbone weights came from (`imagenet:...`, `file:...` or `random`)."""
    network, width, origin = build_backbone(backbone, weights)
    stages = BACKBONES[backbone].stages(network)
    return AttributeClassifier(network, stages, width, num_attributes, trainable_stages), origin


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
        raise CheckpointError(f"{path}: weights do not fit a {checkpoint['backbone']} model "
                              f"({state_dict_mismatch(error)})") from None
    return model.eval()
