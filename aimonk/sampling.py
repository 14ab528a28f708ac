"""SAMPLERS: which training rows each epoch visits, in which order and orientation, in batches.

An epoch plan is a list of batches of `(row, flip)`, derived from (seed, epoch) and the training labels alone.
Cached and uncached training, and a resumed run, all follow the same plan: that is what makes their loss
histories identical. A new sampler must keep this rule: no state outside its arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from aimonk.labels import LabelTable
from aimonk.registry import Registry

if TYPE_CHECKING:
    from aimonk.config import TrainConfig

Plan = list[list[tuple[int, bool]]]
SAMPLERS: Registry[Callable[[LabelTable, TrainConfig, int], Plan]] = Registry("sampler")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one epoch: a function of (seed, epoch) only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_plan(n: int, batch_size: int, seed: int, epoch: int) -> Plan:
    """Batches of (row, flip) for one epoch: a shuffled order and one random flip per image."""
    generator = epoch_generator(seed, epoch)
    order = torch.randperm(n, generator=generator).tolist()
    flips = (torch.rand(n, generator=generator) < 0.5).tolist()
    pairs = [(row, flips[row]) for row in order]
    return [pairs[start : start + batch_size] for start in range(0, n, batch_size)]


@SAMPLERS.register("uniform")
def uniform(table: LabelTable, config: TrainConfig, epoch: int) -> Plan:
    """every training image once per epoch, shuffled, with a random horizontal flip (the reference)"""
    return epoch_plan(len(table), config.batch_size, config.seed, epoch)
