"""How the minibatch loop steps: the optimizer's parameter groups and LR_SCHEDULES (the learning rate over the
iterations, as a factor of the configured one)."""

from __future__ import annotations

import math

from aimonk.config import TrainConfig
from aimonk.model.classifier import AttributeClassifier
from aimonk.registry import LR_SCHEDULES


@LR_SCHEDULES.register("constant")
def constant(step: int, total: int, warmup: int) -> float:
    """the same learning rate throughout (after any warm-up; the reference)"""
    return min(1.0, (step + 1) / warmup) if warmup else 1.0


@LR_SCHEDULES.register("cosine")
def cosine(step: int, total: int, warmup: int) -> float:
    """linear warm-up, then cosine decay to zero at the last iteration"""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def parameter_groups(model: AttributeClassifier, config: TrainConfig) -> list[dict]:
    """Head and trainable backbone stages (at lr x backbone_lr_factor); no weight decay on biases and norms."""
    groups = []
    for module, lr in ((model.head, config.lr), (model.trainable_part, config.lr * config.backbone_lr_factor)):
        parameters = list(module.parameters())
        for decay in (True, False):
            chosen = [p for p in parameters if (p.ndim > 1) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": lr, "base_lr": lr,
                               "weight_decay": config.weight_decay if decay else 0.0})
    return groups
