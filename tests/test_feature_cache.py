"""The frozen-backbone feature cache: same training as without it, reused across runs, invalidated when it must be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_config
from PIL import Image
from torch import nn

import aimonk.images
import aimonk.training
from aimonk.feature_cache import FeatureCache, extract_features
from aimonk.images import Preprocessing, open_rgb
from aimonk.model import build_model
from aimonk.prediction import Predictor
from aimonk.runtime import inference_backbone
from aimonk.training import train


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the images decoded by the dataset, in order (DataLoader workers off, so the patch applies)."""
    names: list[str] = []

    def counting_open_rgb(path, min_size=None):  # noqa: ANN001, ANN202
        names.append(Path(path).name)
        return open_rgb(path, min_size)

    monkeypatch.setattr(aimonk.images, "open_rgb", counting_open_rgb)
    return names


def tiny_backbone(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def test_cached_and_uncached_training_give_the_same_loss_history(small_dataset: Path, tmp_path: Path):
    cached = train(train_config(small_dataset, tmp_path / "cache", out_dir=str(tmp_path / "cached")))
    uncached = train(train_config(small_dataset, tmp_path / "cache", out_dir=str(tmp_path / "plain"),
                                  feature_cache=False))
    assert cached.data.features is not None and uncached.data.features is None
    assert len(cached.history) == 2 * 5  # 18 training images, batches of 4
    np.testing.assert_allclose(cached.history, uncached.history, rtol=1e-5)


def test_cached_and_uncached_training_agree_in_bf16(small_dataset: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch):
    """bf16, the default. The cache runs a BatchNorm-folded copy of the backbone (`runtime.inference_backbone`),
    training from pixels the backbone itself; in bf16 the two round differently. Measured on this data: losses
    differ by up to 8e-4 relative (1e-7 in fp32), the size of bf16's own effect (1e-3 between bf16 and fp32), so
    the tolerance is 2e-3. Given the same folded backbone, both paths are identical: that part pins down the
    precision handling (autocast around the backbone only, head in fp32) that the tolerance cannot.
    """
    def bf16_run(out: str, **overrides) -> list[float]:
        return train(train_config(small_dataset, tmp_path / "cache", out_dir=str(tmp_path / out), precision="bf16",
                                  **overrides)).history

    cached, uncached = bf16_run("cached"), bf16_run("plain", feature_cache=False)
    np.testing.assert_allclose(uncached, cached, rtol=2e-3)

    def with_folded_backbone(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        model, origin = build_model(*args, **kwargs)
        model.backbone = inference_backbone(model.backbone)
        return model, origin

    monkeypatch.setattr(aimonk.training, "build_model", with_folded_backbone)
    folded = bf16_run("folded", feature_cache=False)
    np.testing.assert_allclose(folded, cached, rtol=1e-6)


def test_rerun_with_another_lr_decodes_no_image(small_dataset: Path, tmp_path: Path, decoded: list[str]):
    first = train(train_config(small_dataset, tmp_path / "cache"))
    assert sorted(decoded) == sorted(first.data.table.filenames)  # each image decoded exactly once
    decoded.clear()
    second = train(train_config(small_dataset, tmp_path / "cache", lr=1e-2))
    assert decoded == []
    assert torch.equal(first.data.features, second.data.features)
    assert first.history[0] == second.history[0] and first.history[-1] != second.history[-1]


def test_edited_image_is_recomputed_alone(small_dataset: Path, tmp_path: Path, decoded: list[str]):
    train(train_config(small_dataset, tmp_path / "cache"))
    decoded.clear()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(small_dataset / "images" / "img_5.jpg")
    train(train_config(small_dataset, tmp_path / "cache"))
    assert decoded == ["img_5.jpg"]


def test_other_image_size_or_precision_misses_the_cache(small_dataset: Path, tmp_path: Path, decoded: list[str]):
    train(train_config(small_dataset, tmp_path / "cache"))
    for overrides in ({"image_size": 48}, {"precision": "bf16"}):
        decoded.clear()
        train(train_config(small_dataset, tmp_path / "cache", **overrides))
        assert len(decoded) == 24, overrides


def test_other_backbone_weights_miss_the_cache(small_dataset: Path, tmp_path: Path, decoded: list[str]):
    paths = sorted((small_dataset / "images").iterdir())
    preprocessing = Preprocessing(32)
    backbone = tiny_backbone()
    extract_features(backbone, paths, preprocessing, FeatureCache(tmp_path, backbone, preprocessing, "fp32"),
                     "fp32", num_workers=0, progress=False)
    decoded.clear()
    with torch.no_grad():
        backbone[0].weight[0, 0, 0, 0] += 1e-3
    extract_features(backbone, paths, preprocessing, FeatureCache(tmp_path, backbone, preprocessing, "fp32"),
                     "fp32", num_workers=0, progress=False)
    assert len(decoded) == len(paths)
    decoded.clear()
    extract_features(backbone, paths, preprocessing, FeatureCache(tmp_path, backbone, preprocessing, "fp32"),
                     "fp32", num_workers=0, progress=False)
    assert decoded == []


def test_cached_features_are_the_backbone_on_both_orientations(small_dataset: Path, tmp_path: Path):
    paths = sorted((small_dataset / "images").iterdir())[:5]
    preprocessing = Preprocessing(32)
    backbone = tiny_backbone()
    cache = FeatureCache(tmp_path, backbone, preprocessing, "fp32")
    extract_features(backbone, paths, preprocessing, cache, "fp32", num_workers=0, progress=False)
    features, readable, errors = extract_features(backbone, paths, preprocessing, cache, "fp32", progress=False)
    assert readable == list(range(5)) and errors == []
    images = torch.stack([preprocessing(open_rgb(path, 32)) for path in paths])
    with torch.no_grad():
        expected = torch.stack([backbone(images), backbone(images.flip(-1))], dim=1)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-6)


def test_extraction_streams_in_batches(small_dataset: Path, tmp_path: Path, decoded: list[str],
                                       monkeypatch: pytest.MonkeyPatch):
    """Features are stored batch by batch: memory holds one batch of images, not the whole dataset."""
    decoded_at_store: list[int] = []
    store = FeatureCache.store

    def counting_store(self: FeatureCache, digest: str, features: np.ndarray) -> None:
        decoded_at_store.append(len(decoded))
        store(self, digest, features)

    monkeypatch.setattr(FeatureCache, "store", counting_store)
    paths = sorted((small_dataset / "images").iterdir())
    preprocessing = Preprocessing(32)
    backbone = tiny_backbone()
    cache = FeatureCache(tmp_path, backbone, preprocessing, "fp32")
    extract_features(backbone, paths, preprocessing, cache, "fp32", batch_size=4, num_workers=0, progress=False)
    assert decoded_at_store[:4] == [4] * 4 and decoded_at_store[-1] == len(paths)


def test_unreadable_image_is_reported_and_left_out(small_dataset: Path, tmp_path: Path):
    (small_dataset / "images" / "img_3.jpg").write_bytes(b"not an image")
    paths = sorted((small_dataset / "images").iterdir())
    preprocessing = Preprocessing(32)
    backbone = tiny_backbone()
    cache = FeatureCache(tmp_path, backbone, preprocessing, "fp32")
    features, readable, errors = extract_features(backbone, paths, preprocessing, cache, "fp32", num_workers=0,
                                                  progress=False)
    assert len(readable) == len(paths) - 1 and paths.index(small_dataset / "images" / "img_3.jpg") not in readable
    assert len(errors) == 1 and "img_3.jpg" in errors[0]
    assert features.shape == (len(paths) - 1, 2, 8)


def test_trained_backbone_never_uses_the_cache(small_dataset: Path, tmp_path: Path):
    result = train(train_config(small_dataset, tmp_path / "cache", trainable_stages=5, epochs=1, batch_size=16))
    assert result.data.features is None
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path: Path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (1600, 1200), (10, 120, 200)).save(path)
    assert open_rgb(path, 224).size == (400, 300)  # 1/4 scale still covers 224 a side
    assert open_rgb(path, 64).size == (200, 150)  # at most 1/8
    assert open_rgb(path).size == (1600, 1200)


