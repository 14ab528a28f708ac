"""audit on out-of-fold probabilities whose truth is known: planted flips lead the ranking, NA entries are never
flagged, an attribute not better than chance is left alone (docs/testing.md)."""

from __future__ import annotations

import numpy as np
from helpers import planted_flips

from aimonk.labelling.audit import audit, audit_summary


def test_planted_flips_lead_the_audit_and_na_entries_are_never_flagged():
    oof, flipped = planted_flips()
    # NA entries whose probability contradicts whatever they would be: still never flagged
    oof.probabilities[~oof.known] = np.where(oof.targets[~oof.known] > 0, 0.001, 0.999)
    suspects = audit(oof)
    rows = {name: i for i, name in enumerate(oof.images)}
    where = [(rows[image], oof.attributes.index(attribute)) for image, attribute in
             zip(suspects["image"], suspects["attribute"], strict=True)]
    assert all(oof.known[i, j] for i, j in where)
    top = suspects.sort_values("score").head(2 * int(flipped.sum()))
    found = sum(flipped[rows[image], oof.attributes.index(attribute)]
                for image, attribute in zip(top["image"], top["attribute"], strict=True))
    assert found >= 0.8 * flipped.sum(), (found, flipped.sum())
    assert (suspects.groupby("attribute")["rank"].min() == 1).all()
    assert list(suspects.columns) == ["image", "attribute", "given", "probability", "rank", "score"]


def test_an_attribute_not_better_than_chance_is_not_audited_and_the_summary_says_why():
    oof, _ = planted_flips()
    oof.better_than_chance[1] = False
    suspects = audit(oof)
    assert "Attr2" not in set(suspects["attribute"]) and {"Attr1", "Attr3"} <= set(suspects["attribute"])
    assert "Attr2: not audited" in "\n".join(audit_summary(oof, suspects))
    oof.better_than_chance[:] = False
    assert audit(oof).empty
