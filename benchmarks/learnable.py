"""A learnable benchmark made from real photos: attributes visible by construction, drawn onto the photos of a
dataset (by default ../shared/aimonk-dataset), with about 9 % NA labels. The real Aimonk labels carry no visual
signal, so model choices are compared on this set instead.

    python benchmarks/learnable.py --source ../shared/aimonk-dataset --out-dir benchmarks/data/learnable

Attributes, independent of each other (the true value is drawn even where the label is written NA):
- frame: a coloured border around the picture (obvious, 50 %)
- warm: a warm colour cast, red up and blue down by 12 % (subtle, global, 45 %)
- grey: saturation cut to 40 % (subtle, global, 35 %)
- soft: a Gaussian blur of 1.5 px at 224 px (subtle, global, 30 %)
- stamp: a small red disc, 7 % of the side, somewhere in the picture (rare and small, 8 %)

The photos are cropped at random (60-100 % of the side) and resized to 224 px, so one photo gives different
images. With `--keep-aspect` each side is cropped independently (60-100 %) and the shorter side resized to 256 px,
so the images keep uneven shapes, as real photos do; the marks are then drawn where a centre crop keeps them (the
stamp inside the central square that `--resize crop` keeps, the frame wider by what that crop cuts off the
shorter side), so the set compares resizes, not whether a mark survives. Nothing here is committed: the output
folder is ignored by git.

    python benchmarks/learnable.py --keep-aspect --out-dir benchmarks/data/learnable_aspect
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from aimonk.data.demo import format_label_line
from aimonk.data.images import image_files, open_rgb

ATTRIBUTES = ("frame", "warm", "grey", "soft", "stamp")
PREVALENCE = (0.50, 0.45, 0.35, 0.30, 0.08)
NA_RATE = 0.09
SIZE = 224
ASPECT_SHORTER_SIDE = 256  # what `--resize crop` resizes the shorter side to before cutting the central 224


def crop(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    side = int(min(photo.size) * rng.uniform(0.6, 1.0))
    left = int(rng.integers(0, photo.width - side + 1))
    top = int(rng.integers(0, photo.height - side + 1))
    return photo.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)


def crop_keeping_aspect(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    width, height = (max(1, int(side * rng.uniform(0.6, 1.0))) for side in photo.size)
    left = int(rng.integers(0, photo.width - width + 1))
    top = int(rng.integers(0, photo.height - height + 1))
    scale = ASPECT_SHORTER_SIDE / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return photo.crop((left, top, left + width, top + height)).resize(size, Image.Resampling.BILINEAR)


def draw(photo: Image.Image, truth: np.ndarray, rng: np.random.Generator, margin: float = 0.0) -> Image.Image:
    """The photo with the attributes whose truth is 1 made visible (global changes first, marks last). `margin`:
    the share of the shorter side a centre crop cuts off each edge, kept clear of the stamp and added to the
    frame."""
    frame, warm, grey, soft, stamp = (bool(value) for value in truth)
    image = photo
    shorter = min(image.size)
    if soft:
        image = image.filter(ImageFilter.GaussianBlur(1.5 * shorter / SIZE))
    if grey:
        image = ImageEnhance.Color(image).enhance(0.4)
    if warm:
        pixels = np.asarray(image, dtype=np.float32) * np.array([1.12, 1.0, 0.88])
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    canvas = ImageDraw.Draw(image)
    if frame:
        width = int(shorter * 0.04) + int(shorter * margin)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        canvas.rectangle((0, 0, image.width - 1, image.height - 1), outline=colour, width=width)
    if stamp:
        radius, side = shorter * 0.035, shorter * (1 - 2 * margin)  # the central square a centre crop keeps
        x, y = rng.uniform(radius + 12, side - radius - 12, size=2) + (np.array(image.size) - side) / 2
        canvas.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(220, 20, 30))
    return image


def make(source: Path, out_dir: Path, n_images: int, seed: int, keep_aspect: bool = False) -> Path:
    photos = image_files([source / "images"])
    rng = np.random.default_rng(seed)
    truth = (rng.random((n_images, len(ATTRIBUTES))) < np.array(PREVALENCE)).astype(int)
    missing = rng.random(truth.shape) < NA_RATE
    missing[missing.all(axis=1), 0] = False  # no image without any known label
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    lines = ["filename " + " ".join(ATTRIBUTES)]
    cut, size, margin = ((crop_keeping_aspect, ASPECT_SHORTER_SIDE, (1 - SIZE / ASPECT_SHORTER_SIDE) / 2)
                         if keep_aspect else (crop, SIZE, 0.0))
    for index in range(n_images):
        photo = open_rgb(photos[int(rng.integers(len(photos)))], size)
        name = f"img_{index}.jpg"
        draw(cut(photo, rng), truth[index], rng, margin).save(out_dir / "images" / name, quality=90)
        lines.append(format_label_line(name, truth[index], missing[index]))
    labels = out_dir / "labels.txt"
    labels.write_text("\n".join(lines) + "\n")
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/aimonk-dataset")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "data" / "learnable")
    parser.add_argument("--n-images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-aspect", action="store_true", help="uneven shapes, the shorter side 256 px")
    args = parser.parse_args()
    labels = make(args.source.resolve(), args.out_dir, args.n_images, args.seed, args.keep_aspect)
    print(f"wrote {args.n_images} images and {labels}")


if __name__ == "__main__":
    main()
