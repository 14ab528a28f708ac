"""SAMPLERS: how often each training image is visited per epoch; epoch plans of (row, flip) batches from that.

A sampler returns every training image's expected visits per epoch (1 for all: the reference). An epoch plan draws
whole visits from them (stochastic rounding), shuffles, and picks one horizontal flip per visit, from (seed, epoch)
alone. Cached and uncached training, and a resumed run, all follow the same plan: that is what makes their loss
histories identical. A new sampler must keep this rule: its visits depend on the training labels and the config
only. Full-batch solvers weight each image by its visits instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from aimonk.config import EntryOption, TrainConfig, positive
from aimonk.data.labels import LabelTable
from aimonk.registry import SAMPLERS

Plan = list[list[tuple[int, bool]]]


@SAMPLERS.register("uniform")
def uniform(table: LabelTable, config: TrainConfig) -> np.ndarray:
    """every training image once per epoch (the reference)"""
    return np.ones(len(table))


@SAMPLERS.register("repeat_factor", options=[EntryOption(
    "repeat_threshold", 0.3, "repeat_factor: attributes positive in fewer than this share of their known labels get "
    "their images repeated", positive)])
def repeat_factor(table: LabelTable, config: TrainConfig) -> np.ndarray:
    """images with rare known positives visited more often (LVIS repeat-factor sampling, --repeat-threshold)"""
    # An attribute positive in a share f of its known labels gives its positive images max(1, sqrt(t / f)) visits.
    share = table.positives().sum(axis=0) / np.maximum(table.known.sum(axis=0), 1)
    factors = np.sqrt(config.repeat_threshold / np.maximum(share, 1e-12))
    return np.maximum(1.0, (table.positives() * factors).max(axis=1, initial=0.0))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one epoch: a function of (seed, epoch) only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_plan(visits: np.ndarray, batch_size: int, seed: int, epoch: int) -> Plan:
    """Batches of (row, flip) for one epoch: each row visited `visits` times (rounded at random), shuffled."""
    generator = epoch_generator(seed, epoch)
    whole = np.floor(visits).astype(np.int64)
    if not np.array_equal(whole, visits):  # only then a draw, so whole visits give the reference's exact plan
        whole += (torch.rand(len(visits), generator=generator, dtype=torch.float64).numpy() < visits - whole)
    rows = np.repeat(np.arange(len(visits)), whole).tolist()
    order = torch.randperm(len(rows), generator=generator).tolist()
    flips = (torch.rand(len(rows), generator=generator) < 0.5).tolist()
    pairs = [(rows[i], flips[i]) for i in order]
    return [pairs[start : start + batch_size] for start in range(0, len(pairs), batch_size)]


def cached_batches(features: torch.Tensor, rows: np.ndarray, targets: np.ndarray, known: np.ndarray, plan: Plan,
                   device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(features on `device`, targets, known) per planned batch of (row, flip): `features[i, flip]` is image
    `rows[row]` as is or flipped; `targets` and `known` are indexed by image. A planned batch may be empty (a
    process's share of a batch smaller than the job)."""
    for batch in plan:
        picked = rows[[row for row, _ in batch]]
        flips = torch.tensor([int(flip) for _, flip in batch], dtype=torch.long)
        yield (features[torch.as_tensor(picked, dtype=torch.long), flips].to(device),
               torch.from_numpy(targets[picked]), torch.from_numpy(known[picked]))
