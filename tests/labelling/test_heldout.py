"""Training on some labels and scoring images held out of them."""

from __future__ import annotations

from helpers import label_table

from aimonk.labelling.heldout import with_unlabelled


def test_held_out_images_are_added_with_every_label_na():
    table = with_unlabelled(label_table([[1, 0], [0, 1]]), ["new.jpg"])
    assert table.filenames[-1] == "new.jpg" and not table.known[-1].any() and table.known[:2].all()
