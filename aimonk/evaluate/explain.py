"""Where in an image the model sees each attribute: class-activation maps over the backbone's last feature map.

When the head is linear on the globally averaged last feature map (ResNet, EfficientNet, Lite0; frozen or
fine-tuned), the head's weights applied to that map at each position are the exact class-activation map (Zhou et
al. 2016): its spatial mean plus the bias *is* the logit, and this is checked on every call. Otherwise (layers
between the pooling and the head, as ConvNeXt's LayerNorm or MobileNet's hidden layer) the map is Grad-CAM
(Selvaraju et al. 2017): the feature map weighted by the logit's mean gradient, positive evidence only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from aimonk.data.images import open_rgb
from aimonk.errors import AimonkError
from aimonk.evaluate.prediction import Predictor
from aimonk.io import atomic_file
from aimonk.model.classifier import AttributeClassifier


@dataclass
class Explanation:
    """One image: each attribute's probability and its map (attributes, height, width) over the last feature map."""

    path: Path
    probabilities: np.ndarray
    maps: np.ndarray
    exact: bool  # a class-activation map equal to the logit (True), or Grad-CAM


def global_pool(model: AttributeClassifier) -> nn.Module:
    """The backbone's last global average pooling: its input is the last feature map."""
    pools = [m for m in model.backbone.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not pools:
        raise AimonkError(f"{type(model.backbone).__name__}: no global average pooling to take a feature map from")
    return pools[-1]


def activation_maps(model: AttributeClassifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(maps (batch, attributes, h, w), logits (batch, attributes), exact) for preprocessed images in fp32."""
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        captured.append(inputs[0].detach().requires_grad_(True))  # a leaf: the logits' gradient flows to it
        return (captured[-1],)

    hook = global_pool(model).register_forward_pre_hook(capture)
    try:
        model.eval()
        with torch.enable_grad():
            logits = model(images.float())
            feature_map = captured[-1]
            weight, bias = model.head.weight, model.head.bias
            if model.input_scaling is not None:
                raise AimonkError("explain a saved model: its standardisation is folded into the head")
            exact = weight.shape[1] == feature_map.shape[1]  # a hidden layer after the pooling changes the width
            if exact:
                cam = torch.einsum("ac,bchw->bahw", weight, feature_map)
                exact = torch.allclose(cam.mean((2, 3)) + bias, logits, rtol=1e-4, atol=1e-4)
            if not exact:
                gradients = [torch.autograd.grad(logits[:, j].sum(), feature_map, retain_graph=True)[0]
                             for j in range(logits.shape[1])]
                cam = F.relu(torch.stack([(g.mean((2, 3), keepdim=True) * feature_map).sum(1) for g in gradients], 1))
    finally:
        hook.remove()
    return cam.detach(), logits.detach(), bool(exact)


def explain(predictor: Predictor, paths: Sequence[Path]) -> Iterator[Explanation]:
    """An explanation per readable image, in order; an unreadable one raises ImageReadError naming it."""
    for path in paths:
        image = predictor.preprocessing.load(path)[None]
        maps, logits, exact = activation_maps(predictor.model, image)
        probabilities = predictor.rule.probabilities(logits.double().numpy())[0]
        yield Explanation(Path(path), probabilities, maps[0].numpy(), exact)


def upsampled(activation_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map resized (bilinear) to an image's (width, height), scaled to [0, 1] over its own range."""
    tensor = torch.from_numpy(np.ascontiguousarray(activation_map, dtype=np.float32))[None, None]
    resized = F.interpolate(tensor, size=(size[1], size[0]), mode="bilinear", align_corners=False)[0, 0].numpy()
    spread = resized.max() - resized.min()
    return (resized - resized.min()) / spread if spread > 0 else np.zeros_like(resized)


def output_name(path: Path, attribute: str) -> Path:
    """`out/<path as given, without ../ or a root>__<attribute>.png`: one file per image and attribute."""
    parts = [part for part in path.parts if part not in ("..", ".", path.anchor)]
    relative = Path(*parts) if parts else Path(path.name)
    return relative.with_name(f"{relative.stem}__{attribute}.png")


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """`image` with a map in [0, 1] of its size laid over it in the inferno colour map."""
    from matplotlib import colormaps  # explain only; predict never loads matplotlib

    colours = (colormaps["inferno"](heat)[..., :3] * 255).astype(np.uint8)
    return Image.blend(image.convert("RGB"), Image.fromarray(colours), alpha)


def write_maps(predictor: Predictor, path: Path, attributes: Sequence[str], out_dir: Path, reads: set[Path]) -> bool:
    """Write the map of each attribute of one image over it, `out_dir/<image path>__<attribute>.png`, each file
    atomically; whether the maps are exact (a linear head on pooled features) or Grad-CAM. Refused if a map would
    replace a file of `reads` (resolved paths); an unreadable image is an ImageReadError."""
    targets = {name: out_dir / output_name(path, name) for name in attributes}
    if any(target.resolve() in reads for target in targets.values()):
        raise AimonkError(f"--out {out_dir}: the maps of {path} would replace a file this command reads")
    explanation = next(explain(predictor, [path]))
    image = predictor.preprocessing.seen(open_rgb(path))
    for name, target in targets.items():
        with atomic_file(target) as file:
            heat = upsampled(explanation.maps[predictor.attributes.index(name)], image.size)
            overlay(image, heat).save(file, format="PNG")
    return explanation.exact
