"""Read label tables: `labels.txt` (`image_0.jpg 1 NA 0 1`: 1 present, 0 absent, NA unknown), a CSV/TSV with a
header, or a pandas DataFrame; and replace given fields of a labels file keeping every other byte.

One tokeniser gives each line's cells with their positions, so reading and editing see the same cells, and every
error names the file, the line and the column.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from aimonk.config import values_problem
from aimonk.errors import AimonkError, LabelFileError
from aimonk.io import attribute_names_problem

VALUES = {"1": 1.0, "0": 0.0, "NA": None}  # labels.txt's values
DELIMITED = {".csv": None, ".tsv": "\t"}  # suffixes read as delimited tables (None: the delimiter is sniffed)
LINE_END = re.compile(r"(\r\n|\r|\n)")  # only CR/LF end a line (not form feeds or U+2028): line numbers match editors'


@dataclass(frozen=True)
class Encoding:
    """How a table writes present, absent and unknown (the first spelling of each is the one written)."""

    present: tuple[str, ...]
    absent: tuple[str, ...]
    unknown: tuple[str, ...]

    def value(self, token: str) -> float | None | bool:
        """1.0, 0.0, None (unknown), or False where `token` is none of them."""
        return 1.0 if token in self.present else 0.0 if token in self.absent else None if token in self.unknown \
            else False

    def token(self, value: bool | None) -> str:
        return self.unknown[0] if value is None else self.present[0] if value else self.absent[0]

    def __str__(self) -> str:
        return ", ".join(repr(t) if not t else t for t in (self.present[0], self.absent[0], self.unknown[0]))


DEFAULT = Encoding(("1",), ("0",), ("NA",))
TRUTHS = ("true", "True", "TRUE"), ("false", "False", "FALSE")
# What a delimited table may use, detected where unambiguous: 1/0, CelebA's 1/-1, true/false; unknown empty or NA.
DETECTED = {"1,0": Encoding(("1",), ("0",), ("", "NA")), "1,-1": Encoding(("1",), ("-1",), ("", "NA")),
            "true,false": Encoding(*TRUTHS, ("", "NA"))}


def parse_values(text: str) -> Encoding:
    """`--values PRESENT,ABSENT,UNKNOWN` (`1,0,NA`, `1,-1,`, `true,false,`): refused unless three distinct words."""
    if problem := values_problem(text):
        raise AimonkError(f"--values {problem}")
    return Encoding(*((part,) for part in text.split(",")))


@dataclass(frozen=True)
class LabelFormat:
    """How to read a label table: which column names the images, which are attributes, how values are written, the
    delimiter. None everywhere: labels.txt as always, a .csv/.tsv (or a file whose first line has a comma) as a
    delimited table with a header, its first column the filename, all others attributes, values detected.
    (A first line with more commas than blank-separated words is a CSV's header, whatever the suffix.)"""

    filename_column: str | None = None
    attributes: tuple[str, ...] | None = None
    values: str | None = None  # PRESENT,ABSENT,UNKNOWN
    delimiter: str | None = None  # `,`, `;`, `\t` (or `tab`)

    @classmethod
    def of(cls, settings: Any) -> LabelFormat:
        """The format a TrainConfig (or its `to_dict()`, as a checkpoint stores it) names."""
        get = settings.get if isinstance(settings, Mapping) else lambda name: getattr(settings, name, None)
        names = get("attributes")
        return cls(get("filename_column"), tuple(names.split(",")) if names else None, get("values"),
                   get("delimiter"))

    def settings(self) -> dict[str, str | None]:
        """As TrainConfig's settings (what `of` reads)."""
        return {"filename_column": self.filename_column, "attributes": ",".join(self.attributes) if self.attributes
                else None, "values": self.values, "delimiter": self.delimiter}


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


Cell = tuple[int, int, str]  # start and end of the cell's text in its line, and the text


@dataclass
class Parsed:
    """A label table as found in its text: the lines and their ends alternately (`pieces`), each label row's line
    (index into pieces, 1-based number) and cells, the columns used, the encoding of its values."""

    path: Path
    pieces: list[str]
    bom: bool
    rows: list[tuple[int, int, list[Cell]]]
    filename_column: int
    attribute_columns: list[int]
    attributes: list[str]
    encoding: Encoding

    def table(self) -> LabelTable:
        filenames: list[str] = []
        first_seen: dict[str, int] = {}
        targets = np.zeros((len(self.rows), len(self.attribute_columns)), dtype=np.float32)
        known = np.zeros_like(targets, dtype=bool)
        for row, (_, number, cells) in enumerate(self.rows):
            name = cells[self.filename_column][2]
            _check_filename(self.path, number, name)
            key = PurePosixPath(name).as_posix()  # `a.jpg` and `./a.jpg` are one file
            if key in first_seen:
                raise LabelFileError(self.path, number,
                                     f"duplicate filename {name!r} (first on line {first_seen[key]})")
            first_seen[key] = number
            filenames.append(name)
            for j, column in enumerate(self.attribute_columns):
                value = self.encoding.value(cells[column][2])
                known[row, j] = value is not None
                targets[row, j] = value or 0.0
        return LabelTable(self.path, filenames, list(self.attributes), targets, known)


def read_labels(source: str | Path | Any, label_format: LabelFormat | None = None) -> LabelTable:
    """Parse a labels file (or a pandas DataFrame), rejecting anything doubtful with an error naming the file, line
    and column.

    labels.txt tolerates a UTF-8 BOM, CRLF or CR line ends, tabs or repeated spaces, blank lines and a missing final
    newline; an optional first line `filename Attr1 Attr2 ...` names the attributes (default `Attr1..AttrN`); without
    a header the width is the one most rows have, so the error names the odd row even if it is the first. A CSV/TSV
    (see `LabelFormat`) has a header; quoted cells as in RFC 4180, on one line each.
    """
    if not isinstance(source, (str, Path)):
        return parse_frame(source, label_format or LabelFormat()).table()
    return parse_file(Path(source), label_format or LabelFormat()).table()


def parse_file(path: Path, label_format: LabelFormat) -> Parsed:
    """The label rows of a labels file and where each cell is, checked (all but the filenames: `Parsed.table`)."""
    data = _read_bytes(path)
    bom = data.startswith(b"\xef\xbb\xbf")
    pieces = LINE_END.split(_decode(path, data[3:] if bom else data))
    lines = [(index, index // 2 + 1, pieces[index]) for index in range(0, len(pieces), 2) if pieces[index].strip()]
    if not lines:
        raise LabelFileError(path, None, "no label lines (the file is empty or blank)")
    delimiter = _delimiter(path, label_format, lines[0][2])
    if delimiter is None:
        rows = [(index, number, _words(line)) for index, number, line in lines]
        return _whitespace_table(path, pieces, bom, rows, label_format)
    rows = [(index, number, _delimited_cells(path, number, line, delimiter)) for index, number, line in lines]
    return _delimited_table(path, pieces, bom, rows, label_format)


def parse_frame(frame: Any, label_format: LabelFormat) -> Parsed:
    """A pandas DataFrame as a delimited table: its columns the header, each row a line (numbered from 2, as in the
    CSV the frame would write); a missing value is an empty cell, True/False are `true`/`false`."""
    def text(value: object) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) in ("nan", "<NA>", "NaT"):
            return ""
        if isinstance(value, (bool, np.bool_)):
            return "true" if value else "false"
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return str(int(value))
        return str(value)

    header = [str(name) for name in frame.columns]
    rows = [(0, 1, [(0, 0, name) for name in header])]
    rows += [(0, number, [(0, 0, text(value)) for value in values])
             for number, values in enumerate(frame.itertuples(index=False, name=None), start=2)]
    return _delimited_table(Path("<DataFrame>"), [], False, rows, label_format)


def _whitespace_table(path: Path, pieces: list[str], bom: bool, rows: list, label_format: LabelFormat) -> Parsed:
    encoding = parse_values(label_format.values) if label_format.values else DEFAULT
    words = set(VALUES) | set(encoding.present + encoding.absent + encoding.unknown)
    header, header_line = None, rows[0][1]
    if "." not in rows[0][2][0][2] and not any(cell[2] in words for cell in rows[0][2][1:]):  # names, not values
        header = [cell[2] for cell in rows[0][2]]
        rows.pop(0)
        _check_header(path, header_line, header[1:])
        if not rows:
            raise LabelFileError(path, None, "a header but no label lines")
    width = len(header) if header else Counter(len(cells) for _, _, cells in rows).most_common(1)[0][0]
    if width < 2:
        raise LabelFileError(path, rows[0][1], "expected a filename followed by at least one value")
    for _, number, cells in rows:
        if len(cells) != width:
            raise LabelFileError(
                path, number, f"expected {width} columns (a filename and {width - 1} values), found {len(cells)}"
            )
    names = header or ["filename", *(f"Attr{j}" for j in range(1, width))]
    filename_column, attribute_columns = _columns(path, header_line, names, label_format)
    return _checked(Parsed(path, pieces, bom, rows, filename_column, attribute_columns,
                           [names[c] for c in attribute_columns], encoding), named=False)


def _delimited_table(path: Path, pieces: list[str], bom: bool, rows: list, label_format: LabelFormat) -> Parsed:
    header_line, header = rows[0][1], [cell[2] for cell in rows[0][2]]
    rows = rows[1:]
    if len(header) < 2:
        raise LabelFileError(path, header_line, "expected a header naming a filename column and at least one "
                             f"attribute column, found {len(header)} column")
    if duplicated := [name for name, count in Counter(header).items() if count > 1]:
        raise LabelFileError(path, header_line, f"duplicate column name {duplicated[0]!r} in the header")
    if not rows:
        raise LabelFileError(path, None, "a header but no label lines")
    for _, number, cells in rows:
        if len(cells) != len(header):
            raise LabelFileError(path, number, f"expected {len(header)} columns (as the header has), found "
                                 f"{len(cells)}")
    filename_column, attribute_columns = _columns(path, header_line, header, label_format)
    _check_header(path, header_line, [header[c] for c in attribute_columns])
    for _, number, cells in rows:
        if not cells[filename_column][2]:
            raise LabelFileError(path, number, f"empty filename in column {filename_column + 1} "
                                 f"({header[filename_column]})")
    encoding = parse_values(label_format.values) if label_format.values else _detected(path, rows, attribute_columns)
    return _checked(Parsed(path, pieces, bom, rows, filename_column, attribute_columns,
                           [header[c] for c in attribute_columns], encoding), named=True)


def _checked(parsed: Parsed, named: bool) -> Parsed:
    """The table, refused at the first value that is not of its encoding: its line and column (and the column's
    name, where `named`: a header names every column of a CSV)."""
    for _, number, cells in parsed.rows:
        for column, name in zip(parsed.attribute_columns, parsed.attributes, strict=True):
            if parsed.encoding.value(cells[column][2]) is False:
                where = f"column {column + 1} ({name})" if named else f"column {column + 1}"
                raise LabelFileError(parsed.path, number, f"value {cells[column][2]!r} in {where} is not one of "
                                     f"{parsed.encoding}")
    return parsed


def _detected(path: Path, rows: list, columns: list[int]) -> Encoding:
    """The encoding of a delimited table's values, where unambiguous: true/false if any cell says so, 1/-1 if any
    cell is -1 (refused if 0 occurs too: 0 could then be absent or unknown), else 1/0; unknown empty or NA."""
    cells = [(number, column, cells[column][2]) for _, number, cells in rows for column in columns]
    seen = {text for _, _, text in cells}
    if seen & set(TRUTHS[0] + TRUTHS[1]):
        return DETECTED["true,false"]
    if "-1" in seen:
        if "0" in seen:
            number, column, _ = next(cell for cell in cells if cell[2] in ("0", "-1"))
            raise LabelFileError(path, number, f"values '-1' and '0' both occur (column {column + 1} first): say what "
                                 "they mean with --values PRESENT,ABSENT,UNKNOWN (e.g. --values 1,-1,0)")
        return DETECTED["1,-1"]
    return DETECTED["1,0"]


def _columns(path: Path, header_line: int, header: list[str], label_format: LabelFormat) -> tuple[int, list[int]]:
    """The filename column and the attribute columns (by `label_format`'s names; default the first, and the rest)."""
    def position(name: str, option: str) -> int:
        if name not in header:
            raise LabelFileError(path, header_line, f"no column {name!r} ({option}); the columns are "
                                 f"{', '.join(header)}")
        return header.index(name)

    filename = position(label_format.filename_column, "--filename-column") if label_format.filename_column else 0
    if label_format.attributes:
        attributes = [position(name, "--attributes") for name in label_format.attributes]
        if filename in attributes:
            raise LabelFileError(path, header_line, f"column {header[filename]!r} is the filename column, not an "
                                 "attribute")
    else:
        attributes = [column for column in range(len(header)) if column != filename]
    return filename, attributes


def _check_header(path: Path, line: int, attributes: list[str]) -> None:
    if len(set(attributes)) != len(attributes):
        raise LabelFileError(path, line, f"duplicate attribute names in header {attributes}")
    if problem := attribute_names_problem(attributes):
        raise LabelFileError(path, line, problem)


def _delimiter(path: Path, label_format: LabelFormat, first_line: str) -> str | None:
    """None for labels.txt's whitespace; else the delimiter given, the suffix's, or sniffed from the first line."""
    given = label_format.delimiter
    if given:
        return "\t" if given in ("tab", "\\t", "\t") else given
    suffix = path.suffix.lower()
    if suffix not in DELIMITED and len(first_line.split(",")) <= len(first_line.split()):  # no more commas than words
        return None
    if DELIMITED.get(suffix):
        return DELIMITED[suffix]
    try:
        return csv.Sniffer().sniff(first_line, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _words(line: str) -> list[Cell]:
    return [(match.start(), match.end(), match.group()) for match in re.finditer(r"\S+", line)]


def _delimited_cells(path: Path, number: int, line: str, delimiter: str) -> list[Cell]:
    """The cells of one line of a delimited table: blanks around a cell are not part of it; a quoted cell (RFC 4180:
    `"a,b"`, `""` for a quote) is its text between the quotes, and spans them."""
    cells, position = [], 0
    while True:
        start = position
        while start < len(line) and line[start] in " \t" and line[start] != delimiter:
            start += 1
        if start < len(line) and line[start] == '"':
            end, text = start + 1, []
            while True:
                quote = line.find('"', end)
                if quote < 0:
                    raise LabelFileError(path, number, f"a quote opened in column {len(cells) + 1} is not closed on "
                                         "its line")
                text.append(line[end:quote])
                if line[quote + 1 : quote + 2] == '"':
                    text.append('"')
                    end = quote + 2
                    continue
                end = quote + 1
                break
            after = line.find(delimiter, end)
            after = len(line) if after < 0 else after
            if line[end:after].strip():
                raise LabelFileError(path, number, f"text after the closing quote in column {len(cells) + 1}")
            cells.append((start, end, "".join(text)))
        else:
            after = line.find(delimiter, start)
            after = len(line) if after < 0 else after
            text = line[start:after].rstrip(" \t") if delimiter != "\t" else line[start:after].rstrip(" ")
            cells.append((start, start + len(text), text))
        if after >= len(line):
            return cells
        position = after + len(delimiter)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise LabelFileError(path, None, "labels file not found") from None
    except OSError as error:
        raise LabelFileError(path, None, f"cannot read labels file: {error.strerror}") from None


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise LabelFileError(path, line, "not valid UTF-8 text") from None


def _check_filename(path: Path, line: int, name: str) -> None:
    if any(unicodedata.category(character) == "Cc" for character in name):
        raise LabelFileError(path, line, f"filename {name!r} contains a control character")
    pure = PurePosixPath(name)
    if "\\" in name or pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":"):
        raise LabelFileError(path, line, f"filename {name!r} points outside the image folder")


def replace_labels(path: str | Path, changes: Mapping[tuple[str, str], bool | None],
                   label_format: LabelFormat | None = None) -> bytes:
    """The bytes of the labels file at `path` with the fields of `changes` ((image, attribute) -> present, absent,
    unknown) written in the file's own encoding of values, and every other byte as it was (separators, blanks,
    BOM, line ends, a missing final newline, the header, quoting). KeyError for an image or attribute not in it."""
    parsed = parse_file(Path(path), label_format or LabelFormat())
    table = parsed.table()  # the same checks as any reading
    rows = {name: row for row, name in enumerate(table.filenames)}
    columns = dict(zip(parsed.attributes, parsed.attribute_columns, strict=True))
    edits: dict[int, list[tuple[int, int, str]]] = {}
    for (image, attribute), value in changes.items():
        index, _, cells = parsed.rows[rows[image]]
        start, end, _ = cells[columns[attribute]]
        edits.setdefault(index, []).append((start, end, parsed.encoding.token(value)))
    pieces = list(parsed.pieces)
    for index, spans in edits.items():
        line = pieces[index]
        for start, end, text in sorted(spans, reverse=True):  # from the right: earlier positions stay valid
            line = line[:start] + text + line[end:]
        pieces[index] = line
    return (b"\xef\xbb\xbf" if parsed.bom else b"") + "".join(pieces).encode("utf-8")


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