def test_backbone_in_workers_gives_the_features_of_the_main_process(small_dataset: Path, tmp_path: Path):
    paths = sorted((small_dataset / "images").iterdir())
    preprocessing = Preprocessing(32)
    backbone = tiny_backbone()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # one worker per thread: the workers run the backbone
        in_workers = extract_features(backbone, paths, preprocessing, None, "fp32", 4, num_workers=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    in_main = extract_features(backbone, paths, preprocessing, None, "fp32", 4, num_workers=0, progress=False)
    assert in_workers[1:] == in_main[1:]
    torch.testing.assert_close(in_workers[0], in_main[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_prediction_on_a_training_image_uses_the_features_it_was_trained_on(small_dataset: Path, tmp_path: Path,
                                                                           precision: str):
    result = train(train_config(small_dataset, tmp_path / "cache", precision=precision))
    predictor = Predictor(result.model_path)
    assert predictor.precision == precision  # recorded in the checkpoint
    paths = [small_dataset / "images" / name for name in result.data.table.filenames]
    expected = torch.sigmoid(predictor.model.head(result.data.features[:, 0].float())).detach()  # bf16 as computed
    for workers in (0, torch.get_num_threads()):
        probabilities = [p.probabilities for p in predictor.predict(paths, batch_size=4, num_workers=workers)]
        torch.testing.assert_close(torch.tensor(probabilities), expected, rtol=1e-5, atol=1e-6)


def test_aimonk_cache_shows_each_cache_folder_and_clears_only_what_the_cache_made(small_dataset, tmp_path, capsys):
    from aimonk.cli import main

    cache = tmp_path / "cache"
    train(train_config(small_dataset, cache))
    train(train_config(small_dataset, cache, trainable_stages=1, out_dir=str(tmp_path / "finetuned")))
    (cache / "notes.txt").write_text("mine")  # not the cache's: never deleted
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "24 images" in lines[0] and "24 images" in lines[1]
    assert {"5 frozen stage(s)" in lines[0] + lines[1], "4 frozen stage(s)" in lines[0] + lines[1]} == {True}
    assert lines[2].startswith(f"{cache}: 2 cache folder(s)")
    assert main(["cache", "--cache-dir", str(cache), "--clear"]) == 0
    assert sorted(path.name for path in cache.iterdir()) == ["notes.txt"]
