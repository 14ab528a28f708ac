"""The frozen-backbone feature cache: same training as without it, reused across runs, invalidated when it must be."""

from __future__ import annotations

import errno
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DAMAGE, cached_entries, feature_cache_message, train_cached, train_config
from PIL import Image
from torch import nn

import aimonk.cache.store
import aimonk.data.images
import aimonk.model.features
import aimonk.train.training
from aimonk.cache.folders import MARKER, cache_contents, clear_cache
from aimonk.cache.store import FeatureCache, encode_shard, file_digest, shard_entries, shard_paths
from aimonk.data.images import Preprocessing, open_rgb
from aimonk.evaluate.prediction import Predictor
from aimonk.model.classifier import build_model
from aimonk.model.features import features_of, inference_backbone, to_storable


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the images decoded by the dataset, in order (DataLoader workers off, so the patch applies)."""
    names: list[str] = []

    def counting_open_rgb(path, min_size=None):  # noqa: ANN001, ANN202
        names.append(Path(path).name)
        return open_rgb(path, min_size)

    monkeypatch.setattr(aimonk.data.images, "open_rgb", counting_open_rgb)
    return names


def tiny_backbone(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def test_cached_and_uncached_training_give_the_same_loss_history(small_dataset: Path, tmp_path: Path):
    cached = train_cached(train_config(small_dataset, tmp_path / "cache", out_dir=str(tmp_path / "cached")))
    uncached = train_cached(train_config(small_dataset, tmp_path / "cache", out_dir=str(tmp_path / "plain"),
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
        return train_cached(train_config(small_dataset, tmp_path / "cache", out_dir=str(tmp_path / out),
                                         precision="bf16", **overrides)).history

    cached, uncached = bf16_run("cached"), bf16_run("plain", feature_cache=False)
    np.testing.assert_allclose(uncached, cached, rtol=2e-3)

    def with_folded_backbone(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        model, origin = build_model(*args, **kwargs)
        model.backbone = inference_backbone(model.backbone)
        return model, origin

    monkeypatch.setattr(aimonk.train.training, "build_model", with_folded_backbone)
    folded = bf16_run("folded", feature_cache=False)
    np.testing.assert_allclose(folded, cached, rtol=1e-6)


def test_rerun_with_another_lr_decodes_no_image(small_dataset: Path, tmp_path: Path, decoded: list[str]):
    first = train_cached(train_config(small_dataset, tmp_path / "cache"))
    assert sorted(decoded) == sorted(first.data.table.filenames)  # each image decoded exactly once
    decoded.clear()
    second = train_cached(train_config(small_dataset, tmp_path / "cache", lr=1e-2))
    assert decoded == []
    assert torch.equal(first.data.features, second.data.features)
    assert first.history[0] == second.history[0] and first.history[-1] != second.history[-1]


def test_edited_image_is_recomputed_alone(small_dataset: Path, tmp_path: Path, decoded: list[str]):
    train_cached(train_config(small_dataset, tmp_path / "cache"))
    decoded.clear()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(small_dataset / "images" / "img_5.jpg")
    train_cached(train_config(small_dataset, tmp_path / "cache"))
    assert decoded == ["img_5.jpg"]


def test_other_image_size_precision_or_resize_misses_the_cache(small_dataset: Path, tmp_path: Path,
                                                               decoded: list[str]):
    train_cached(train_config(small_dataset, tmp_path / "cache"))
    for overrides in ({"image_size": 48}, {"precision": "bf16"}, {"resize": "crop"}):
        decoded.clear()
        train_cached(train_config(small_dataset, tmp_path / "cache", **overrides))
        assert len(decoded) == 24, overrides


def test_other_backbone_weights_miss_the_cache(small_dataset: Path, tmp_path: Path, decoded: list[str]):
    paths = sorted((small_dataset / "images").iterdir())
    preprocessing = Preprocessing(32)
    backbone = tiny_backbone()
    features_of(backbone, paths, preprocessing, FeatureCache(tmp_path, backbone, preprocessing, "fp32"),
                     "fp32", num_workers=0, progress=False)
    decoded.clear()
    with torch.no_grad():
        backbone[0].weight[0, 0, 0, 0] += 1e-3
    features_of(backbone, paths, preprocessing, FeatureCache(tmp_path, backbone, preprocessing, "fp32"),
                     "fp32", num_workers=0, progress=False)
    assert len(decoded) == len(paths)
    decoded.clear()
    features_of(backbone, paths, preprocessing, FeatureCache(tmp_path, backbone, preprocessing, "fp32"),
                     "fp32", num_workers=0, progress=False)
    assert decoded == []


def test_cached_features_are_the_backbone_on_both_orientations(small_dataset: Path, tmp_path: Path):
    paths = sorted((small_dataset / "images").iterdir())[:5]
    preprocessing = Preprocessing(32)
    backbone = tiny_backbone()
    cache = FeatureCache(tmp_path, backbone, preprocessing, "fp32")
    features_of(backbone, paths, preprocessing, cache, "fp32", num_workers=0, progress=False)
    features, readable, errors = features_of(backbone, paths, preprocessing, cache, "fp32", progress=False)
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
    features_of(backbone, paths, preprocessing, cache, "fp32", batch_size=4, num_workers=0, progress=False)
    assert decoded_at_store[:4] == [4] * 4 and decoded_at_store[-1] == len(paths)


def test_unreadable_image_is_reported_and_left_out(small_dataset: Path, tmp_path: Path):
    (small_dataset / "images" / "img_3.jpg").write_bytes(b"not an image")
    paths = sorted((small_dataset / "images").iterdir())
    preprocessing = Preprocessing(32)
    backbone = tiny_backbone()
    cache = FeatureCache(tmp_path, backbone, preprocessing, "fp32")
    features, readable, errors = features_of(backbone, paths, preprocessing, cache, "fp32", num_workers=0,
                                                  progress=False)
    assert len(readable) == len(paths) - 1 and paths.index(small_dataset / "images" / "img_3.jpg") not in readable
    assert len(errors) == 1 and "img_3.jpg" in errors[0]
    assert features.shape == (len(paths) - 1, 2, 8)


def test_trained_backbone_never_uses_the_cache(small_dataset: Path, tmp_path: Path):
    result = train_cached(train_config(small_dataset, tmp_path / "cache", trainable_stages=5, epochs=1, batch_size=16))
    assert result.data.features is None
    assert cached_entries(tmp_path / "cache") == 0


def test_backbone_in_workers_gives_the_features_of_the_main_process(small_dataset: Path, tmp_path: Path):
    paths = sorted((small_dataset / "images").iterdir())
    preprocessing = Preprocessing(32)
    backbone = tiny_backbone()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # one worker per thread: the workers run the backbone
        in_workers = features_of(backbone, paths, preprocessing, None, "fp32", 4, num_workers=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    in_main = features_of(backbone, paths, preprocessing, None, "fp32", 4, num_workers=0, progress=False)
    assert in_workers[1:] == in_main[1:]
    torch.testing.assert_close(in_workers[0], in_main[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_prediction_on_a_training_image_uses_the_features_it_was_trained_on(small_dataset: Path, tmp_path: Path,
                                                                           precision: str):
    result = train_cached(train_config(small_dataset, tmp_path / "cache", precision=precision))
    predictor = Predictor(result.model_path)
    assert predictor.precision == precision  # recorded in the checkpoint
    paths = [small_dataset / "images" / name for name in result.data.table.filenames]
    expected = torch.sigmoid(predictor.model.head(result.data.features[:, 0].float())).detach()  # bf16 as computed
    for workers in (0, torch.get_num_threads()):
        probabilities = [p.probabilities for p in predictor.predict(paths, batch_size=4, num_workers=workers)]
        torch.testing.assert_close(torch.tensor(probabilities), expected, rtol=1e-5, atol=1e-6)


def _extract(cache_root: Path, paths: list[Path], precision: str = "fp32") -> FeatureCache:
    """Extract through a cache at `cache_root`: each call stores what it computed into a new shard."""
    cache = FeatureCache(cache_root, tiny_backbone(), Preprocessing(32), precision)
    features_of(tiny_backbone(), paths, Preprocessing(32), cache, precision, num_workers=0, progress=False)
    return cache


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_shard_is_recomputed_rewritten_and_reported_once(small_dataset, tmp_path, decoded, damage):
    paths = sorted((small_dataset / "images").iterdir())[:6]
    preprocessing, backbone = Preprocessing(32), tiny_backbone()

    def extract() -> tuple[torch.Tensor, list[str]]:
        cache = FeatureCache(tmp_path, backbone, preprocessing, "fp32")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            features, _, _ = features_of(backbone, paths, preprocessing, cache, "fp32", num_workers=0,
                                              progress=False)
        return features, [str(warning.message) for warning in caught]

    cache = _extract(tmp_path, paths[:3] + paths[4:])
    expected, _ = extract()  # paths[3] alone in the newest shard
    newest, _ = shard_paths(cache.folder)
    DAMAGE[damage](newest)
    decoded.clear()
    features, messages = extract()
    assert torch.equal(features, expected) and decoded == [paths[3].name]
    assert messages == [feature_cache_message(cache.folder, f"1 {damage}")]
    decoded.clear()
    features, messages = extract()  # healed: read from the cache again
    assert torch.equal(features, expected) and decoded == [] and messages == []


def test_bf16_entries_are_checked_too(small_dataset, tmp_path):
    paths = sorted((small_dataset / "images").iterdir())[:2]
    digests = [file_digest(path) for path in paths]
    cache = _extract(tmp_path, paths, "bf16")
    entries, found = cache.load_many(digests)
    assert found.all() and entries.dtype == np.int16 and entries.shape == (2, 2, 8)
    [shard] = shard_paths(cache.folder)
    infinite = to_storable(torch.full((2, 8), float("inf"), dtype=torch.bfloat16))
    shard.write_bytes(encode_shard(cache.folder.name, digests, [infinite, np.zeros((2, 8), np.int16)]))
    entries, found = cache.load_many([digests[1], *digests])  # an image and its copy, then the other
    assert found.tolist() == [True, False, True] and not entries[[0, 2]].any() and cache.damaged == {"not finite": 1}
    cache.damaged.clear()
    shard.write_bytes(encode_shard(cache.folder.name, digests, [np.zeros((2, 8), np.float32)] * 2))  # not bf16
    assert not cache.load_many(digests)[1].any() and cache.damaged == {"of another shape or dtype": 1}


def test_a_full_cache_disk_continues_without_caching_with_one_warning(small_dataset, tmp_path, full_disk):
    paths = sorted((small_dataset / "images").iterdir())
    preprocessing, backbone = Preprocessing(32), tiny_backbone()
    expected = features_of(backbone, paths, preprocessing, None, "fp32", num_workers=0, progress=False)
    for room in (0, 600):  # nothing fits; key.json and a couple of entries fit
        full_disk(room=room, under=tmp_path / str(room))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cache = FeatureCache(tmp_path / str(room), backbone, preprocessing, "fp32")
            features = features_of(backbone, paths, preprocessing, cache, "fp32", num_workers=0, progress=False)
        assert torch.equal(features[0], expected[0]) and features[1:] == expected[1:]
        messages = [str(warning.message) for warning in caught]
        assert len(messages) == 1 and messages[0].startswith(str(cache.folder)), messages
        assert messages[0].endswith(": cannot write: No space left on device; the feature cache is not written for "
                                    "the rest of this run")
        written = [path.name for path in (tmp_path / str(room)).rglob("*") if path.is_file()]
        assert not [name for name in written if name.endswith(".tmp")]
        assert ("key.json" in written) == bool(room) and len(written) < len(paths)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES], ids=["EROFS", "EACCES"])
def test_a_read_only_cache_is_still_read_and_never_fails_the_run(small_dataset, tmp_path, read_only, decoded, code):
    paths = sorted((small_dataset / "images").iterdir())
    preprocessing, backbone = Preprocessing(32), tiny_backbone()
    FeatureCache(tmp_path / "empty", backbone, preprocessing, "fp32")  # the folder exists, nothing else
    warm = _extract(tmp_path / "warm", paths[1:])
    expected = features_of(backbone, paths, preprocessing, warm, "fp32", num_workers=0, progress=False)
    DAMAGE["empty"](shard_paths(warm.folder)[0])  # the newest, with paths[0] alone
    read_only(tmp_path, code)
    shutil.rmtree(tmp_path / "empty")
    for root in ("empty", "warm"):
        decoded.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cache = FeatureCache(tmp_path / root, backbone, preprocessing, "fp32")
            features = features_of(backbone, paths, preprocessing, cache, "fp32", num_workers=0, progress=False)
        assert torch.equal(features[0], expected[0]) and features[1:] == expected[1:]
        messages = [str(warning.message) for warning in caught]
        assert len(messages) == 1 + (root == "warm"), messages
        assert f"cannot write: {os.strerror(code)}; the feature cache is not written" in messages[0]
        assert decoded == ([paths[0].name] if root == "warm" else [path.name for path in paths])


def _extract_recording(cache_root: Path, paths: list[Path], precision: str = "fp32") -> tuple[tuple, list[str]]:
    """features_of through a cache at `cache_root` with the tiny backbone: its result, and the warnings."""
    preprocessing, backbone = Preprocessing(32), tiny_backbone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache = FeatureCache(cache_root, backbone, preprocessing, precision)
        result = features_of(backbone, paths, preprocessing, cache, precision, num_workers=0, progress=False)
    return result, [str(warning.message) for warning in caught]


@pytest.mark.parametrize("under", ["", "sub", "sub/deeper"], ids=["the file", "under it", "deeper"])
def test_a_cache_dir_that_is_a_file_is_one_warning_and_the_run_goes_on_without_it(small_dataset, tmp_path, decoded,
                                                                                  under):
    paths = sorted((small_dataset / "images").iterdir())
    expected = features_of(tiny_backbone(), paths, Preprocessing(32), None, "fp32", num_workers=0,
                                progress=False)
    (tmp_path / "notes").write_text("not a folder")
    decoded.clear()
    features, messages = _extract_recording(tmp_path / "notes" / under, paths)
    assert messages == [f"{tmp_path / 'notes'}: is a file, not a folder; the feature cache is not used for this run"]
    assert torch.equal(features[0], expected[0]) and features[1:] == expected[1:] and len(decoded) == len(paths)
    assert (tmp_path / "notes").read_text() == "not a folder"


def test_a_cache_written_before_the_marker_is_adopted_then_listed_and_cleared(small_dataset, tmp_path, decoded):
    paths, root = sorted((small_dataset / "images").iterdir())[:6], tmp_path / "cache"
    (expected, *_), _ = _extract_recording(root, paths)
    [folder] = [path.parent for path in root.glob("*/key.json")]
    (folder / MARKER).unlink()  # as aimonk left its caches before the marker
    assert cache_contents(root) == [] and clear_cache(root) == 0 and cached_entries(folder) == 6
    decoded.clear()
    (features, *_), messages = _extract_recording(root, paths)  # a run opens it: adopted, its entries used
    assert torch.equal(features, expected) and decoded == [] and messages == []
    assert (folder / MARKER).read_bytes() == b'{"format": "aimonk-feature-cache-v1"}'
    assert [(entry["folder"], entry["files"]) for entry in cache_contents(root)] == [(folder, 6)]
    assert clear_cache(root) > 0 and list(root.iterdir()) == []


@pytest.mark.parametrize("key", [b'{"backbone_sha256": "another"}', b"{not json", b""])
def test_a_folder_of_the_caches_name_that_the_cache_did_not_make_is_left_alone_with_one_warning(small_dataset, tmp_path,
                                                                                                 decoded, key):
    paths, root = sorted((small_dataset / "images").iterdir())[:3], tmp_path / "cache"
    _extract_recording(root, paths)
    [folder] = [path.parent for path in root.glob("*/key.json")]
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "key.json").write_bytes(key)
    decoded.clear()
    _, messages = _extract_recording(root, paths)
    assert messages == [f"{folder / 'key.json'}: not written by the feature cache for this model; the feature cache "
                        f"is not used for this run"]
    assert len(decoded) == 3 and [path.name for path in folder.iterdir()] == ["key.json"]
    assert (folder / "key.json").read_bytes() == key


def _old(paths: list[Path]) -> list[Path]:
    """The images, last modified an hour ago: the digest index remembers them (it never does a file just written)."""
    for path in paths:
        os.utime(path, (time.time() - 3600,) * 2)
    return paths


def test_a_warm_run_hashes_no_image_and_reads_a_renamed_or_copied_one_from_the_cache(small_dataset, tmp_path, decoded,
                                                                                   monkeypatch):
    paths = _old(sorted((small_dataset / "images").iterdir()))
    hashed: list[str] = []
    digest = aimonk.cache.store.file_digest
    monkeypatch.setattr(aimonk.cache.store, "file_digest", lambda path: hashed.append(path.name) or digest(path))
    (expected, *_), _ = _extract_recording(tmp_path, paths)
    assert len(hashed) == len(paths)
    hashed.clear(), decoded.clear()
    assert torch.equal(_extract_recording(tmp_path, paths)[0][0], expected) and hashed == [] and decoded == []
    os.rename(paths[0], paths[0].with_name("renamed.jpg"))
    shutil.copy2(paths[1], paths[1].with_name("copy.jpg"))
    paths = sorted((small_dataset / "images").iterdir())  # both keep their modification time: old
    for _ in range(2):  # the renamed and the copied image hashed once each, never decoded
        (features, readable, _), messages = _extract_recording(tmp_path, paths)
        assert len(readable) == len(paths) and messages == [] and decoded == []
    assert sorted(hashed) == ["copy.jpg", "renamed.jpg"]


def test_shards_hold_at_most_their_number_of_entries_and_all_are_read_back(small_dataset, tmp_path, decoded,
                                                                           monkeypatch):
    monkeypatch.setattr(aimonk.cache.store, "MAX_ENTRIES", 5)
    paths = sorted((small_dataset / "images").iterdir())
    (expected, *_), _ = _extract_recording(tmp_path, paths)
    [folder] = [entry["folder"] for entry in cache_contents(tmp_path)]
    assert [shard_entries(path) for path in sorted(shard_paths(folder))] == [5, 5, 5, 5, 4]
    assert cache_contents(tmp_path)[0]["files"] == 24
    decoded.clear()
    assert torch.equal(_extract_recording(tmp_path, paths)[0][0], expected) and decoded == []


def test_two_runs_sharing_a_cache_both_keep_their_entries_and_the_newest_copy_is_read(small_dataset, tmp_path,
                                                                                      decoded):
    paths = sorted((small_dataset / "images").iterdir())
    preprocessing, backbone = Preprocessing(32), tiny_backbone()
    expected, *_ = features_of(backbone, paths, preprocessing, None, "fp32", num_workers=0, progress=False)
    first, second = (FeatureCache(tmp_path, backbone, preprocessing, "fp32") for _ in range(2))  # both open at once
    for cache, share in ((first, range(15)), (second, range(10, 24))):  # each computes its part, 5 images in both
        for i in share:
            cache.store(file_digest(paths[i]), expected[i].numpy())
    first.flush()
    second.flush()
    assert len(shard_paths(first.folder)) == 2 and cached_entries(first.folder) == 15 + 14
    decoded.clear()
    (features, *_), messages = _extract_recording(tmp_path, paths)
    assert torch.equal(features, expected) and decoded == [] and messages == []


def test_an_old_one_file_per_image_cache_is_deleted_and_its_images_computed_again_into_a_shard_with_one_line(
        small_dataset, tmp_path, decoded):
    paths = sorted((small_dataset / "images").iterdir())[:6]
    expected, *_ = features_of(tiny_backbone(), paths, Preprocessing(32), None, "fp32", num_workers=0,
                               progress=False)
    folder = FeatureCache(tmp_path, tiny_backbone(), Preprocessing(32), "fp32").folder
    for path, features in zip(paths, expected.numpy(), strict=True):  # as aimonk wrote entries before shards
        digest = file_digest(path)
        (folder / digest[:2]).mkdir(exist_ok=True)
        np.save(folder / digest[:2] / f"{digest}.npy", features)
    (folder / "ab").mkdir()
    (folder / "ab" / "mine.txt").write_text("not the cache's")  # kept, with its folder
    assert cache_contents(tmp_path)[0]["files"] == 6
    decoded.clear()
    (features, *_), messages = _extract_recording(tmp_path, paths)
    assert torch.equal(features, expected) and len(decoded) == 6  # computed again: the old layout is not read
    assert messages == [f"{folder}: 6 entries in the one-file-per-image layout of an older aimonk, which is no longer "
                        "read, were deleted; their images are computed again into shards"]
    assert not list(folder.rglob("*.npy")) and cached_entries(folder) == 6 and cache_contents(tmp_path)[0]["files"] == 6
    decoded.clear()
    (features, *_), messages = _extract_recording(tmp_path, paths)
    assert torch.equal(features, expected) and decoded == [] and messages == []
    assert [path.name for path in folder.iterdir() if path.is_dir()] == ["ab"]  # the old entries' folders removed
    assert (folder / "ab" / "mine.txt").read_text() == "not the cache's"


def test_shards_swapped_within_a_folder_still_give_each_image_its_own_features(small_dataset, tmp_path, decoded):
    """Entries are found by their image's digest, not by the file they are in: two shards' names swapped (which one
    is newest) changes nothing, and is not damage."""
    paths = sorted((small_dataset / "images").iterdir())[:6]
    cache = _extract(tmp_path, paths[:3])
    _extract(tmp_path, paths[3:])
    expected, _ = cache.load_many([file_digest(path) for path in paths])
    older, newer = sorted(shard_paths(cache.folder))
    older_bytes = older.read_bytes()
    older.write_bytes(newer.read_bytes())
    newer.write_bytes(older_bytes)
    entries, found = cache.load_many([file_digest(path) for path in paths])
    assert found.all() and np.array_equal(entries, expected) and not cache.damaged
