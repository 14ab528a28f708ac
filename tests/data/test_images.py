"""Image decoding: every kind of picture PIL reads becomes upright RGB; every bad file is a named, skippable error.
Finding images in folders: recursive, hidden entries skipped, symbolic-link loops safe, a stable natural order."""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import COLLECTION_ORDER as EXPECTED
from PIL import Image
from torch.utils.data import DataLoader

from aimonk.data.images import ImageDataset, Preprocessing, collate_readable, image_files, open_rgb
from aimonk.errors import ImageReadError

RED, BLUE = (220, 20, 20), (20, 20, 220)
EXIF_ORIENTATION = 0x0112


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG claiming `width` x `height` pixels: what a decompression bomb looks like before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _jpeg_bytes(size: tuple[int, int] = (32, 24), **options) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _write_bad(kind: str, path: Path) -> Path:
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "truncated-jpeg":
        path.write_bytes(_jpeg_bytes()[:300])
    elif kind == "corrupt-jpeg-body":
        data = bytearray(_jpeg_bytes())
        data[200:] = bytes(len(data) - 200)
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif kind == "text-named-jpg":
        path.write_text("this is not an image\n")
    elif kind == "html-named-png":
        path.write_text("<html><body>404 Not Found</body></html>")
    elif kind == "bomb-over-limit":
        _png_header_only(path, 10_000, 10_000)  # 1e8 pixels > 89.5e6: PIL warns, we refuse
    elif kind == "bomb-over-twice-limit":
        _png_header_only(path, 30_000, 30_000)
    elif kind == "folder-named-jpg":
        path.mkdir()
    return path


