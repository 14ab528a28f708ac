"""Images on disk to tensors: finding image files, robust decoding, preprocessing (RESIZES: how a picture of any shape
becomes the square the backbone reads), the dataset, and the epoch plans that batch its images (SAMPLERS).

SAMPLERS: how often each training image is visited per epoch. A sampler returns every training image's expected visits
per epoch (1 for all: the reference). An epoch plan draws whole visits from them (stochastic rounding), shuffles, and
picks one horizontal flip per visit, from (seed, epoch) alone. Cached and uncached training, and a resumed run, all
follow the same plan: that is what makes their loss histories identical. A new sampler must keep this rule: its visits
depend on the training labels and the config only. Full-batch solvers weight each image by its visits instead.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from torch.utils.data import DataLoader, Dataset

from aimonk.config import EntryOption, TrainConfig, positive
from aimonk.data.labels import LabelTable
from aimonk.errors import AimonkError, ImageReadError
from aimonk.io import listed
from aimonk.registry import RESIZES, SAMPLERS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_IMAGE_PIXELS = 89_478_485  # PIL's own decompression-bomb limit, enforced as an error
ImageFile.LOAD_TRUNCATED_IMAGES = False


# RESIZES: `squash` (stretch the whole picture, the reference) or `crop` (keep the shape, cut the central square, as
# torchvision's ImageNet evaluation does).
CROP_SHARE = 224 / 256  # torchvision's ImageNet evaluation: the shorter side to 256 pixels, the central 224 kept
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Resize:
    """`fit(image, size, resample, share)`: the square of `size` pixels; `cover(size, share)`: the shorter side it
    needs decoded (large JPEGs decode at a reduced scale that still covers it); `seen(width, height, share)`: the box
    of a picture the square shows. `share`: the part of the shorter side a crop keeps."""

    fit: Callable[[Image.Image, int, Image.Resampling, float], Image.Image]
    cover: Callable[[int, float], int]
    seen: Callable[[int, int, float], Box]


def _squash(image: Image.Image, size: int, resample: Image.Resampling, share: float) -> Image.Image:
    return image.resize((size, size), resample)


def _centre_crop(image: Image.Image, size: int, resample: Image.Resampling, share: float) -> Image.Image:
    """As torchvision's Resize(cover) then CenterCrop(size) on a PIL image."""
    shorter = _crop_cover(size, share)
    width, height = image.size
    scaled = (shorter, int(shorter * height / width)) if width <= height else (int(shorter * width / height), shorter)
    image = image.resize(scaled, resample)
    left, top = round((scaled[0] - size) / 2), round((scaled[1] - size) / 2)
    return image.crop((left, top, left + size, top + size))


def _crop_cover(size: int, share: float) -> int:
    return int(size / share)


def _central_square(width: int, height: int, share: float) -> Box:
    side = round(min(width, height) * share)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


RESIZES.add("squash", Resize(_squash, lambda size, share: size, lambda width, height, share: (0, 0, width, height)),
            "the whole picture stretched to a square, whatever its shape")
RESIZES.add("crop", Resize(_centre_crop, _crop_cover, _central_square), "the shape kept: the shorter side resized "
            "to 256/224 of the image size (or the backbone's own crop share), the central square kept (torchvision's "
            "ImageNet evaluation)")
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class Preprocessing:
    """Resize to a square (a RESIZES entry, with `interpolation`), optional horizontal flip, to tensor, normalise.
    Recorded in checkpoints (one without `resize` was squashed; `interpolation` and `crop_share` are recorded where
    they differ from torchvision's bilinear and 224/256, as a timm backbone's may)."""

    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "squash"
    interpolation: str = "bilinear"
    crop_share: float = CROP_SHARE

    def as_dict(self) -> dict:
        own = {"interpolation": self.interpolation} if self.interpolation != "bilinear" else {}
        own.update({"crop_share": self.crop_share} if self.crop_share != CROP_SHARE else {})
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std), "resize": self.resize,
                **own}

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        return cls(int(values["image_size"]), tuple(values["mean"]), tuple(values["std"]),
                   values.get("resize", "squash"), values.get("interpolation", "bilinear"),
                   float(values.get("crop_share", CROP_SHARE)))

    def load(self, path: str | Path, flip: bool = False) -> torch.Tensor:
        """The image file as this preprocessing's tensor (ImageReadError if it cannot be read)."""
        return self(open_rgb(path, RESIZES[self.resize].cover(self.image_size, self.crop_share)), flip)

    def seen(self, image: Image.Image) -> Image.Image:
        """The part of a picture that the square shows, at the picture's own resolution."""
        return image.crop(RESIZES[self.resize].seen(*image.size, self.crop_share))

    def __call__(self, image: Image.Image, flip: bool = False) -> torch.Tensor:
        """A normalised float tensor (3, size, size) from an RGB image."""
        image = RESIZES[self.resize].fit(image, self.image_size, INTERPOLATIONS[self.interpolation], self.crop_share)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        tensor = (pixels.float().div_(255) - mean) / std
        return tensor.flip(-1) if flip else tensor


