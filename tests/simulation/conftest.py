"""Fixtures of the simulation tests."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import label_table

from aimonk.simulation.corruption import corrupt
from aimonk.simulation.heldout import write_labels


@pytest.fixture
def corrupted_demo(tmp_path):
    """`corrupt(original, out, **options)` of a generated labels file of 200 images and 3 attributes, 10 % NA:
    (the original file's path, the Corrupted)."""
    def make(**options):
        rng = np.random.default_rng(0)
        table = label_table(rng.random((200, 3)) < 0.4, rng.random((200, 3)) > 0.1)
        original = write_labels(table, tmp_path / "labels.txt")
        return original, corrupt(original, tmp_path / "out" / "labels.txt", **options)
    return make
