"""Output files: short messages about long lists of names, with the full list in a file; atomic writes; one
writer per output folder (the lock; a real second run and a killed one: e2e/test_lock.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import holder_pid

from aimonk.card import write_history
from aimonk.checkpoint import save_atomic
from aimonk.data.eda import save_table
from aimonk.errors import AimonkError
from aimonk.io import (
    CARD_FILE,
    CURVE_FILE,
    HISTORY_FILE,
    LOCK_FILE,
    MODEL_FILE,
    RUNS_FOLDER,
    atomic_file,
    finish_moves,
    keep_previous_run,
    listed,
    output_lock,
    previous_runs,
)


def test_a_few_short_names_are_listed_whole_and_nothing_is_written(tmp_path):
    assert listed(["a.jpg", "b.jpg"], tmp_path / "list.txt") == "a.jpg, b.jpg"
    assert not (tmp_path / "list.txt").exists()


def test_a_long_name_is_shortened_and_kept_whole_in_the_file(tmp_path):
    name = "x" * 1000 + ".jpg"
    text = listed([name], tmp_path / "list.txt")
    assert len(text) < 300 and text.endswith(f"(full list in {tmp_path / 'list.txt'})")
    assert (tmp_path / "list.txt").read_text() == f"{name}\n"


def test_without_a_folder_the_full_list_goes_to_a_temporary_file():
    names = [f"img_{i}.jpg" for i in range(7)]
    text = listed(names)
    assert text.startswith("img_0.jpg, img_1.jpg, img_2.jpg, img_3.jpg, img_4.jpg, ... (full list in ")
    path = Path(text.removesuffix(")").rsplit("full list in ", 1)[1])
    assert path.read_text().splitlines() == names
    path.unlink()


def _save_checkpoint(path: Path, version: int) -> None:
    save_atomic({"version": torch.full((2000,), float(version))}, path)


def _save_history(path: Path, version: int) -> None:
    write_history(path.parent, [0.5, 0.4, 0.3 + version / 100])


def _save_table(path: Path, version: int) -> None:
    save_table(pd.DataFrame({"a": range(200), "b": version}), path)


@pytest.mark.parametrize(("save", "name", "room"), [
    (_save_checkpoint, "model.pth", 0), (_save_checkpoint, "model.pth", 4096), (_save_history, HISTORY_FILE, 0),
    (_save_history, CURVE_FILE, 1000), (_save_table, "eda_labels.csv", 100),
])
def test_a_full_disk_is_one_error_naming_the_file_and_leaves_the_old_file_and_no_temporary(tmp_path, full_disk,
                                                                                         save, name, room):
    save(tmp_path / name, 1)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    full_disk(room)
    with pytest.raises(AimonkError) as caught:
        save(tmp_path / name, 2)
    assert str(caught.value) == f"{tmp_path / name}: cannot write: No space left on device"
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()}[name] == before[name]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(before)


def test_an_error_reading_another_file_inside_the_block_is_not_called_a_failed_write(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_file(tmp_path / "out.csv", "w") as file:
        file.write("partial")
        (tmp_path / "missing.txt").read_text()
    assert list(tmp_path.iterdir()) == []


# --- the output folder's lock ---


def test_a_lock_file_without_a_holder_is_taken_over_and_a_garbled_one_still_refuses(tmp_path):
    (tmp_path / LOCK_FILE).write_text("not json")
    with output_lock(tmp_path):  # nobody holds it: a leftover is no obstacle
        assert holder_pid(tmp_path) == os.getpid()
        (tmp_path / LOCK_FILE).write_text("garbled")
        with pytest.raises(AimonkError, match="in use by another process; wait for it or use another --out-dir"), \
                output_lock(tmp_path):
            pass


def test_a_previous_model_is_moved_whole_into_runs_and_a_move_cut_short_is_finished(tmp_path):
    files = {MODEL_FILE: b"model", CARD_FILE: b"card", HISTORY_FILE: b"history",  # and export's default outputs
             "aimonk_model.onnx": b"fp32 export", "aimonk_model.int8.onnx": b"int8 export"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "labels.txt").write_bytes(b"not the run's")
    os.utime(tmp_path / MODEL_FILE, (0, 0))  # written at 1970-01-01 00:00:00 UTC
    kept = keep_previous_run(tmp_path)
    assert kept == tmp_path / RUNS_FOLDER / "19700101T000000Z"
    assert {path.name: path.read_bytes() for path in kept.iterdir()} == files
    assert sorted(path.name for path in tmp_path.iterdir()) == ["labels.txt", RUNS_FOLDER]
    assert keep_previous_run(tmp_path) is None  # nothing left to keep

    for name, content in files.items():  # a second model of the same second, its move killed half-way
        (tmp_path / name).write_bytes(content)
    os.utime(tmp_path / MODEL_FILE, (0, 0))
    partial = tmp_path / RUNS_FOLDER / ".19700101T000000Z-2.partial"
    partial.mkdir()
    os.replace(tmp_path / CARD_FILE, partial / CARD_FILE)
    assert finish_moves(tmp_path) == [tmp_path / RUNS_FOLDER / "19700101T000000Z-2"]
    assert previous_runs(tmp_path) == [tmp_path / RUNS_FOLDER / "19700101T000000Z-2", kept]
    assert {path.name for path in previous_runs(tmp_path)[0].iterdir()} == set(files)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["labels.txt", RUNS_FOLDER]
