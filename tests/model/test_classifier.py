"""Model builder: backbone weights options, frozen backbone semantics, recorded weights origin, fine-tuning depth,
and the head's standardised input folded away."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models._api as torchvision_api
from torchvision import models

from aimonk.errors import AimonkError, WeightsUnavailableError
from aimonk.model.classifier import build_model


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty torch cache and a download that fails the way it does without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision_api, "load_state_dict_from_url", no_network)


def test_head_has_one_output_per_attribute_and_only_the_head_trains():
    model, origin = build_model(7, weights="none")
    assert origin == "random"
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == {"head.weight", "head.bias"}


def test_frozen_backbone_keeps_batchnorm_statistics_in_train_mode():
    model, _ = build_model(4, weights="none")
    before = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k}
    model.train()
    assert not model.backbone.training and model.head.training
    model(torch.randn(4, 3, 64, 64))
    after = model.backbone.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in before.items())


def test_unfrozen_backbone_trains():
    model, _ = build_model(4, weights="none", trainable_stages=5)
    model.train()
    assert model.backbone.training
    assert all(parameter.requires_grad for parameter in model.backbone.parameters())


def test_imagenet_weights_required_but_unavailable_is_a_clear_error(offline):
    with pytest.raises(WeightsUnavailableError, match="--weights none"):
        build_model(4, weights="imagenet")


def test_auto_without_imagenet_weights_warns_and_uses_random_init(offline):
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        _, origin = build_model(4, weights="auto")
    assert origin == "random"


def test_imagenet_weights_are_taken_from_the_torch_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = models.resnet18()
    cached = tmp_path / "hub" / "checkpoints" / Path(models.ResNet18_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)

    model, origin = build_model(4, weights="imagenet")
    assert origin == "imagenet:ResNet18_Weights.IMAGENET1K_V1"
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)


def test_weights_from_a_local_state_dict_file(tmp_path):
    reference = models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model, origin = build_model(4, weights=str(path))
    assert origin.startswith("file:resnet18.pth:sha256:")
    assert torch.equal(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_weights_file_that_does_not_fit_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(models.resnet34().state_dict(), path)
    with pytest.raises(WeightsUnavailableError, match="do not fit resnet18"):
        build_model(4, weights=str(path))


def test_unknown_backbone_is_refused():
    with pytest.raises(AimonkError, match="unknown backbone .vgg."):
        build_model(4, backbone="vgg", weights="none")


def test_in_train_mode_only_the_trainable_stages_update_their_batchnorm_statistics():
    model, _ = build_model(4, weights="none", trainable_stages=1)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k}
    model.train()
    model(torch.randn(4, 3, 64, 64))
    after = model.backbone.state_dict()
    changed = {key for key, value in before.items() if not torch.equal(value, after[key])}
    assert changed and all(key.startswith("layer4.") for key in changed)


def test_a_random_backbone_is_the_same_whatever_the_seed_and_the_head_is_not():
    torch.manual_seed(1)
    first, _ = build_model(2, weights="none")
    torch.manual_seed(2)
    second, _ = build_model(2, weights="none")
    assert all(torch.equal(a, b) for a, b in zip(first.backbone.state_dict().values(),
                                                  second.backbone.state_dict().values(), strict=True))
    assert not torch.equal(first.head.weight, second.head.weight)


def test_a_depth_beyond_the_backbone_is_refused_naming_the_number_of_stages():
    with pytest.raises(AimonkError, match="between 0 and 5"):
        build_model(2, weights="none", trainable_stages=6)


def test_standardised_head_folds_into_a_plain_linear_head_with_the_same_outputs():
    model, _ = build_model(3, weights="none")
    features = torch.randn(50, 512) * torch.linspace(0.01, 10, 512) + 4
    features[:, 7] = 2.0  # a dimension without spread keeps scale 1
    model.standardise_head_input(features)
    assert model.input_scaling[1][7] == 1
    before = model.head_logits(features)
    model.fold_input_scaling()
    assert model.input_scaling is None
    assert torch.allclose(model.head(features), before, atol=1e-4)


def test_standardised_head_input_is_what_scikit_learns_standard_scaler_gives():
    from sklearn.preprocessing import StandardScaler

    model, _ = build_model(3, weights="none")
    features = (torch.randn(40, 512, dtype=torch.float64) * torch.linspace(0.01, 10, 512) + 4)
    features[:, 7] = 2.0
    model.double().standardise_head_input(features)
    mean, scale = model.input_scaling
    assert torch.allclose((features - mean) / scale, torch.from_numpy(StandardScaler().fit_transform(features.numpy())))
