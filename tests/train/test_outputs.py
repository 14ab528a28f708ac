"""What a training run writes beside its model: the loss curve."""

from __future__ import annotations

from aimonk.train.outputs import loss_curve_figure


def test_loss_curve_axes_and_title():
    axes = loss_curve_figure([0.9, 0.7, 0.6]).axes[0]
    assert axes.get_xlabel() == "iteration_number"
    assert axes.get_ylabel() == "training_loss"
    assert axes.get_title() == "Aimonk_multilabel_problem"
    assert list(axes.lines[0].get_xdata()) == [1, 2, 3]
