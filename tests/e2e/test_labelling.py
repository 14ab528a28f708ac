"""`aimonk audit`, `complete` and `next` end to end: on a small demo set (learnable) and on noise (nothing to learn),
and on bad input (one line, exit code 2)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import write_dataset

from aimonk.cli import main
from aimonk.data.labels import read_labels
from aimonk.io import output_lock


def quick(data: Path, *options: str) -> list[str]:
    """Options for a labelling command on `data`: random backbone, 32 px, no workers or progress."""
    return ["--data-dir", str(data), "--weights", "none", "--image-size", "32", "--precision", "fp32", "--workers",
            "0", "--no-progress", "--cache-dir", str(data.parent / "cache"), "--out-dir", str(data.parent / "out"),
            *options]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out-dir", str(data), "--n-images", "200", "--size", "48"]) == 0
    return data


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random pictures with random labels: no attribute can be told apart, as on the real Aimonk labels."""
    rng = np.random.default_rng(0)
    rows = [f"img_{i}.jpg " + " ".join(rng.choice(["1", "0", "NA"], p=[0.4, 0.4, 0.2], size=2)) for i in range(60)]
    return write_dataset(tmp_path_factory.mktemp("noise") / "data", rows, size=32)


@pytest.mark.slow
def test_complete_writes_a_completed_file_beside_and_leaves_the_original_as_it_was(demo, capsys):
    labels = demo / "labels.txt"
    original = labels.read_bytes()
    assert main(["complete", *quick(demo, "--csv", str(demo / "na.csv"))]) == 0
    out = capsys.readouterr().out
    assert labels.read_bytes() == original
    given, completed = read_labels(labels), read_labels(demo / "labels.completed.txt")
    assert completed.filenames == given.filenames
    assert np.array_equal(completed.targets[given.known], given.targets[given.known])  # only NA entries change
    assert completed.known.sum() > given.known.sum() and f"wrote {demo / 'labels.completed.txt'}" in out
    for name in ("Attr1", "Attr2", "Attr3", "Attr4"):
        assert f"{name} as present (1): " in out and f"{name} as absent (0): " in out
    with open(demo / "na.csv", newline="") as file:
        entries = list(csv.DictReader(file))
    assert len(entries) == (~given.known).sum() and set(entries[0]) == {"image", "attribute", "probability", "fill"}


@pytest.mark.slow
def test_audit_and_next_write_their_tables_and_label_studio_tasks(demo, capsys):
    assert main(["audit", *quick(demo, "--csv", str(demo / "suspects.csv"))]) == 0
    assert "known labels suspected wrong" in capsys.readouterr().out
    with open(demo / "suspects.csv", newline="") as file:
        assert next(csv.reader(file)) == ["image", "attribute", "given", "probability", "rank", "score"]
    assert main(["next", *quick(demo, "--k", "7", "--csv", str(demo / "next.csv"), "--label-studio",
                                str(demo / "tasks.json"))]) == 0
    table = read_labels(demo / "labels.txt")
    tasks = json.loads((demo / "tasks.json").read_text())
    assert len(tasks) == 7
    for task in tasks:
        row, column = table.filenames.index(task["meta"]["file"]), table.attributes.index(task["data"]["attribute"])
        assert not table.known[row, column]


@pytest.mark.slow
def test_without_visual_signal_audit_flags_nothing_and_complete_fills_nothing_saying_why(noise, capsys):
    assert main(["audit", *quick(noise)]) == 0
    out = capsys.readouterr().out
    # Cross-fitting on noise tends to rank below chance: "no better" or "worse than chance", never "better"
    assert out.count("not audited") == 2 and "than chance" in out and "0 of 2 attributes better" in out
    assert main(["complete", *quick(noise)]) == 0
    out = capsys.readouterr().out
    reasons = [line.split("nothing filled: ")[1] for line in out.splitlines() if "nothing filled: " in line]
    assert len(reasons) == 4 and all(reason.startswith(("no better", "worse")) for reason in reasons), out
    assert "0 NA entries filled" in out
    assert read_labels(noise / "labels.completed.txt").known.sum() == read_labels(noise / "labels.txt").known.sum()