def open_rgb(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Decode any image PIL can read, whatever its extension, into an upright RGB picture.

    `min_size` lets large JPEGs decode at a reduced scale that still covers `min_size` pixels a side.
    EXIF orientation is applied; transparency is composited onto white; 16-bit and CMYK are converted. Anything but a
    regular file (a named pipe, a socket, a device: opening one can wait forever) is refused before it is opened.
    """
    refuse_unless_regular(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ImageReadError(
                        f"{path}: image of {image.width}x{image.height} pixels is larger than the "
                        f"{MAX_IMAGE_PIXELS} pixel limit (possible decompression bomb)"
                    )
                if min_size:
                    image.draft("RGB", (min_size, min_size))
                rgb = _to_rgb(ImageOps.exif_transpose(image))
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except Exception as error:  # noqa: BLE001 - damaged files make PIL raise many types; all mean "unreadable"
        raise ImageReadError(f"{path}: cannot read image ({error or type(error).__name__})") from None
    for warning in caught:  # PIL's own warnings (e.g. corrupt EXIF) do not say which file
        warnings.warn(f"{path}: {warning.message}", warning.category, stacklevel=2)
    return rgb


NOT_REGULAR = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket",
               stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}


def refuse_unless_regular(path: str | Path) -> None:
    """An ImageReadError, one line naming `path`, unless it is a regular file (a link to one is), looked at without
    opening it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read image ({error.strerror or error})") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in NOT_REGULAR.items() if test(mode)), "not a regular file")
        raise ImageReadError(f"{path}: not an image file but {kind}, so not opened")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        image = Image.fromarray(np.clip(pixels / scale * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def drop_missing_images(table: LabelTable, image_dir: Path) -> tuple[LabelTable, list[str]]:
    """The rows of `table` whose image file exists, and the names of those that do not."""
    folder = str(image_dir)  # os.path, not pathlib: a labels file may list hundreds of thousands of names
    exists = [os.path.isfile(os.path.join(folder, name)) for name in table.filenames]
    missing = [name for name, found in zip(table.filenames, exists, strict=True) if not found]
    return table.subset(np.flatnonzero(exists)), missing


def report_unusable_images(kind: str, names: Sequence[str], strict: bool, list_dir: Path | None = None) -> None:
    """Warn once about images left out, or fail under `strict`, in one line of bounded length.

    A long list is shortened to a few names; all of them go to `list_dir/<kind>_images.txt` (default: a temporary
    file), which the message names.
    """
    if not names:
        return
    full_list = None if list_dir is None else Path(list_dir) / f"{kind.replace(' ', '_')}_images.txt"
    listing = listed(names, full_list)
    if strict:
        raise AimonkError(f"{len(names)} {kind} image(s) (--strict): {listing}")
    warnings.warn(f"skipping {len(names)} {kind} image(s): {listing}", stacklevel=2)


class ImageDataset(Dataset):
    """Item `(index, flip)` -> {"image", "targets", "known", "index"}, or {"error", "index"} if unreadable.

    Flip is chosen by the caller so cached and uncached training can follow the same plan.
    With `both_orientations`, "image" is (2, 3, H, W): as is and flipped, from a single decode.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        targets: np.ndarray,
        known: np.ndarray,
        preprocessing: Preprocessing,
        both_orientations: bool = False,
    ):
        self.paths = list(paths)
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.known = torch.as_tensor(known, dtype=torch.bool)
        self.preprocessing = preprocessing
        self.both_orientations = both_orientations

    @classmethod
    def unlabelled(cls, paths: Sequence[Path], preprocessing: Preprocessing,
                   both_orientations: bool = False) -> ImageDataset:
        """Images only, for feature extraction and prediction: targets and known labels are placeholders."""
        placeholder = np.zeros((len(paths), 1), dtype=np.float32)
        return cls(paths, placeholder, placeholder > 0, preprocessing, both_orientations)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, bool]) -> dict:
        index, flip = key if isinstance(key, tuple) else (key, False)
        try:
            image = self.preprocessing.load(self.paths[index], flip)
        except ImageReadError as error:
            return {"error": str(error), "index": index}
        if self.both_orientations:
            image = torch.stack([image, image.flip(-1)])
        return {"image": image, "targets": self.targets[index], "known": self.known[index], "index": index}


def collate_readable(items: list[dict]) -> dict:
    """Stack the readable items of a batch (tensors None if there are none); (index, message) for the rest."""
    good = [item for item in items if "error" not in item]
    batch = {key: torch.stack([item[key] for item in good]) if good else None for key in ("image", "targets", "known")}
    batch["index"] = torch.tensor([item["index"] for item in good], dtype=torch.long)
    batch["errors"] = [(item["index"], item["error"]) for item in items if "error" in item]
    return batch


def image_batches(dataset: ImageDataset, plan: list[list[tuple[int, bool]]], num_workers: int
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(images, targets, known) per planned batch of (index, flip), decoded in `num_workers` processes. An image
    that cannot be read is an ImageReadError; an empty planned batch (a process's share of a batch smaller than the
    job) gives empty tensors."""
    size, attributes = dataset.preprocessing.image_size, dataset.targets.shape[1]
    loader = DataLoader(dataset, batch_sampler=plan, num_workers=num_workers, collate_fn=collate_readable)
    for batch in loader:
        if batch["errors"]:
            raise ImageReadError("; ".join(message for _, message in batch["errors"]))
        if batch["image"] is None:
            yield (torch.zeros(0, 3, size, size), torch.zeros(0, attributes),
                   torch.zeros(0, attributes, dtype=torch.bool))
        else:
            yield batch["image"], batch["targets"], batch["known"]


def image_files(arguments: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders searched recursively for image files, each as `folder / relative path`.

    Hidden files and folders (names starting with ".") are skipped, symbolic links followed with each real folder
    visited once (a link loop ends), and each folder's images come in natural order of their relative path
    (image_2 before image_10, part_2/ before part_10/). A folder that cannot be listed is warned about.
    """
    paths: list[Path] = []
    for argument in map(Path, arguments):
        paths.extend(sorted(_images_under(argument), key=_natural_key) if argument.is_dir() else [argument])
    return paths


def _images_under(folder: Path) -> list[Path]:
    extensions = {extension.lower() for extension in Image.registered_extensions()}
    found, visited = [], {_identity(folder)}
    for directory, subfolders, files in os.walk(folder, followlinks=True, onerror=_unlistable):
        kept = []
        for name in sorted(subfolders, key=lambda name: _natural_key(Path(name))):  # the first of two links wins
            identity = _identity(os.path.join(directory, name))
            if not name.startswith(".") and identity not in visited:
                visited.add(identity)
                kept.append(name)
        subfolders[:] = kept
        relative = Path(directory).relative_to(folder)
        found.extend(folder / relative / name for name in files if not name.startswith(".")
                     and Path(name).suffix.lower() in extensions and os.path.isfile(os.path.join(directory, name)))
    return found


def _identity(directory: str | Path) -> tuple[int, int]:
    status = os.stat(directory)
    return status.st_dev, status.st_ino


def _unlistable(error: OSError) -> None:
    warnings.warn(f"{error.filename}: cannot list folder ({error.strerror}); its images are skipped", stacklevel=2)


def _natural_key(path: Path) -> list[list]:
    return [[int(piece) if piece.isdecimal() else piece for piece in re.split(r"(\d+)", part)] for part in path.parts]


# SAMPLERS and epoch plans.

Plan = list[list[tuple[int, bool]]]


@SAMPLERS.register("uniform")
def uniform(table: LabelTable, config: TrainConfig) -> np.ndarray:
    """every training image once per epoch (the reference)"""
    return np.ones(len(table))


@SAMPLERS.register("repeat_factor", options=[EntryOption(
    "repeat_threshold", 0.3, "repeat_factor: attributes positive in fewer than this share of their known labels get "
    "their images repeated", positive)])
def repeat_factor(table: LabelTable, config: TrainConfig) -> np.ndarray:
    """images with rare known positives visited more often (LVIS repeat-factor sampling, --repeat-threshold)"""
    # An attribute positive in a share f of its known labels gives its positive images max(1, sqrt(t / f)) visits.
    share = table.positives().sum(axis=0) / np.maximum(table.known.sum(axis=0), 1)
    factors = np.sqrt(config.repeat_threshold / np.maximum(share, 1e-12))
    return np.maximum(1.0, (table.positives() * factors).max(axis=1, initial=0.0))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one epoch: a function of (seed, epoch) only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_plan(visits: np.ndarray, batch_size: int, seed: int, epoch: int) -> Plan:
    """Batches of (row, flip) for one epoch: each row visited `visits` times (rounded at random), shuffled."""
    generator = epoch_generator(seed, epoch)
    whole = np.floor(visits).astype(np.int64)
    if not np.array_equal(whole, visits):  # only then a draw, so whole visits give the reference's exact plan
        whole += (torch.rand(len(visits), generator=generator, dtype=torch.float64).numpy() < visits - whole)
    rows = np.repeat(np.arange(len(visits)), whole).tolist()
    order = torch.randperm(len(rows), generator=generator).tolist()
    flips = (torch.rand(len(rows), generator=generator) < 0.5).tolist()
    pairs = [(rows[i], flips[i]) for i in order]
    return [pairs[start : start + batch_size] for start in range(0, len(pairs), batch_size)]


def cached_batches(features: torch.Tensor, rows: np.ndarray, targets: np.ndarray, known: np.ndarray, plan: Plan,
                   device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(features on `device`, targets, known) per planned batch of (row, flip): `features[i, flip]` is image
    `rows[row]` as is or flipped; `targets` and `known` are indexed by image. A planned batch may be empty (a
    process's share of a batch smaller than the job)."""
    for batch in plan:
        picked = rows[[row for row, _ in batch]]
        flips = torch.tensor([int(flip) for _, flip in batch], dtype=torch.long)
        yield (features[torch.as_tensor(picked, dtype=torch.long), flips].to(device),
               torch.from_numpy(targets[picked]), torch.from_numpy(known[picked]))
