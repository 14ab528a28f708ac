"""Checkpoints: saved atomically into folders that need not exist; from elsewhere, pickled code never runs, damaged
files and mismatched models are refused clearly."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from helpers import write_dataset

from aimonk.checkpoint import FORMAT, _is, load_checkpoint, load_safely, save_atomic, save_tuning
from aimonk.cli import main
from aimonk.config import TrainConfig
from aimonk.errors import CheckpointError, WeightsUnavailableError
from aimonk.evaluate.prediction import Predictor
from aimonk.io import STATE_FILE
from aimonk.model.classifier import build_model
from aimonk.train.training import train


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
    return train(config).model_path


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
