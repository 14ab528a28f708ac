"""A diverged run fails saying so: weights or a loss that are not finite (a learning rate too high, a loss that blew
up) are never saved, neither as the model nor as a state to resume from; nor is an update too large for a float."""

from __future__ import annotations

import math

import torch

from aimonk.errors import AimonkError
from aimonk.model.classifier import AttributeClassifier


def refuse_diverged(model: AttributeClassifier, history: list[float], hint: str) -> None:
    """Raise AimonkError naming the trained part (head, fine-tuned stages) that holds a value that is not finite, or
    the loss if the last one recorded is not finite (weights so large that a logit is infinite)."""
    parts = {"the head's" if name.startswith("head.") else "the fine-tuned stages'"
             for name, tensor in model.split_state()[0].items()
             if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())}
    if parts:
        named = " and ".join(sorted(parts, reverse=True)) + " weights are"  # the head first
    elif history and not math.isfinite(history[-1]):
        named = "the loss is"
    else:
        return
    raise AimonkError(f"training diverged: {named} not finite after {len(history)} iterations; {hint}")


def refuse_overflow(error: BaseException, iterations: int, hint: str) -> None:
    """Raise AimonkError if `error` is torch refusing an update step too large for a float (Adam's learning rate over
    its bias correction, early on): the run diverged at once."""
    if isinstance(error, RuntimeError) and "without overflow" in str(error):
        raise AimonkError(f"training diverged: an update of the weights overflows a float after {iterations} "
                          f"iterations; {hint}") from None
