"""Checkpoints: saved atomically into folders that need not exist; from elsewhere, pickled code never runs, damaged
files and mismatched models are refused clearly."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import train_cached, write_dataset
from PIL import Image

from aimonk.checkpoint import FORMAT, DecisionRule, _is, load_checkpoint, load_safely, save_atomic, save_tuning
from aimonk.cli import main
from aimonk.config import TrainConfig
from aimonk.data.images import open_rgb
from aimonk.errors import CheckpointError, WeightsUnavailableError
from aimonk.evaluate.prediction import Predictor
from aimonk.io import NAME_RULE, STATE_FILE
from aimonk.model.classifier import build_model


class _Payload:
    """Unpickling this opens (creates) the marker file: proof that code in the checkpoint ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model checkpoint of a tiny resnet18 over attributes Attr1..Attr3."""
    rows = [f"img_{i}.jpg {i % 2} {(i // 2) % 2} NA" for i in range(12)]
    data = write_dataset(tmp_path_factory.mktemp("data"), rows, size=32)
    out = tmp_path_factory.mktemp("model")
    config = TrainConfig(data_dir=str(data), out_dir=str(out), weights="none", image_size=32, epochs=1,
                         workers=0, progress=False)
    return train_cached(config).model_path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    write_dataset(tmp_path, ["x.jpg 1"], size=32)
    return tmp_path / "images" / "x.jpg"


def _crafted(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """A checkpoint-looking file carrying a payload, and the marker file the payload would create."""
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / f"crafted-{kind}.pth"
    if kind == "torch-zip":
        torch.save({"format": FORMAT, "state_dict": {"head.weight": _Payload(marker)}, "attributes": ["A"]}, path)
    else:  # a legacy plain pickle file
        path.write_bytes(pickle.dumps({"format": FORMAT, "state_dict": _Payload(marker)}, protocol=2))
    return path, marker


@pytest.mark.parametrize("kind", ["torch-zip", "plain-pickle"])
def test_the_crafted_payload_is_live_when_loaded_unsafely(tmp_path, kind):
    path, marker = _crafted(tmp_path, kind)
    with contextlib.suppress(RuntimeError):  # a plain pickle runs, then fails torch's magic-number check
        torch.load(path, weights_only=False)  # what an unsafe loader would do: proves the tests below can fail
    assert marker.exists()


@pytest.mark.parametrize("kind", ["torch-zip", "plain-pickle"])
def test_pickled_objects_are_refused_and_never_run(tmp_path, kind, capsys, image):
    path, marker = _crafted(tmp_path, kind)
    with pytest.raises(CheckpointError, match=r"refused: not a file of plain weights .*nothing in it was run\. "
                                              r"Only load checkpoints from sources you trust\.$"):
        load_safely(path)
    with pytest.raises(CheckpointError, match=r"\(it holds pickled Python objects: Unsupported global: GLOBAL io\.open "
                                              r"was not an allowed global by default\); nothing"):
        load_safely(path)  # the reason names what the file tried to run, in one sentence
    with pytest.raises(CheckpointError, match=str(path)):
        Predictor(path)
    with pytest.raises(WeightsUnavailableError, match=r"refused"):
        build_model(3, weights=str(path))
    assert main(["predict", str(image), "--model", str(path)]) == 2
    assert main(["train", "--data-dir", str(tmp_path), "--weights", str(path), "--out-dir", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all("refused" in line and str(path) in line for line in errors), errors
    assert not marker.exists()


def test_a_file_holding_something_else_than_a_dict_is_refused(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / 'list.pth'}: not an aimonk checkpoint \(holds a list\)$"):
        load_checkpoint(tmp_path / "list.pth")


def test_a_checkpoint_is_saved_into_folders_that_do_not_exist_yet(tmp_path):
    path = save_atomic({"w": torch.ones(3)}, tmp_path / "new" / "nested" / "model.pth")
    assert torch.equal(load_safely(path)["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["model.pth"]  # no temporary left beside it
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o7777 == 0o666 & ~umask  # the usual permissions, not mkstemp's private 0600


def test_the_new_file_is_written_beside_the_old_then_renamed_over_it(tmp_path, monkeypatch):
    """Beside it, so on the same filesystem: the rename is atomic, a crash leaves the old or the new file."""
    renames = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((a, b)), replace(a, b)))
    save_atomic({"w": torch.ones(1)}, tmp_path / "model.pth")
    [(source, target)] = renames
    assert Path(source).parent == Path(target).parent == tmp_path and Path(target).name == "model.pth"


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / 'nowhere.pth'}: checkpoint not found$"):
        load_checkpoint(tmp_path / "nowhere.pth")


def test_a_pickle_that_is_not_plain_data_for_another_reason_says_so(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"\x80\x02\xff")  # protocol 2, then an opcode that does not exist
    with pytest.raises(CheckpointError, match=r"refused: not a file of plain weights \(Unsupported operand 255\); "):
        load_safely(path)


def test_a_crafted_training_state_is_refused_on_resume(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    marker = tmp_path / "PAYLOAD_RAN"
    torch.save({"format": "aimonk-train-state-v1", "config": _Payload(marker)}, out / STATE_FILE)
    assert main(["train", "--resume", "--out-dir", str(out), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "refused" in error and STATE_FILE in error
    assert not marker.exists()


def _good_checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "state_dict": {"w": torch.zeros(1000)}}, buffer)
    return buffer.getvalue()


DAMAGED = {
    "empty": b"",
    "text": b"hello, I am not a checkpoint\n",
    "random-bytes": bytes(range(256)) * 4,
    "truncated-half": _good_checkpoint()[: len(_good_checkpoint()) // 2],
    "truncated-tail": _good_checkpoint()[:-10],
    "zip-magic-then-garbage": b"PK\x03\x04" + bytes(100),
}


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
def test_damaged_files_are_refused_with_one_clear_line(tmp_path, content, capsys, image):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    if "not a readable checkpoint" in message:  # says what failed: (EOFError: ), (RuntimeError: ...)
        assert re.search(r"not a PyTorch file \((EOF|Key|Runtime|OS)Error: ", message), message
    assert main(["predict", str(image), "--model", str(path)]) == 2
    assert capsys.readouterr().err == f"aimonk: error: {message}\n"


def _altered(trained: Path, tmp_path: Path, **changes) -> Path:
    data = load_checkpoint(trained)
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return save_atomic(data, tmp_path / "altered.pth")


@pytest.mark.parametrize(("changes", "words"), [
    ({"format": None}, "not an aimonk model checkpoint"),
    ({"thresholds": None}, "missing thresholds"),
    ({"format": "something-else"}, "not an aimonk model checkpoint (missing format)"),
    ({"backbone": None, "thresholds": None}, "not an aimonk model checkpoint (missing backbone, thresholds)"),
    ({"thresholds": [0.5]}, "1 thresholds for 3 attributes"),
    ({"preprocessing": {"image_size": 32}}, "malformed preprocessing"),
    ({"preprocessing": {"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "resize": "stretch"}},
     "malformed preprocessing"),
    ({"preprocessing": {"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "cubic"}},
     "malformed preprocessing"),
    ({"preprocessing": {"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "crop_share": 1.5}},
     "malformed preprocessing"),
    ({"attributes": "Attr1"}, "malformed attributes"),
    ({"backbone": 18}, "malformed backbone"),
    ({"thresholds": ["0.5", "0.5", "0.5"]}, "malformed thresholds"),
    ({"backbone": 18, "thresholds": "0.5"}, "malformed backbone, thresholds"),
    ({"state_dict": {"head.weight": [1.0]}}, "malformed state_dict"),
    ({"backbone": "resnet34"}, "weights do not fit a resnet34 model"),
    ({"backbone": "vgg_unknown"}, "unknown backbone 'vgg_unknown'"),
    ({"attributes": ["A", "B", "C", "D"], "thresholds": [0.5] * 4}, "weights do not fit a resnet18 model"),
])
def test_checkpoints_that_do_not_describe_their_model_are_refused(trained, tmp_path, changes, words, capsys, image):
    path = _altered(trained, tmp_path, **changes)
    assert main(["predict", str(image), "--model", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"aimonk: error: {path}: ") and error.count("\n") == 1 and words in error, error


def test_predict_resizes_as_the_model_was_trained_and_an_older_checkpoint_squashes(trained, tmp_path):
    rows = [f"img_{i}.jpg {i % 2} {(i // 2) % 2} NA" for i in range(12)]
    data = write_dataset(tmp_path / "data", rows, size=32)
    config = TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "crop"), weights="none", image_size=32, epochs=1,
                         workers=0, progress=False, resize="crop")
    cropping = Predictor(train_cached(config).model_path)
    assert cropping.preprocessing.resize == "crop" and Predictor(trained).preprocessing.resize == "squash"
    wide = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 80, 3), dtype=np.uint8)).save(wide)
    [prediction] = cropping.predict([wide], num_workers=0)
    expected = cropping.probabilities(cropping.preprocessing(open_rgb(wide))[None])[0]  # centre-cropped, as trained
    np.testing.assert_allclose(prediction.probabilities, expected.numpy(), atol=1e-6)
    older = load_checkpoint(trained)["preprocessing"]
    del older["resize"]
    assert Predictor(_altered(trained, tmp_path, preprocessing=older)).preprocessing == Predictor(trained).preprocessing


def test_thresholds_of_another_length_are_not_saved(trained, tmp_path):
    copy = tmp_path / "model.pth"
    copy.write_bytes(trained.read_bytes())
    with pytest.raises(CheckpointError, match=rf"^{copy}: 2 thresholds for 3 attributes$"):
        save_tuning(copy, thresholds=[0.2, 0.3])
    with pytest.raises(ValueError, match="^threshold is not a per-attribute entry of a checkpoint$"):
        save_tuning(copy, threshold=[0.2, 0.3, 0.4])
    save_tuning(copy, thresholds=[0.2, 0.3, 0.4])
    assert load_checkpoint(copy)["thresholds"] == pytest.approx([0.2, 0.3, 0.4])


def test_per_attribute_entries_must_hold_their_kind_and_numbers_are_not_booleans():
    """The check behind "malformed thresholds" (and verdicts, learnable, temperatures), one value at a time: a
    threshold or temperature is an int or a float but not a bool; a verdict a str; learnable a bool."""
    assert _is(0.5, float) and _is(1, float) and not _is(True, float) and not _is("0.5", float)
    assert _is("above chance", str) and not _is(1.0, str)
    assert _is(False, bool) and not _is(0, bool)


def test_training_state_is_not_a_model_checkpoint(trained):
    with pytest.raises(CheckpointError, match="not an aimonk model checkpoint"):
        load_checkpoint(trained.parent / STATE_FILE)


def test_attributes_or_backbone_other_than_asked_are_refused(trained):
    assert load_checkpoint(trained, ["Attr1", "Attr2", "Attr3"], "resnet18")["attributes"] == ["Attr1", "Attr2",
                                                                                                 "Attr3"]
    with pytest.raises(CheckpointError, match=r"predicts attributes \['Attr1', 'Attr2', 'Attr3'\], but \['Hat'"):
        load_checkpoint(trained, attributes=["Hat", "Attr2", "Attr3"])
    with pytest.raises(CheckpointError, match="backbone is resnet18, not resnet50"):
        load_checkpoint(trained, backbone="resnet50")


def test_backbone_weights_from_a_checkpoint_of_another_backbone_are_refused(trained):
    backbone = build_model(2, weights=str(trained))[0].backbone  # same backbone: accepted
    assert torch.equal(backbone.conv1.weight, load_checkpoint(trained)["state_dict"]["backbone.conv1.weight"])
    with pytest.raises(WeightsUnavailableError, match="do not fit resnet50"):
        build_model(2, "resnet50", weights=str(trained))


# --- every entry is checked when a checkpoint is read: a crafted one (loadable with weights_only=True) that would
# never decide, invert decisions or crash later is refused in one line naming the file and the entry ---


@pytest.fixture(scope="module")
def small(trained: Path) -> dict:
    """The trained checkpoint, tuned, with only the head's weights and one BatchNorm counter (int64): a real layout
    that load_checkpoint accepts, quick to save (no model is built from it before its entries are checked)."""
    data = load_checkpoint(trained)
    data["state_dict"] = {key: value for key, value in data["state_dict"].items()
                          if key.startswith("head.") or key == "backbone.bn1.num_batches_tracked"}
    assert data["state_dict"]["backbone.bn1.num_batches_tracked"].dtype == torch.int64
    return {**data, "temperatures": [1.0, 0.5, 2.0], "learnable": [True, True, False],
            "verdicts": ["better than chance", "better than chance", "no better than chance"]}


def _crafted_checkpoint(small: dict, tmp_path: Path, **changes) -> Path:
    data = {**small, "state_dict": dict(small["state_dict"]), "preprocessing": dict(small["preprocessing"])}
    for key, value in changes.items():
        entry, _, inner = key.partition("__")  # preprocessing__std: an entry of preprocessing
        target = data[entry] if inner else data
        if value is None:
            del target[inner or entry]
        else:
            target[inner or entry] = value
    return save_atomic(data, tmp_path / "crafted.pth")


NAN, INF = float("nan"), float("inf")
HALF = {"head.weight": torch.zeros(3, 512, dtype=torch.float16)}
# (changes to the small checkpoint, the message after "PATH: ")
REFUSED = {
    "threshold-nan": ({"thresholds": [0.5, 0.5, NAN]},
                      "malformed thresholds: thresholds[2] is nan; a threshold is a probability in [0, 1]"),
    "threshold-1.5": ({"thresholds": [1.5, 0.5, 0.5]},
                      "malformed thresholds: thresholds[0] is 1.5; a threshold is a probability in [0, 1]"),
    "threshold-minus-0.2": ({"thresholds": [0.5, -0.2, 0.5]}, "thresholds[1] is -0.2; a threshold is a probability"),
    "threshold-just-above-1": ({"thresholds": [0.5, 1.000001, 0.5]}, "thresholds[1] is 1.000001; a threshold is"),
    "threshold-inf": ({"thresholds": [INF, 0.5, 0.5]}, "thresholds[0] is inf; a threshold is"),
    "threshold-bool": ({"thresholds": [True, 0.5, 0.5]}, "malformed thresholds: thresholds[0] is True, not a number"),
    "threshold-huge-int": ({"thresholds": [10**400, 0.5, 0.5]}, "thresholds[0] is 1000"),
    "temperature-0": ({"temperatures": [1.0, 0, 1.0]},
                      "malformed temperatures: temperatures[1] is 0; a temperature is finite and > 0"),
    "temperature-negative": ({"temperatures": [-1.0, 1.0, 1.0]}, "temperatures[0] is -1.0; a temperature is finite"),
    "temperature-nan": ({"temperatures": [1.0, 1.0, NAN]}, "temperatures[2] is nan; a temperature is finite"),
    "temperature-inf": ({"temperatures": [INF, 1.0, 1.0]}, "temperatures[0] is inf; a temperature is finite"),
    "half-weights": ({"state_dict": HALF},
                     "malformed state_dict: state_dict['head.weight'] is float16; weights are float32 (counters "
                     "integers)"),
    "bfloat16-weights": ({"state_dict": {"head.weight": torch.zeros(3, dtype=torch.bfloat16)}}, "is bfloat16; "),
    "float64-weights": ({"state_dict": {"head.bias": torch.zeros(3, dtype=torch.float64)}},
                        "state_dict['head.bias'] is float64; weights are float32"),
    "complex-weights": ({"state_dict": {"head.bias": torch.zeros(3, dtype=torch.complex64)}}, "is complex64; "),
    "bool-buffer": ({"state_dict": {"mask": torch.zeros(3, dtype=torch.bool)}}, "state_dict['mask'] is bool; "),
    "nan-weight": ({"state_dict": {"head.bias": torch.tensor([0.0, NAN, 0.0])}},
                   "malformed state_dict: state_dict['head.bias'] holds NaN or infinite values"),
    "inf-weight": ({"state_dict": {"x": torch.zeros(1), "head.bias": torch.tensor([-INF])}},
                   "state_dict['head.bias'] holds NaN or infinite values"),
    "sparse-weights": ({"state_dict": {"head.bias": torch.zeros(3).to_sparse()}},
                       "state_dict['head.bias'] is a torch.sparse_coo tensor on cpu, not a dense one in memory"),
    "meta-weights": ({"state_dict": {"head.bias": torch.zeros(3, device="meta")}}, "tensor on meta, not a dense"),
    "not-a-tensor": ({"state_dict": {"head.bias": [0.0, 0.0]}}, "state_dict['head.bias'] is [0.0, 0.0], not a tensor"),
    "key-not-str": ({"state_dict": {3: torch.zeros(1)}}, "malformed state_dict: state_dict has a key 3, not a str"),
    "long-values-shortened": ({"backbone": list(range(10**5)), "state_dict": {"x" * 10**5: torch.zeros(1, 2).half()}},
                              "backbone is [0, 1, 2, 3, 4, 5, ...], not a str"),
    "state-dict-list": ({"state_dict": [torch.zeros(1)]}, "state_dict is [tensor([0.])], not a dict of tensors"),
    "image-size-0": ({"preprocessing__image_size": 0},
                     "malformed preprocessing: preprocessing.image_size is 0; an image size is an int from 1 to 4096"),
    "image-size-negative": ({"preprocessing__image_size": -32}, "preprocessing.image_size is -32; an image size is"),
    "image-size-4097": ({"preprocessing__image_size": 4097}, "preprocessing.image_size is 4097; an image size is"),
    "image-size-float": ({"preprocessing__image_size": 32.0}, "preprocessing.image_size is 32.0; an image size is an"),
    "image-size-text": ({"preprocessing__image_size": "32"}, "preprocessing.image_size is '32', not a number"),
    "mean-of-2": ({"preprocessing__mean": [0.5, 0.5]},
                  "malformed preprocessing: preprocessing.mean is [0.5, 0.5], not a list of 3"),
    "mean-of-4": ({"preprocessing__mean": [0.5] * 4}, "preprocessing.mean is [0.5, 0.5, 0.5, 0.5], not a list of 3"),
    "mean-nan": ({"preprocessing__mean": [0.5, NAN, 0.5]}, "preprocessing.mean[1] is nan; a mean is finite"),
    "mean-text": ({"preprocessing__mean": "0.5"}, "preprocessing.mean is '0.5', not a list of 3"),
    "std-0": ({"preprocessing__std": [0.2, 0.2, 0]},
              "preprocessing.std[2] is 0; a standard deviation is finite and > 0"),
    "std-negative": ({"preprocessing__std": [-0.2, 0.2, 0.2]}, "preprocessing.std[0] is -0.2; a standard deviation"),
    "std-inf": ({"preprocessing__std": [0.2, INF, 0.2]}, "preprocessing.std[1] is inf; a standard deviation"),
    "no-std": ({"preprocessing__std": None}, "malformed preprocessing: preprocessing has no std"),
    "preprocessing-list": ({"preprocessing": [32]},
                           "preprocessing is [32], not a dict with keys image_size, mean, std"),
    "precision-fp16": ({"precision": "fp16"}, "malformed precision: precision is 'fp16', not one of ('bf16', 'fp32')"),
    "precision-number": ({"precision": 32}, "precision is 32, not one of"),
    "no-attributes": ({"attributes": [], "thresholds": [], "temperatures": [], "learnable": [], "verdicts": []},
                      "malformed attributes: attributes is empty"),
    "attribute-not-str": ({"attributes": ["Attr1", 2, "Attr3"]}, "malformed attributes: attributes[1] is 2, not a str"),
    "attribute-slash": ({"attributes": ["Attr1", "size/large", "Attr3"]},
                        "malformed attributes: attributes: attribute name 'size/large' contains a path separator; "
                        f"{NAME_RULE}"),
    "attribute-image": ({"attributes": ["image", "Attr2", "Attr3"]},
                        "attributes: attribute name 'image' is one of the CSV's own columns; "),
    "attribute-error": ({"attributes": ["Attr1", "Attr2", "error"]}, "attribute name 'error' is one of the CSV's own"),
    "attribute-hidden": ({"attributes": ["Attr1", ".Attr2", "Attr3"]}, "attribute name '.Attr2' starts with '.'"),
    "attribute-dot-dot": ({"attributes": ["Attr1", "..", "Attr3"]}, "attribute name '..' starts with '.'"),
    "attribute-empty": ({"attributes": ["Attr1", "", "Attr3"]}, "attribute name '' is empty or not text"),
    "attribute-control": ({"attributes": ["Attr1", "Attr\n2", "Attr3"]}, "'Attr\\n2' contains a control character"),
    "attribute-case": ({"attributes": ["Attr1", "attr1", "Attr3"]},
                       "attribute names 'Attr1' and 'attr1' are equal ignoring case"),
    "attribute-twice": ({"attributes": ["Attr1", "Attr3", "Attr3"]},
                        "attribute names 'Attr3' and 'Attr3' are equal ignoring case"),
    "attribute-p-prefix": ({"attributes": ["Attr1", "p_attr1", "Attr3"]},
                           "attribute names 'Attr1' and 'p_attr1': one is 'p_' + the other"),
    "attributes-text": ({"attributes": "Attr1"}, "malformed attributes: attributes is 'Attr1', not a list"),
    "backbone-number": ({"backbone": 18}, "malformed backbone: backbone is 18, not a str"),
    "weights-origin-number": ({"weights_origin": 3}, "malformed weights_origin: weights_origin is 3, not a str"),
    "verdicts-numbers": ({"verdicts": [1, 2, 3]}, "malformed verdicts: verdicts[0] is 1, not a str"),
    "learnable-ints": ({"learnable": [1, 0, 1]}, "malformed learnable: learnable[0] is 1, not true or false"),
    "learnable-text": ({"learnable": ["yes", "no", "no"]}, "learnable[0] is 'yes', not true or false"),
    "train-config-text": ({"train_config": "lr=0.001"},
                          "malformed train_config: train_config is 'lr=0.001', not a dict"),
    "train-files-text": ({"train_files": "a.jpg"}, "malformed train_files: train_files is 'a.jpg', not a list"),
    "val-files-numbers": ({"val_files": ["a.jpg", 7]}, "malformed val_files: val_files[1] is 7, not a str"),
    "skipped-files-none": ({"skipped_files": [None]}, "malformed skipped_files: skipped_files[0] is None, not a str"),
    "label-counts-negative": ({"label_counts": {"images": -1, "train": 0, "validation": 0, "skipped": 0,
                                                "known": [0, 0, 0], "positive": [0, 0, 0]}},
                              "malformed label_counts: label_counts.images is -1; a count is an int >= 0"),
    "validation-without-metrics": ({"validation": {"images": 3, "bootstrap": 10, "seed": 0, "confidence": 0.95}},
                                   "malformed validation: validation has no metrics"),
    "two-entries": ({"backbone": 18, "thresholds": [0.5, NAN, 0.5]},
                    "malformed backbone, thresholds: backbone is 18, not a str; thresholds[1] is nan; a threshold"),
}


@pytest.mark.parametrize(("changes", "words"), REFUSED.values(), ids=REFUSED.keys())
def test_a_crafted_checkpoint_is_refused_in_one_line_naming_the_entry(small, tmp_path, changes, words, capsys,
                                                                        image):
    path = _crafted_checkpoint(small, tmp_path, **changes)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: malformed ") and words in message and "\n" not in message, message
    assert len(message) < len(f"{path}: ") + 400  # crafted values are shown shortened
    assert main(["predict", str(image), "--model", str(path)]) == 2
    assert capsys.readouterr().err == f"aimonk: error: {message}\n"


# The neighbours of the refused values, each something aimonk writes or could: accepted as they are.
ACCEPTED = {
    "thresholds-at-the-ends": {"thresholds": [0.0, 1.0, 1]},
    "temperatures-small-and-large": {"temperatures": [1e-3, 1, 1e3]},
    "image-size-1": {"preprocessing__image_size": 1},
    "image-size-4096": {"preprocessing__image_size": 4096},
    "mean-and-std-tuples-ints": {"preprocessing__mean": (0, 0.5, 1), "preprocessing__std": (1, 0.5, 2)},
    "mean-negative": {"preprocessing__mean": [-1.0, 0.0, 2.0]},
    "precision-fp32": {"precision": "fp32"},
    "no-precision": {"precision": None},
    "untuned": {"temperatures": None, "learnable": None, "verdicts": None},
    "no-label-counts": {"label_counts": None},  # a checkpoint from before the model card
    "no-file-lists-or-config": {"train_config": None, "train_files": None, "val_files": None, "skipped_files": None},
    "unicode-and-neighbour-names": {"attributes": ["Größe", "Image", "p_"]},
    "names-with-dots-and-prefixes": {"attributes": ["a.b", "x_p_y", "pp_x"]},
    "integer-buffers": {"state_dict": {"a": torch.zeros(2, dtype=torch.int32), "b": torch.zeros(2, dtype=torch.uint8),
                                       "head.bias": torch.zeros(3)}},
}


@pytest.mark.parametrize("changes", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_the_neighbours_of_refused_entries_are_read_as_they_are(small, tmp_path, changes):
    path = _crafted_checkpoint(small, tmp_path, **changes)
    data = load_checkpoint(path)
    for key, value in changes.items():
        entry, _, inner = key.partition("__")
        if value is None:
            assert (inner or entry) not in (data[entry] if inner else data)
        elif isinstance(value, dict):
            assert data[entry].keys() == value.keys()
        else:
            assert (data[entry][inner] if inner else data[entry]) == value


def test_a_trained_checkpoint_tuned_with_numpy_values_as_tuning_gives_them_loads(trained, tmp_path):
    copy = tmp_path / "model.pth"
    copy.write_bytes(trained.read_bytes())
    save_tuning(copy, thresholds=np.array([0.0, 0.37, 1.0]).tolist(), temperatures=list(np.array([0.8, 1.0, 3.5])),
                verdicts=["better than chance"] * 3, learnable=[True, True, False])
    checkpoint = load_checkpoint(copy, attributes=["Attr1", "Attr2", "Attr3"], backbone="resnet18")
    assert checkpoint["thresholds"] == [0.0, 0.37, 1.0] and checkpoint["temperatures"] == [0.8, 1.0, 3.5]
    assert all(type(value) is float for value in checkpoint["temperatures"])  # plain floats: weights_only reads them


@pytest.mark.slow
def test_a_real_trained_then_tuned_checkpoint_loads_and_predicts(tiny_model, tmp_path, capsys):
    model = tmp_path / "model.pth"
    model.write_bytes(tiny_model.read_bytes())
    data_dir = load_checkpoint(model)["train_config"]["data_dir"]
    assert main(["tune", "--model", str(model), "--data-dir", data_dir, "--bootstrap", "50"]) == 0
    checkpoint = load_checkpoint(model, attributes=["Attr1", "Attr2"], backbone="resnet18")
    assert {"thresholds", "temperatures", "verdicts", "learnable"} <= checkpoint.keys()
    assert checkpoint["precision"] == "bf16" and checkpoint["state_dict"]["backbone.bn1.num_batches_tracked"].dtype \
        == torch.int64
    capsys.readouterr()
    assert main(["predict", str(Path(data_dir) / "images" / "img_0.jpg"), "--model", str(model)]) == 0
    assert capsys.readouterr().out.startswith(str(Path(data_dir) / "images" / "img_0.jpg"))


@pytest.mark.parametrize(("entry", "values", "words"), [
    ("thresholds", [0.5, NAN, 0.5], "thresholds[1] is nan; a threshold is a probability in [0, 1]"),
    ("thresholds", [1.5, 0.5, 0.5], "thresholds[0] is 1.5; a threshold is a probability in [0, 1]"),
    ("thresholds", [0.5, 0.5, -0.2], "thresholds[2] is -0.2; a threshold is a probability in [0, 1]"),
    ("temperatures", [0.0, 1.0, 1.0], "temperatures[0] is 0.0; a temperature is finite and > 0"),
    ("temperatures", [1.0, -2.0, 1.0], "temperatures[1] is -2.0; a temperature is finite and > 0"),
    ("temperatures", [1.0, 1.0, INF], "temperatures[2] is inf; a temperature is finite and > 0"),
])
def test_tuning_that_would_not_read_back_is_not_saved_and_the_file_is_left_as_it_was(small, tmp_path, entry, values,
                                                                                       words):
    path = _crafted_checkpoint(small, tmp_path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as caught:
        save_tuning(path, **{entry: values})
    assert str(caught.value) == f"{path}: not saved, invalid {entry}: {words}"
    assert path.read_bytes() == before
    save_tuning(path, **{entry: [0.0, 1.0, 0.5] if entry == "thresholds" else [0.1, 1.0, 10.0]})  # the neighbours
    assert load_checkpoint(path)[entry] == ([0.0, 1.0, 0.5] if entry == "thresholds" else [0.1, 1.0, 10.0])


def test_the_decision_rule_turns_logits_into_calibrated_probabilities_and_decisions():
    rule = DecisionRule(("Attr1", "Attr2", "Attr3"), (0.5, 0.9, 0.5), (2.0, 1.0, 1.0), (True, True, False),
                        ("better than chance",) * 3)
    logits = np.array([[2.0, 3.0, 40.0], [-1000.0, 1000.0, 0.0]])
    probabilities = rule.probabilities(logits)
    np.testing.assert_allclose(probabilities[0], 1 / (1 + np.exp(-np.array([1.0, 3.0, 40.0]))))
    assert probabilities[1].tolist() == pytest.approx([0.0, 1.0, 0.5], abs=1e-200)  # no overflow at any logit
    assert rule.decisions(probabilities[0]) == [True, True, None] and rule.present(probabilities[0]) == ["Attr1",
                                                                                                          "Attr2"]
    assert rule.decisions([0.4, 0.89, 1.0]) == [False, False, None] and rule.cannot_judge == ["Attr3"]
    assert DecisionRule.of({"attributes": list(rule.attributes), **rule.entries()}) == rule  # as stored, read back
    untuned = DecisionRule.untuned(["a", "b"])
    assert untuned.entries() == {"thresholds": [0.5, 0.5]}  # nothing judged yet: no verdicts, no learnable


def test_the_recorded_data_are_found_absolute_or_relative_to_the_checkpoint_after_the_tree_moved(tmp_path):
    """A checkpoint records its labels and images absolute and relative to itself: found from any working folder,
    and after the whole tree (model, labels, images) was moved elsewhere."""
    from aimonk.checkpoint import data_record, recorded_data

    old = tmp_path / "old"
    (old / "data" / "images").mkdir(parents=True)
    (old / "data" / "labels.csv").write_text("image,A\n")
    record = data_record(old / "data" / "labels.csv", old / "data" / "images", old / "runs" / "model.pth")
    assert record["labels_relative"] == os.path.join("..", "data", "labels.csv")
    assert recorded_data({"data": record}, old / "runs" / "model.pth") == (old / "data" / "labels.csv",
                                                                          old / "data" / "images")
    new = tmp_path / "new"
    old.rename(new)
    assert recorded_data({"data": record}, new / "runs" / "model.pth") == (new / "data" / "labels.csv",
                                                                          new / "data" / "images")
    assert recorded_data({}, new / "runs" / "model.pth") == (None, None)  # a checkpoint from before the record
