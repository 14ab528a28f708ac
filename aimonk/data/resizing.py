"""RESIZES: how a picture of any shape becomes the square the backbone reads. `squash` (stretch the whole picture,
the reference) or `crop` (keep the shape, cut the central square, as torchvision's ImageNet evaluation does)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from aimonk.registry import RESIZES

CROP_SHARE = 224 / 256  # torchvision's ImageNet evaluation: the shorter side to 256 pixels, the central 224 kept
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Resize:
    """`fit(image, size)`: the square of `size` pixels; `cover(size)`: the shorter side it needs decoded (large
    JPEGs decode at a reduced scale that still covers it); `seen(width, height)`: the box of a picture the square
    shows."""

    fit: Callable[[Image.Image, int], Image.Image]
    cover: Callable[[int], int]
    seen: Callable[[int, int], Box]


def _squash(image: Image.Image, size: int) -> Image.Image:
    return image.resize((size, size), Image.Resampling.BILINEAR)


def _centre_crop(image: Image.Image, size: int) -> Image.Image:
    """As torchvision's Resize(cover) then CenterCrop(size) on a PIL image."""
    shorter = _crop_cover(size)
    width, height = image.size
    scaled = (shorter, int(shorter * height / width)) if width <= height else (int(shorter * width / height), shorter)
    image = image.resize(scaled, Image.Resampling.BILINEAR)
    left, top = round((scaled[0] - size) / 2), round((scaled[1] - size) / 2)
    return image.crop((left, top, left + size, top + size))


def _crop_cover(size: int) -> int:
    return int(size / CROP_SHARE)


def _central_square(width: int, height: int) -> Box:
    side = round(min(width, height) * CROP_SHARE)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


RESIZES.add("squash", Resize(_squash, lambda size: size, lambda width, height: (0, 0, width, height)),
            "the whole picture stretched to a square, whatever its shape")
RESIZES.add("crop", Resize(_centre_crop, _crop_cover, _central_square), "the shape kept: the shorter side resized "
            "to 256/224 of the image size, the central square kept (torchvision's ImageNet evaluation)")
