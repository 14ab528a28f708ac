"""Explanations: a class-activation map peaks where an attribute was drawn, and is exact where the head is linear
on the pooled map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from aimonk.data.images import Preprocessing
from aimonk.evaluate.explain import activation_maps, upsampled
from aimonk.model.classifier import AttributeClassifier, build_model


def yellow_detector(stride: int) -> AttributeClassifier:
    """Channel 0 fires on yellow pixels (red and green high, blue low), channel 1 on blue; attribute 0 = yellow."""
    conv = nn.Conv2d(3, 2, kernel_size=stride, stride=stride)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, :, :, :] = torch.tensor([1.0, 1.0, -2.0])[:, None, None] / stride**2
        conv.weight[1, :, :, :] = torch.tensor([-1.0, -1.0, 2.0])[:, None, None] / stride**2
        conv.bias.zero_()
    backbone = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = AttributeClassifier(backbone, [backbone], 2, 1)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[1.0, 0.0]]))
        model.head.bias.zero_()
    return model


@pytest.mark.parametrize("stride", [1, 4])
def test_the_map_of_an_attribute_peaks_where_it_was_drawn(stride: int):
    picture = np.zeros((64, 64, 3), dtype=np.uint8)
    picture[..., 2] = 200  # blue
    picture[8:20, 40:52] = (250, 230, 20)  # a yellow square, top right
    image = Preprocessing(64)(Image.fromarray(picture))[None]
    maps, logits, exact = activation_maps(yellow_detector(stride), image)
    assert exact and maps.shape == (1, 1, 64 // stride, 64 // stride)
    heat = upsampled(maps[0, 0].numpy(), (64, 64))
    row, column = np.unravel_index(heat.argmax(), heat.shape)
    assert 8 <= row < 20 and 40 <= column < 52
    assert heat[40:, :30].max() < 0.1  # nothing where there is no yellow


def test_a_linear_head_on_pooled_features_gives_the_exact_map_and_other_heads_grad_cam():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    resnet, _ = build_model(3, "resnet18", "none")
    maps, logits, exact = activation_maps(resnet, images)
    assert exact and torch.allclose(maps.mean((2, 3)) + resnet.head.bias, logits, atol=1e-4)
    mobilenet, _ = build_model(3, "mobilenet_v3_small", "none")  # a hidden layer between pooling and head
    maps, _, exact = activation_maps(mobilenet, images)
    assert not exact and maps.shape == (2, 3, 2, 2) and (maps >= 0).all()