BAD_KINDS = ["zero-byte", "truncated-jpeg", "corrupt-jpeg-body", "text-named-jpg", "html-named-png",
             "bomb-over-limit", "bomb-over-twice-limit", "folder-named-jpg"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_files_raise_an_error_naming_the_file(tmp_path, kind):
    path = _write_bad(kind, tmp_path / "bad.jpg")
    with pytest.raises(ImageReadError) as caught:
        open_rgb(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "\n" not in str(caught.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ImageReadError, match=r"gone\.jpg: image file not found"):
        open_rgb(tmp_path / "gone.jpg")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = _png_header_only(tmp_path / "bomb.png", 10_000, 10_000)
    with pytest.raises(ImageReadError, match="decompression bomb"):
        open_rgb(path)


def _save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def _odd_images(folder: Path) -> dict[str, tuple[Path, tuple[int, int, int]]]:
    """Each odd-but-valid kind of image, and the RGB colour its centre pixel must decode to."""
    gray16 = Image.fromarray(np.full((20, 20), 32768, dtype=np.uint16))
    palette = Image.new("RGB", (20, 20), RED).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    transparent_palette = palette.copy()
    transparent_palette.info["transparency"] = palette.getpixel((10, 10))
    return {
        "png-named-jpg": (_save(Image.new("RGB", (20, 20), RED), folder / "png.jpg", format="PNG"), RED),
        "grayscale": (_save(Image.new("L", (20, 20), 100), folder / "gray.jpg", format="JPEG"), (100, 100, 100)),
        "1-bit": (_save(Image.new("1", (20, 20), 1), folder / "bits.png"), (255, 255, 255)),
        "16-bit": (_save(gray16, folder / "gray16.png"), (128, 128, 128)),
        "cmyk-jpeg": (_save(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), folder / "cmyk.jpg", quality=95),
                      (255, 0, 0)),
        "palette": (_save(palette, folder / "palette.png"), RED),
        "palette-transparent": (_save(transparent_palette, folder / "ptrans.png"), (255, 255, 255)),
        "rgba-opaque": (_save(Image.new("RGBA", (20, 20), (*BLUE, 255)), folder / "rgba.png"), BLUE),
        "rgba-transparent": (_save(Image.new("RGBA", (20, 20), (*BLUE, 0)), folder / "clear.png"), (255, 255, 255)),
        "la": (_save(Image.new("LA", (20, 20), (50, 255)), folder / "la.png"), (50, 50, 50)),
        "progressive-jpeg": (_save(Image.new("RGB", (20, 20), BLUE), folder / "prog.jpg", progressive=True,
                                   quality=95), BLUE),
        "webp-named-png": (_save(Image.new("RGB", (20, 20), RED), folder / "webp.png", format="WEBP", lossless=True),
                           RED),
        "gif": (_save(Image.new("RGB", (20, 20), BLUE), folder / "anim.gif"), BLUE),
        "bmp": (_save(Image.new("RGB", (20, 20), RED), folder / "x.bmp"), RED),
        "tiff": (_save(Image.new("RGB", (20, 20), BLUE), folder / "x.tif"), BLUE),
    }


def test_every_kind_of_valid_image_decodes_to_rgb_with_the_right_colour(tmp_path):
    for kind, (path, colour) in _odd_images(tmp_path).items():
        image = open_rgb(path)
        assert image.mode == "RGB", kind
        assert image.size == (20, 20), kind
        assert np.abs(np.asarray(image)[10, 10].astype(int) - colour).max() <= 3, kind


def _two_tone(width: int = 400, height: int = 200) -> Image.Image:
    """Left half red, right half blue."""
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2], pixels[:, width // 2 :] = RED, BLUE
    return Image.fromarray(pixels)


@pytest.mark.parametrize(("orientation", "top", "bottom"), [(1, None, None), (3, None, None), (6, RED, BLUE),
                                                             (8, BLUE, RED)])
@pytest.mark.parametrize("min_size", [None, 64])
def test_exif_orientation_is_respected(tmp_path, orientation, top, bottom, min_size):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = _save(_two_tone(), tmp_path / "photo.jpg", exif=exif.tobytes(), quality=95)
    pixels = np.asarray(open_rgb(path, min_size)).astype(int)
    height, width = pixels.shape[:2]
    if top is None:  # upright or upside down: still landscape, halves left/right (swapped by 180 degrees)
        left, right = (RED, BLUE) if orientation == 1 else (BLUE, RED)
        assert width == 2 * height
        assert np.abs(pixels[height // 2, width // 4] - left).max() < 30
        assert np.abs(pixels[height // 2, 3 * width // 4] - right).max() < 30
    else:  # rotated by 90 degrees: a portrait with the halves on top and bottom
        assert height == 2 * width
        assert np.abs(pixels[height // 4, width // 2] - top).max() < 30
        assert np.abs(pixels[3 * height // 4, width // 2] - bottom).max() < 30
    if min_size:
        assert min(width, height) >= min_size


def test_corrupt_exif_still_decodes_and_the_warning_names_the_file(tmp_path):
    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x010F, 2, 1000, 26) + struct.pack("<I", 0)
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd  # a tag whose data lies past the end
    path = _save(Image.new("RGB", (16, 8), RED), tmp_path / "odd-exif.jpg", exif=exif)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert open_rgb(path).size == (16, 8)
    assert caught and all(str(path) in str(warning.message) for warning in caught)


def test_randomly_damaged_files_decode_or_raise_image_read_error_only(tmp_path):
    sources = [_jpeg_bytes(), _jpeg_bytes(progressive=True)]
    for mode, kind in [("RGBA", "PNG"), ("P", "PNG"), ("P", "GIF"), ("RGB", "TIFF"), ("RGB", "WEBP")]:
        buffer = io.BytesIO()
        _two_tone(16, 16).convert(mode).save(buffer, format=kind)
        sources.append(buffer.getvalue())
    generator = random.Random(0)
    path = tmp_path / "damaged.jpg"
    for _ in range(300):
        data = bytearray(generator.choice(sources))
        for _ in range(generator.randint(1, 4)):
            data[generator.randrange(len(data))] = generator.randrange(256)
        path.write_bytes(bytes(data[: generator.randint(1, len(data))]) if generator.random() < 0.3 else bytes(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                assert open_rgb(path, generator.choice([None, 8])).mode == "RGB"
            except ImageReadError as error:
                assert str(error).startswith(str(path))


def test_dataset_with_workers_reports_bad_images_without_a_worker_crash(tmp_path):
    paths = [_write_bad(kind, tmp_path / f"{kind}.jpg") for kind in BAD_KINDS]
    paths += [path for path, _ in _odd_images(tmp_path).values()]
    dataset = ImageDataset.unlabelled(paths, Preprocessing(16))
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_readable)
    good, errors = [], []
    for batch in loader:
        good.extend(batch["index"].tolist())
        errors.extend(batch["errors"])
    assert sorted(good) == list(range(len(BAD_KINDS), len(paths)))
    assert sorted(index for index, _ in errors) == list(range(len(BAD_KINDS)))
    assert all(message.startswith(str(paths[index])) for index, message in errors)


@pytest.mark.parametrize("size", [(300, 517), (517, 300), (641, 640), (224, 224)])
def test_crop_keeps_the_shape_and_cuts_the_centre_as_torchvisions_imagenet_evaluation(size):
    transforms = pytest.importorskip("torchvision.transforms")
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    expected = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                   transforms.Normalize(mean, std)])(picture)
    assert torch.allclose(Preprocessing(224, mean, std, "crop")(picture), expected, atol=1e-6)
    squashed = Preprocessing(224, mean, std)(picture)
    assert squashed.shape == expected.shape and (size == (224, 224) or not torch.allclose(squashed, expected))


def test_crop_decodes_large_jpegs_to_cover_the_side_it_resizes_to(tmp_path: Path, monkeypatch):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (2048, 1900), (10, 120, 200)).save(path)
    decoded = []
    monkeypatch.setattr(Preprocessing, "__call__", lambda self, image, flip=False: decoded.append(image.size))
    Preprocessing(224).load(path)
    Preprocessing(224, resize="crop").load(path)
    assert decoded == [(256, 238), (512, 475)]  # 1/8 covers 224 a side, not the 256 that crop resizes to
    Preprocessing(100, resize="crop").load(path)
    assert decoded[-1] == (256, 238)


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path: Path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (1600, 1200), (10, 120, 200)).save(path)
    assert open_rgb(path, 224).size == (400, 300)  # 1/4 scale still covers 224 a side
    assert open_rgb(path, 64).size == (200, 150)  # at most 1/8
    assert open_rgb(path).size == (1600, 1200)


# --- folders (image_files); the `collection` fixture is helpers.photo_collection ---


def test_folders_are_searched_recursively_in_natural_order(collection):
    assert image_files([collection]) == [collection / name for name in EXPECTED]


def test_names_are_relative_to_the_folder_given(collection, monkeypatch):
    monkeypatch.chdir(collection.parent)
    assert [str(path) for path in image_files(["photos"])] == [f"photos/{name}" for name in EXPECTED]
    monkeypatch.chdir(collection)
    assert [str(path) for path in image_files(["."])] == EXPECTED


def test_files_are_kept_as_given_even_hidden_and_mixed_with_folders(collection):
    hidden = collection / "part_2" / ".thumbnail.jpg"
    assert image_files([hidden, collection / "part_10"]) == [hidden, collection / "part_10" / "image_1.png"]
