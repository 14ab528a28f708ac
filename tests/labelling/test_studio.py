"""`aimonk merge`: Label Studio's JSON export of `next`'s tasks, shaped as its documentation shows (Export > JSON:
a list of tasks, each with `data`, `meta` and `annotations[].result[].value.choices`), merged into a new labels file
that differs from the original in exactly the answered NA entries; conflicts listed and left; bad exports refused
in one line, nothing written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from aimonk.cli import main
from aimonk.labelling.next import LOCAL_FILES

LABELS = b"filename A B\nimage_0.jpg 1 NA\nimage_1.jpg NA NA\nimage_2.jpg 0 1\n"


def annotation(choice: str | None, number: int = 1, cancelled: bool = False) -> dict:
    """One annotation as Label Studio exports it (a skipped task: cancelled, no result)."""
    result = [] if choice is None else [{"id": f"r{number}", "type": "choices", "value": {"choices": [choice]},
                                         "origin": "manual", "to_name": "image", "from_name": "label"}]
    return {"id": number, "completed_by": number, "result": result, "was_cancelled": cancelled,
            "ground_truth": False, "created_at": "2026-12-06T10:00:00.000000Z",
            "updated_at": "2026-12-06T10:00:00.000000Z", "lead_time": 2.5, "prediction": {}, "result_count": 0,
            "unique_id": f"u{number}", "import_id": None, "last_action": None, "task": 1, "project": 1,
            "updated_by": number, "parent_prediction": None, "parent_annotation": None, "last_created_by": None}


def task(number: int, image: str, attribute: str, *annotations: dict) -> dict:
    """A task `aimonk next --label-studio` wrote, as the export returns it."""
    return {"id": number, "annotations": list(annotations), "file_upload": None, "drafts": [], "predictions": [],
            "data": {"image": f"{LOCAL_FILES}data/images/{image}", "attribute": attribute, "file": image},
            "meta": {"file": image, "probability": 0.5, "priority": 0.25, "rank": number},
            "created_at": "2026-12-06T09:00:00.000000Z", "updated_at": "2026-12-06T10:00:00.000000Z",
            "inner_id": number, "total_annotations": len(annotations), "cancelled_annotations": 0,
            "total_predictions": 0, "comment_count": 0, "unresolved_comment_count": 0, "last_comment_updated_at": None,
            "project": 1, "updated_by": 1, "comment_authors": []}


def merge(tmp_path: Path, tasks: object, *options: str, text: str | None = None) -> tuple[int, Path]:
    labels, export = tmp_path / "labels.txt", tmp_path / "export.json"
    if not labels.exists():
        labels.write_bytes(LABELS)
    export.write_text(json.dumps(tasks) if text is None else text)
    return main(["merge", "--label-studio", str(export), "--labels", str(labels), *options]), labels


def test_answered_na_entries_are_filled_cannot_tell_stays_na_and_nothing_else_changes(tmp_path, capsys):
    tasks = [task(1, "image_0.jpg", "B", annotation("present")), task(2, "image_1.jpg", "A", annotation("absent")),
             task(3, "image_1.jpg", "B", annotation("cannot tell")), task(4, "image_2.jpg", "A", annotation("absent")),
             task(5, "image_1.jpg", "B"), task(6, "image_1.jpg", "B", annotation(None, cancelled=True))]
    code, labels = merge(tmp_path, tasks)
    out = capsys.readouterr().out
    assert code == 0 and labels.read_bytes() == LABELS
    assert (tmp_path / "labels.merged.txt").read_bytes() == LABELS.replace(b"1 NA\n", b"1 1\n").replace(
        b"image_1.jpg NA", b"image_1.jpg 0")
    assert "2 NA entries filled (1 present, 1 absent); 1 answered cannot tell (left NA); 1 answers equal to the " \
           "known label; 0 conflicts" in out
    assert "1 skipped or cancelled annotations and 1 tasks without an answer" in out


def test_conflicts_are_listed_and_left_unless_answers_are_preferred(tmp_path, capsys):
    tasks = [task(1, "image_2.jpg", "A", annotation("present")),
             task(2, "image_1.jpg", "A", annotation("present", 1), annotation("absent", 2))]
    code, _ = merge(tmp_path, tasks)
    out = capsys.readouterr().out
    assert code == 0 and (tmp_path / "labels.merged.txt").read_bytes() == LABELS
    assert "conflict: image_2.jpg A: labelled absent, answered present; left absent" in out
    assert "conflict: image_1.jpg A: annotators disagree (present, absent); left NA" in out
    code, _ = merge(tmp_path, tasks, "--prefer-answers", "--out", str(tmp_path / "preferred.txt"))
    assert code == 0 and (tmp_path / "preferred.txt").read_bytes() == LABELS.replace(b"image_2.jpg 0",
                                                                                   b"image_2.jpg 1")


def test_a_csv_is_merged_in_its_own_spelling_of_values(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"image,A,B\r\nimage_0.jpg,1,\r\nimage_1.jpg,-1,")
    export = tmp_path / "export.json"
    export.write_text(json.dumps([task(1, "image_0.jpg", "B", annotation("absent")),
                                  task(2, "image_1.jpg", "B", annotation("present"))]))
    assert main(["merge", "--label-studio", str(export), "--labels", str(labels)]) == 0
    assert (tmp_path / "labels.merged.csv").read_bytes() == b"image,A,B\r\nimage_0.jpg,1,-1\r\nimage_1.jpg,-1,1"


@pytest.mark.parametrize(("tasks", "text", "words"), [
    ([task(1, "nowhere.jpg", "A", annotation("present"))], None, "task 1: image 'nowhere.jpg' is not in"),
    ([task(1, "image_0.jpg", "Hat", annotation("present"))], None, "task 1: attribute 'Hat' is not one of"),
    ([task(1, "image_1.jpg", "A", annotation("maybe"))], None, "task 1: answer ['maybe'] is not one of present"),
    ([{"id": 7, "data": {"image": "x.jpg"}, "annotations": []}], None, "task 7: no image file and attribute"),
    ([], None, "the export holds no tasks"),
    (None, "", "empty file"),
    (None, json.dumps([task(1, "image_1.jpg", "A", annotation("present"))])[:-40], "not a whole JSON document"),
    (None, '{"data": 1}', "not a Label Studio JSON export (a list of tasks)"),
], ids=["unknown-image", "unknown-attribute", "unknown-choice", "not-a-task-of-next", "no-tasks", "empty",
        "truncated", "not-a-list"])
def test_a_bad_export_is_one_line_and_nothing_is_written(tmp_path, capsys, tasks, text, words):
    code, labels = merge(tmp_path, tasks, text=text)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("aimonk: error: ") and err.count("\n") == 1 and words in err, err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export.json", "labels.txt"]
    assert labels.read_bytes() == LABELS


def test_the_original_is_never_written_over(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_bytes(LABELS)
    digest = hashlib.sha256(LABELS).hexdigest()
    code, _ = merge(tmp_path, [task(1, "image_1.jpg", "A", annotation("present"))], "--out", str(labels))
    assert code == 2 and "is a file this command reads" in capsys.readouterr().err
    assert hashlib.sha256(labels.read_bytes()).hexdigest() == digest
