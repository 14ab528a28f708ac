"""Read `labels.txt`: one line per image, `image_0.jpg 1 NA 0 1` (1 present, 0 absent, NA unknown)."""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from aimonk.errors import LabelFileError
from aimonk.io import attribute_names_problem

VALUES = {"1": 1.0, "0": 0.0, "NA": None}


@dataclass(frozen=True)
class LabelTable:
    """The parsed labels: `targets[i, j]` is meaningful only where `known[i, j]` is True."""

    path: Path
    filenames: list[str]
    attributes: list[str]
    targets: np.ndarray  # float32 (images, attributes); 0.0 where unknown
    known: np.ndarray  # bool (images, attributes)

    def __len__(self) -> int:
        return len(self.filenames)

    def known_labels(self, attribute: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows whose label of `attribute` is known, a bool mask; those labels as bools, True = present)."""
        known = self.known[:, attribute]
        return known, self.targets[known, attribute] > 0.5

    def values(self, row: int) -> list[str]:
        """The labels of one image as written in labels.txt: `1`, `0` or `NA` per attribute."""
        return ["NA" if not known else str(int(value)) for value, known in zip(self.targets[row], self.known[row],
                                                                                 strict=True)]

    def positives(self) -> np.ndarray:
        """Known-present entries, bool (images, attributes)."""
        return self.known & (self.targets > 0.5)

    def shortages(self) -> list[str | None]:
        """Per attribute, why no model can judge it from these labels (`shortage`), or None."""
        return [shortage(int(known), int(positive))
                for known, positive in zip(self.known.sum(0), self.positives().sum(0), strict=True)]

    def hide(self, rows: np.ndarray, fraction: float = 0.0, keep: int = 0, seed: int = 0) -> LabelTable:
        """A copy with known labels of `rows` hidden (made NA) at random: a `fraction` of them, and/or all but
        `keep` per attribute (0: no limit). Other rows are untouched."""
        known = self.known.copy()
        rng = np.random.default_rng(seed)
        for j in range(len(self.attributes)):
            shown = np.asarray(rows)[known[rows, j]]
            hidden = rng.permutation(shown)[: round(fraction * len(shown))]
            if keep:
                hidden = np.union1d(hidden, rng.permutation(shown)[keep:])
            known[hidden, j] = False
        return LabelTable(self.path, list(self.filenames), list(self.attributes), self.targets * known, known)

    def subset(self, rows: list[int] | np.ndarray) -> LabelTable:
        """The table restricted to `rows`, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return LabelTable(
            self.path,
            [self.filenames[i] for i in rows],
            list(self.attributes),
            self.targets[rows],
            self.known[rows],
        )