@pytest.mark.parametrize(("argv", "words"), [
    (["complete", "--level", "1"], ["level must be in [0.5, 1)"]),
    (["complete", "--out", "{data}/labels.txt"], ["is a file this command reads"]),
    (["next", "--k", "0"], ["k must be between"]),
    (["next", "--label-studio", "{data}/tasks.csv"], ["not a .json file name"]),
    (["audit", "--csv", "{data}/labels.txt"], ["not a .csv file name"]),
    (["audit", "--recipe", "reference"], ["--solver lbfgs"]),
    (["audit", "--labels", "{data}/missing.txt"], ["missing.txt", "not found"]),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, words):
    data = write_dataset(tmp_path / "data", [f"img_{i}.jpg {i % 2}" for i in range(4)], size=32)
    command, *options = argv
    assert main([command, *quick(data), *(option.format(data=data) for option in options)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aimonk: error: ") and all(word in err for word in words), err


@pytest.mark.parametrize("command", ["audit --csv {out}/s.csv", "complete --out {out}/c.txt",
                                     "complete --csv {out}/n.csv", "next --csv {out}/n.csv",
                                     "next --label-studio {out}/t.json"])
def test_a_folder_in_use_is_refused_before_the_work_and_nothing_is_written(tmp_path, capsys, command):
    data = write_dataset(tmp_path / "data", [f"img_{i}.jpg {i % 2}" for i in range(4)], size=32)
    out = tmp_path / "out"
    with output_lock(out):  # as another command writing there holds it
        assert main([*command.format(out=out).split(), *quick(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out}: in use by process" in err, err
    assert sorted(path.name for path in out.iterdir()) == []


@pytest.mark.slow
def test_a_column_just_added_cannot_be_judged_by_any_command_and_next_asks_for_it_first(demo, tmp_path, capsys):
    """A new attribute, all NA: train, predict, evaluate, the card, complete and next agree that it cannot be judged
    (no known label), none gives it a probability, and next proposes its entries first."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "images").symlink_to(demo / "images")
    lines = (demo / "labels.txt").read_text().splitlines()
    (data / "labels.txt").write_text("".join(f"{line} NA\n" for line in lines))
    table = read_labels(data / "labels.txt")
    new, why = table.attributes[-1], "no known label (all NA)"
    model = tmp_path / "out" / "aimonk_model.pth"
    assert main(["train", *quick(data, "--epochs", "2")]) == 0
    capsys.readouterr()

    images = [str(data / "images" / name) for name in table.filenames[:3]]
    assert main(["predict", *images, "--model", str(model), "--json"]) == 0
    for record in map(json.loads, capsys.readouterr().out.splitlines()):
        assert record["probabilities"][new] is None and new not in record["attributes"]
        assert record["why_not_judged"][new] == f"{why} in its training labels: no probability"
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):  # the export's rule too
        assert main(["export", "--model", str(model)]) == 0
        capsys.readouterr()
        assert main(["predict", *images, "--model", str(model.with_suffix(".onnx")), "--json"]) == 0
        for record in map(json.loads, capsys.readouterr().out.splitlines()):
            assert record["probabilities"][new] is None and new not in record["attributes"]
            assert record["why_not_judged"][new] == f"{why} in its training labels: no probability"
    assert main(["predict", *images, "--model", str(model), "--csv", str(tmp_path / "p.csv")]) == 0
    assert f"aimonk: note: this model cannot judge {new} ({why} in its training labels" in capsys.readouterr().err
    with open(tmp_path / "p.csv", newline="") as file:
        assert all(row[f"p_{new}"] == "" and row[new] == "" for row in csv.DictReader(file))

    assert main(["evaluate", "--model", str(model), "--data-dir", str(data), "--bootstrap", "20"]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith(new)]
    assert "n/a" in row and "too few" in row  # no known label among the validation images either
    assert f"- {new}: cannot be judged: {why} in its training labels" in (model.parent / "MODEL_CARD.md").read_text()

    assert main(["complete", *quick(data, "--csv", str(tmp_path / "fills.csv"), "--out",
                                    str(tmp_path / "completed.txt"))]) == 0
    assert f"{new} as present (1): nothing filled: cannot be judged: {why}" in capsys.readouterr().out
    with open(tmp_path / "fills.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if row["attribute"] == new]
    assert len(rows) == len(table) and all(row["probability"] == "" and row["fill"] == "NA" for row in rows)

    assert main(["next", *quick(data, "--k", str(len(table) + 5), "--csv", str(tmp_path / "next.csv"))]) == 0
    out = capsys.readouterr().out
    assert f"{new} cannot be judged ({why}): no probability; its NA entries come first" in out
    with open(tmp_path / "next.csv", newline="") as file:
        chosen = list(csv.DictReader(file))
    assert [row["attribute"] for row in chosen[: len(table)]] == [new] * len(table)
    assert all(row["probability"] == "" and row["reason"] == f"cannot be judged: {why}" for row in chosen[:len(table)])
    assert all(row["attribute"] != new and row["probability"] != "" for row in chosen[len(table):])
