"""Out-of-fold probabilities on the demo images (random backbone, 32 px) with 5 % of the known labels of the three
large attributes flipped: the cross-fitted heads find the flips (docs/testing.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT

from aimonk.config import TrainConfig
from aimonk.data.labels import read_labels
from aimonk.errors import AimonkError
from aimonk.labelling.audit import audit
from aimonk.labelling.complete import complete
from aimonk.labelling.crossfit import out_of_fold

pytestmark = pytest.mark.slow  # features of 400 images and 5 cross-fitted heads: seconds


def quick(tmp_path: Path, **settings) -> TrainConfig:  # noqa: ANN003
    return TrainConfig.from_recipe("recommended", weights="none", image_size=32, workers=0, precision="fp32",
                                   progress=False, cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path), **settings)


@pytest.fixture(scope="module")
def flipped(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """(out-of-fold of the demo labels with flips, the flipped entries)"""
    folder = tmp_path_factory.mktemp("flipped")
    table = read_labels(ROOT / "labels.txt")
    rng = np.random.default_rng(0)
    flips = table.known & (rng.random(table.known.shape) < 0.05)
    flips[:, 3] = False  # the small square: a random backbone does not see it
    lines = [" ".join([name, *("NA" if not k else str(int(v) ^ int(f)) for v, k, f in zip(values, known, flip,
                                                                                        strict=True))])
             for name, values, known, flip in zip(table.filenames, table.targets, table.known, flips, strict=True)]
    (folder / "labels.txt").write_text("\n".join(lines) + "\n")
    return out_of_fold(folder / "labels.txt", ROOT / "images", quick(folder)), flips


def test_every_entry_gets_a_probability_and_the_large_attributes_beat_chance(flipped):
    oof, _ = flipped
    assert oof.probabilities.shape == (400, 4) and ((oof.probabilities > 0) & (oof.probabilities < 1)).all()
    assert oof.better_than_chance[:3].all()
    assert sorted(np.unique(oof.folds)) == [0, 1, 2, 3, 4]


def test_the_audit_finds_most_planted_flips_in_its_top_ranks(flipped):
    oof, flips = flipped
    suspects = audit(oof)
    large = suspects[suspects["attribute"] != "Attr4"].sort_values("score").head(2 * int(flips.sum()))
    rows = {name: i for i, name in enumerate(oof.images)}
    found = sum(flips[rows[image], oof.attributes.index(attribute)]
                for image, attribute in zip(large["image"], large["attribute"], strict=True))
    assert found >= 0.6 * flips.sum(), (found, flips.sum())


def test_fills_are_estimated_against_the_given_labels(flipped):
    # With 5 % of the labels flipped, the known labels cannot show a precision of 0.99: nothing is filled at 0.99
    oof, _ = flipped
    rules = complete(oof, 0.99).rules
    assert (rules.loc[rules["attribute"] != "Attr4", "filled"] == 0).all()


def test_only_the_lbfgs_head_on_frozen_features_is_cross_fitted(tmp_path: Path):
    with pytest.raises(AimonkError, match="--solver lbfgs"):
        out_of_fold(ROOT / "labels.txt", ROOT / "images", quick(tmp_path, solver="adam"))
    with pytest.raises(AimonkError, match="too few for 5 folds"):
        (tmp_path / "few.txt").write_text("image_0.jpg 1\nimage_1.jpg 0\n")
        out_of_fold(tmp_path / "few.txt", ROOT / "images", quick(tmp_path))