def read_labels(path: str | Path) -> LabelTable:
    """Parse a labels file, rejecting anything doubtful with an error naming the file and line.

    Tolerates a UTF-8 BOM, CRLF or CR line ends, tabs or repeated spaces, blank lines and a missing final newline.
    An optional first line `filename Attr1 Attr2 ...` names the attributes (default `Attr1..AttrN`).
    Without a header the width is the one most rows have, so the error names the odd row even if it is the first.
    """
    path = Path(path)
    # Only CR/LF end a line (not str.splitlines' form feeds or U+2028), so line numbers match editors'.
    lines = _decode(path).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    numbered = [(number, line.split()) for number, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise LabelFileError(path, None, "no label lines (the file is empty or blank)")

    attributes = None
    if _is_header(numbered[0][1]):
        header_line, header = numbered.pop(0)
        attributes = header[1:]
        if len(set(attributes)) != len(attributes):
            raise LabelFileError(path, header_line, f"duplicate attribute names in header {attributes}")
        if problem := attribute_names_problem(attributes):
            raise LabelFileError(path, header_line, problem)
        if not numbered:
            raise LabelFileError(path, None, "a header but no label lines")

    width = len(attributes) + 1 if attributes else Counter(len(tokens) for _, tokens in numbered).most_common(1)[0][0]
    if width < 2:
        raise LabelFileError(path, numbered[0][0], "expected a filename followed by at least one value")
    filenames: list[str] = []
    first_seen: dict[str, int] = {}
    rows = np.zeros((len(numbered), width - 1), dtype=np.float32)
    known = np.zeros_like(rows, dtype=bool)
    for row, (number, tokens) in enumerate(numbered):
        if len(tokens) != width:
            raise LabelFileError(
                path, number, f"expected {width} columns (a filename and {width - 1} values), found {len(tokens)}"
            )
        name = tokens[0]
        _check_filename(path, number, name)
        key = PurePosixPath(name).as_posix()  # `a.jpg` and `./a.jpg` are one file
        if key in first_seen:
            raise LabelFileError(path, number, f"duplicate filename {name!r} (first on line {first_seen[key]})")
        first_seen[key] = number
        filenames.append(name)
        for column, token in enumerate(tokens[1:]):
            if token not in VALUES:
                raise LabelFileError(
                    path, number, f"value {token!r} in column {column + 2} is not one of 1, 0, NA"
                )
            value = VALUES[token]
            known[row, column] = value is not None
            rows[row, column] = value or 0.0
    names = attributes or [f"Attr{j + 1}" for j in range(width - 1)]
    return LabelTable(path, filenames, names, rows, known)


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LabelFileError(path, None, "labels file not found") from None
    except OSError as error:
        raise LabelFileError(path, None, f"cannot read labels file: {error.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise LabelFileError(path, line, "not valid UTF-8 text") from None


def _is_header(tokens: list[str]) -> bool:
    # A header names columns: no value is a label value and the first column is not a file name.
    return "." not in tokens[0] and not any(token in VALUES for token in tokens[1:])


def _check_filename(path: Path, line: int, name: str) -> None:
    if any(unicodedata.category(character) == "Cc" for character in name):
        raise LabelFileError(path, line, f"filename {name!r} contains a control character")
    pure = PurePosixPath(name)
    if "\\" in name or pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":"):
        raise LabelFileError(path, line, f"filename {name!r} points outside the image folder")


# Splits of the labelled images: stratified so that every part keeps each attribute's positives and NAs.


def strata(table: LabelTable) -> np.ndarray:
    """What a multi-label split balances, per image: each attribute's known positive, and each attribute's NA."""
    return np.concatenate([table.positives(), ~table.known], axis=1).astype(int)


def stratified_split(table: LabelTable, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, validation); `val_fraction=0` trains on everything.

    Iterative stratification balances, per attribute, both the positives and the NA entries, so every
    attribute keeps its prevalence and its share of unknowns in both parts.
    """
    rows = np.arange(len(table))
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0 or len(table) < 2:
        return rows, rows[:0]
    # Imported here: it pulls in scikit-learn (about 1 s), which `aimonk predict` never needs.
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train, val = next(splitter.split(rows.reshape(-1, 1), strata(table)))
    return np.sort(train), np.sort(val)


def stratified_folds(table: LabelTable, folds: int, seed: int) -> np.ndarray | None:
    """Each image's fold (stratified as `stratified_split`), or None if there are fewer than 2 images a fold."""
    if len(table) < 2 * folds:
        return None
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    fold = np.zeros(len(table), dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for index, (_, held_out) in enumerate(splitter.split(np.zeros((len(table), 1)), strata(table))):
        fold[held_out] = index
    return fold


def cross_fitting_folds(truth: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(fit, held-out) index pairs of the known labels of one attribute, stratified by class; None if either class
    has fewer labels than folds (cross-fitting would then leave a fold without it)."""
    truth = np.asarray(truth, dtype=bool)
    if min(truth.sum(), (~truth).sum()) < folds:
        return None
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(truth)), truth))


def shortage(known: int, positives: int) -> str | None:
    """Why an attribute with `known` labels, `positives` of them present, cannot be judged by any model: without a
    known positive (or negative) label there is nothing to learn or to check a probability against, so none is
    reported for it (a column just added to the labels file, say). None where both kinds are known."""
    if known == 0:
        return "no known label (all NA)"
    if positives == 0:
        return "no known positive label"
    if positives == known:
        return "no known negative label"
    return None
