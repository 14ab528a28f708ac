"""A small, deterministic synthetic demo dataset: `images/image_<i>.jpg` plus `labels.txt`.

Every attribute is a visible property of the picture (its true value is drawn even when the
label is written as `NA`):

- Attr1: warm (red/magenta) background, else cool (cyan/blue).
- Attr2: a large dark filled circle.
- Attr3: light stripes across the background.
- Attr4: a small bright yellow square with a dark outline.

Regenerate it with `aimonk demo [--out-dir .] [--n-images 400] [--seed 0] [--size 96]`.
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from aimonk.errors import AimonkError
from aimonk.io import atomic_file

ATTRIBUTE_PREVALENCE = (0.88, 0.81, 0.53, 0.08)
# Colour, circle and stripes cover much of the picture: even a randomly initialised backbone's features show them.
# The small square needs pretrained features.
LARGE_ATTRIBUTES = ("Attr1", "Attr2", "Attr3")
NA_RATE = 0.09
JPEG_QUALITY = 85
DEMO_IMAGE = re.compile(r"\.?image_\d+\.jpg(\..+\.tmp)?")  # the names the demo writes (and its temporaries)


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    """An RGB colour in 0..255 from HSV in 0..1 (hue wraps)."""
    return 255.0 * np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def _background(warm: bool, rng: np.random.Generator, size: int) -> np.ndarray:
    """A warm or cool base colour with a gentle random brightness gradient."""
    hue = rng.uniform(-0.04, 0.03) if warm else rng.uniform(0.52, 0.66)
    colour = _hsv(hue, rng.uniform(0.5, 0.8), rng.uniform(0.6, 0.85))
    ys, xs = np.mgrid[0:size, 0:size] / size - 0.5
    gx, gy = rng.uniform(-0.15, 0.15, size=2)
    shade = 1.0 + gx * xs + gy * ys
    return shade[..., None] * colour


def _add_stripes(image: np.ndarray, rng: np.random.Generator) -> None:
    """Blend light bands of random orientation, period and phase into `image`."""
    size = image.shape[0]
    ys, xs = np.mgrid[0:size, 0:size].astype(float)
    angle = rng.choice([0.0, 45.0, 90.0, 135.0]) + rng.uniform(-10.0, 10.0)
    theta = np.deg2rad(angle)
    along = xs * np.cos(theta) + ys * np.sin(theta)
    period = rng.uniform(0.09, 0.15) * size
    bands = ((along / period + rng.uniform(0.0, 1.0)) % 1.0) < 0.5
    image[bands] = 0.45 * image[bands] + 0.55 * 255.0


def _add_circle(image: np.ndarray, rng: np.random.Generator) -> None:
    """Paint a large dark filled circle fully inside `image`."""
    size = image.shape[0]
    radius = rng.uniform(0.22, 0.32) * size
    cx, cy = rng.uniform(radius, size - radius, size=2)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
    image[inside] = _hsv(rng.uniform(0.25, 0.45), rng.uniform(0.2, 0.5), rng.uniform(0.12, 0.28))


def _add_square(image: np.ndarray, rng: np.random.Generator) -> None:
    """Paint a small bright yellow square with a one-pixel dark outline."""
    size = image.shape[0]
    side = round(rng.uniform(0.10, 0.15) * size)
    x0, y0 = rng.integers(1, size - side - 1, size=2)
    image[y0 - 1 : y0 + side + 1, x0 - 1 : x0 + side + 1] = 20.0
    image[y0 : y0 + side, x0 : x0 + side] = _hsv(rng.uniform(0.14, 0.17), rng.uniform(0.9, 1.0), 1.0)


def draw_image(attrs: Sequence[int], rng: np.random.Generator, size: int = 96) -> Image.Image:
    """Draw one RGB picture showing the true attribute values `attrs` (four 0/1 values)."""
    warm, circle, stripes, square = (bool(a) for a in attrs)
    image = _background(warm, rng, size)
    if stripes:
        _add_stripes(image, rng)
    if circle:
        _add_circle(image, rng)
    if square:
        _add_square(image, rng)
    image += rng.normal(0.0, 4.0, size=image.shape)
    return Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8), mode="RGB")


def sample_labels(n_images: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """True 0/1 values (independent, at `ATTRIBUTE_PREVALENCE`) and an NA mask with no all-NA row."""
    prevalence = np.asarray(ATTRIBUTE_PREVALENCE)
    truth = (rng.random((n_images, prevalence.size)) < prevalence).astype(np.int64)
    missing = rng.random(truth.shape) < NA_RATE
    for row in range(n_images):
        while missing[row].all():
            missing[row] = rng.random(prevalence.size) < NA_RATE
    return truth, missing


def format_label_line(filename: str, truth: Sequence[int], missing: Sequence[bool]) -> str:
    """One `labels.txt` line, e.g. `image_0.jpg 1 NA 0 1`."""
    values = ("NA" if gone else str(int(value)) for value, gone in zip(truth, missing, strict=True))
    return " ".join([filename, *values])


def make_demo_dataset(out_dir: Path, n_images: int = 400, seed: int = 0, size: int = 96,
                      overwrite: bool = False) -> Path:
    """Write `out_dir/images/image_<i>.jpg` and `out_dir/labels.txt`, each file atomically; return the labels path.

    A folder that already holds a dataset (a labels.txt, or in images/ any file not named like a demo image) is
    refused unless `overwrite`: nothing of the user's is replaced unasked. Stale `image_*.jpg` files are removed, so
    the same seed always gives identical folders.
    """
    out_dir = Path(out_dir)
    image_dir, labels_path = out_dir / "images", out_dir / "labels.txt"
    theirs = [path.name for path in image_dir.iterdir() if not DEMO_IMAGE.fullmatch(path.name)] \
        if image_dir.is_dir() else []
    if not overwrite and (labels_path.exists() or theirs):
        found = labels_path if labels_path.exists() else image_dir / theirs[0]
        raise AimonkError(f"{out_dir}: already holds a dataset ({found}); choose an empty --out-dir, or replace "
                          "its labels.txt and demo images with --overwrite")
    for stale in image_dir.glob("*image_*.jpg*"):
        if DEMO_IMAGE.fullmatch(stale.name):
            stale.unlink()

    rng = np.random.default_rng(seed)
    truth, missing = sample_labels(n_images, rng)
    lines = []
    for index in range(n_images):
        filename = f"image_{index}.jpg"
        with atomic_file(image_dir / filename, durable=False) as file:
            draw_image(truth[index], rng, size).save(file, format="JPEG", quality=JPEG_QUALITY, optimize=False)
        lines.append(format_label_line(filename, truth[index], missing[index]))
    with atomic_file(labels_path) as file:
        file.write(("\n".join(lines) + "\n").encode("ascii"))
    return labels_path
