"""A diverged run (weights or loss not finite, an update too large for a float) fails saying so, for adam and lbfgs,
and writes neither a model nor a state to resume from; a large learning rate that stays finite trains as before."""

from __future__ import annotations

import math
import re

import pytest
import torch
from helpers import train_cached, train_config

import aimonk.train.lbfgs
from aimonk.errors import AimonkError
from aimonk.io import MODEL_FILE, STATE_FILE
from aimonk.model.classifier import build_model
from aimonk.train.training import refuse_diverged


@pytest.mark.parametrize(("lr", "what"), [
    (1e37, "the loss is not finite after 4 iterations"),  # weights near the float limit: infinite logits
    (1e38, "an update of the weights overflows a float after 0 iterations"),  # lr over Adam's bias correction
])
def test_adam_with_a_learning_rate_that_diverges_fails_saying_so_and_writes_nothing(dataset_32px, tmp_path, lr, what):
    config = train_config(dataset_32px, tmp_path / "cache", out_dir=str(tmp_path / "out"), lr=lr, epochs=2)
    with pytest.raises(AimonkError, match=f"^training diverged: {re.escape(what)}; lower --lr$"):
        train_cached(config)
    assert list((tmp_path / "out").iterdir()) == []  # no model, and no state that --resume would go on from


def test_adam_with_a_large_learning_rate_that_stays_finite_trains_as_before(dataset_32px, tmp_path):
    result = train_cached(train_config(dataset_32px, tmp_path / "cache", out_dir=str(tmp_path / "out"), lr=10.0))
    assert all(math.isfinite(loss) for loss in result.history)
    assert (tmp_path / "out" / MODEL_FILE).exists() and (tmp_path / "out" / STATE_FILE).exists()


def test_lbfgs_ending_with_weights_that_are_not_finite_fails_saying_so_and_writes_nothing(dataset_32px, tmp_path,
                                                                                          monkeypatch):
    def not_finite(rows, targets, known, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        weight = torch.full((1, known.shape[1], rows.shape[1]), math.nan, dtype=torch.float64)
        return weight, torch.zeros(1, known.shape[1], dtype=torch.float64)

    monkeypatch.setattr(aimonk.train.lbfgs, "fit_linear_heads", not_finite)
    config = train_config(dataset_32px, tmp_path / "cache", out_dir=str(tmp_path / "out"), solver="lbfgs",
                          standardise_features=True)  # the recommended recipe
    # the fit stopped at once; lbfgs still records the loss of what it returned: 1 iteration
    with pytest.raises(AimonkError, match=r"^training diverged: the head's weights are not finite after 1 "
                                          r"iterations?; try --solver adam, or other --weights$"):
        train_cached(config)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_model(2, weights="none", trainable_stages=1)[0]


@pytest.mark.parametrize(("spoilt", "named"), [
    (["head.weight"], "the head's weights are"),
    (["backbone.layer4.1.bn2.running_var"], "the fine-tuned stages' weights are"),
    (["backbone.layer4.0.conv1.weight", "head.bias"], "the head's and the fine-tuned stages' weights are"),
])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_the_part_of_the_model_that_is_not_finite_is_named(model, spoilt, named, value):
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    try:
        with torch.no_grad():
            for name in spoilt:
                model.state_dict(keep_vars=True)[name].view(-1)[1] = value
        with pytest.raises(AimonkError, match=f"^training diverged: {re.escape(named)} not finite after 7 "
                                              "iterations; lower --lr$"):
            refuse_diverged(model, [0.5] * 7, "lower --lr")
    finally:
        model.load_state_dict(state)


@pytest.mark.parametrize(("history", "diverged"), [([], False), ([0.7, 0.6], False), ([0.7, 1e30], False),
                                                   ([0.7, math.nan], True), ([0.7, math.inf], True)])
def test_finite_weights_pass_unless_the_last_loss_is_not_finite(model, history, diverged):
    if diverged:
        with pytest.raises(AimonkError, match="^training diverged: the loss is not finite after 2 iterations; hint$"):
            refuse_diverged(model, history, "hint")
    else:
        refuse_diverged(model, history, "hint")  # frozen weights and integer counters are not looked at
