"""Label Studio's answers back into the labels: read its JSON export of the tasks `aimonk next --label-studio` wrote
(each task `{"data": {"image", "attribute", "file"}, "annotations": [{"result": [{"value": {"choices": [...]}}],
"was_cancelled": ...}]}`), and decide per entry what to write: an NA answered present or absent is filled, "cannot
tell" leaves it NA, an answer against a known label or annotators who disagree are conflicts, left as they were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from aimonk.data.labels import LabelTable
from aimonk.errors import AimonkError

ANSWERS = {"present": True, "absent": False, "cannot tell": None, "1": True, "0": False, "NA": None}  # value or alias


@dataclass
class Merge:
    """What an export says about the labels: the fills to write ((image, attribute) -> present/absent) and what was
    left, counted."""

    fills: dict[tuple[str, str], bool] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    cannot_tell: int = 0
    already: int = 0  # answers equal to the known label
    cancelled: int = 0  # annotations skipped or cancelled in Label Studio
    unanswered: int = 0  # tasks without an annotation

    def summary(self) -> list[str]:
        present = sum(self.fills.values())
        return [f"{len(self.fills)} NA entries filled ({present} present, {len(self.fills) - present} absent); "
                f"{self.cannot_tell} answered cannot tell (left NA); {self.already} answers equal to the known label; "
                f"{len(self.conflicts)} conflicts (left as they were); {self.cancelled} skipped or cancelled "
                f"annotations and {self.unanswered} tasks without an answer (left NA)",
                *(f"  conflict: {line}" for line in self.conflicts)]


def read_export(path: str | Path) -> list[dict]:
    """The tasks of a Label Studio JSON export, refused in one line if it is not one (empty, truncated, another
    shape)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise AimonkError(f"{path}: Label Studio export not found") from None
    except UnicodeDecodeError:
        raise AimonkError(f"{path}: not UTF-8 text, so not a Label Studio JSON export") from None
    if not text.strip():
        raise AimonkError(f"{path}: empty file: export the project again (Export > JSON)")
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as error:
        raise AimonkError(f"{path}: not a whole JSON document (line {error.lineno}, column {error.colno}: "
                          f"{error.msg}); truncated? export the project again (Export > JSON)") from None
    if not isinstance(tasks, list) or not all(isinstance(task, dict) for task in tasks):
        raise AimonkError(f"{path}: not a Label Studio JSON export (a list of tasks), but a JSON "
                          f"{type(tasks).__name__}")
    if not tasks:
        raise AimonkError(f"{path}: the export holds no tasks")
    return tasks


def merge_answers(tasks: list[dict], table: LabelTable, export: str | Path, prefer_answers: bool = False) -> Merge:
    """Each task's entry and its annotators' answers against `table`: refused in one line (naming the task) where a
    task is not one of `next`'s, or names an image or attribute the labels do not have."""
    rows = {name: i for i, name in enumerate(table.filenames)}
    columns = {name: j for j, name in enumerate(table.attributes)}
    answers: dict[tuple[str, str], list[bool | None]] = {}
    merge = Merge()
    for number, task in enumerate(tasks, start=1):
        where = f"{export}: task {task.get('id', number)}"
        data, meta = task.get("data") or {}, task.get("meta") or {}
        image, attribute = data.get("file") or meta.get("file"), data.get("attribute")
        if not isinstance(image, str) or not isinstance(attribute, str):
            raise AimonkError(f"{where}: no image file and attribute in its data: not a task `aimonk next "
                              "--label-studio` wrote")
        if image not in rows:
            raise AimonkError(f"{where}: image {image!r} is not in {table.path}: are these the labels the tasks were "
                              "made from?")
        if attribute not in columns:
            raise AimonkError(f"{where}: attribute {attribute!r} is not one of {table.path}'s "
                              f"({', '.join(table.attributes)})")
        annotations = task.get("annotations") or []
        merge.unanswered += not annotations
        for annotation in annotations:
            if annotation.get("was_cancelled") or not annotation.get("result"):
                merge.cancelled += 1
                continue
            answers.setdefault((image, attribute), []).append(_answer(annotation["result"], where))
    for (image, attribute), given in answers.items():
        said = {answer for answer in given if answer is not None}
        i, j = rows[image], columns[attribute]
        known = bool(table.targets[i, j] > 0.5) if table.known[i, j] else None
        if not said:
            merge.cannot_tell += 1
        elif len(said) > 1:
            merge.conflicts.append(f"{image} {attribute}: annotators disagree ({_words(given)}); left "
                                   f"{_word(known)}")
        elif known is None:
            merge.fills[(image, attribute)] = said.pop()
        elif known in said:
            merge.already += 1
        elif prefer_answers:
            merge.fills[(image, attribute)] = said.pop()
            merge.conflicts.append(f"{image} {attribute}: labelled {_word(known)}, answered {_words(given)}; "
                                   "the answer written (--prefer-answers)")
        else:
            merge.conflicts.append(f"{image} {attribute}: labelled {_word(known)}, answered {_words(given)}; left "
                                   f"{_word(known)} (--prefer-answers writes the answer)")
    return merge


def _answer(result: list, where: str) -> bool | None:
    choices = [choice for region in result if isinstance(region, dict)
               for choice in (region.get("value") or {}).get("choices") or []]
    if len(choices) != 1 or choices[0] not in ANSWERS:
        raise AimonkError(f"{where}: answer {choices!r} is not one of present, absent, cannot tell (the labelling "
                          "config of docs/cli.md)")
    return ANSWERS[choices[0]]


def _word(value: bool | None) -> str:
    return "NA" if value is None else "present" if value else "absent"


def _words(answers: list[bool | None]) -> str:
    return ", ".join(map(_word, answers))


def merged_path(labels_path: str | Path) -> Path:
    """Where the merged labels go by default: beside the original, `<stem>.merged<suffix>`."""
    labels_path = Path(labels_path)
    return labels_path.with_name(f"{labels_path.stem}.merged{labels_path.suffix or '.txt'}")
