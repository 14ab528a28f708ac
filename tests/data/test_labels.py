"""labels.txt parsing: odd but valid files are read exactly; malformed ones are rejected naming file and line. The
splits of a table: seeded, a partition of the rows, and stratified per attribute over positives and NAs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, label_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimonk.data.labels import LabelTable, read_labels, stratified_folds, stratified_split
from aimonk.errors import LabelFileError
from aimonk.io import NAME_RULE

N = None  # an unknown (NA) label in the expected tables below

# (id, file bytes, expected filenames, expected attributes, expected values with None for NA)
ACCEPTED = [
    ("plain", b"a.jpg 1 0\nb.jpg NA 1\n", ["a.jpg", "b.jpg"], None, [[1, 0], [N, 1]]),
    ("utf8-bom", b"\xef\xbb\xbfa.jpg 1 0\nb.jpg 0 1\n", ["a.jpg", "b.jpg"], None, [[1, 0], [0, 1]]),
    ("crlf", b"a.jpg 1 0\r\nb.jpg 0 NA\r\n", ["a.jpg", "b.jpg"], None, [[1, 0], [0, N]]),
    ("cr-only", b"a.jpg 1 0\rb.jpg 0 1\r", ["a.jpg", "b.jpg"], None, [[1, 0], [0, 1]]),
    ("tabs", b"a.jpg\t1\t0\nb.jpg\t\tNA\t0\n", ["a.jpg", "b.jpg"], None, [[1, 0], [N, 0]]),
    ("stray-spaces", b"  a.jpg   1  0   \n\tb.jpg 0 1 \t\n", ["a.jpg", "b.jpg"], None, [[1, 0], [0, 1]]),
    ("blank-lines-middle-and-end", b"\na.jpg 1 0\n\n  \nb.jpg 0 1\n\n\n", ["a.jpg", "b.jpg"], None, [[1, 0], [0, 1]]),
    ("no-final-newline", b"a.jpg 1 0\nb.jpg 0 1", ["a.jpg", "b.jpg"], None, [[1, 0], [0, 1]]),
    ("all-na", b"a.jpg NA NA\nb.jpg NA NA\n", ["a.jpg", "b.jpg"], None, [[N, N], [N, N]]),
    ("header", b"filename Smile Hat\na.jpg 1 0\n", ["a.jpg"], ["Smile", "Hat"], [[1, 0]]),
    ("header-after-blank-with-crlf-bom", b"\xef\xbb\xbf\r\nimage Red Big Old\r\na.jpg 1 NA 0\r\n",
     ["a.jpg"], ["Red", "Big", "Old"], [[1, N, 0]]),
    ("subfolder-and-non-ascii-name", "sub/a.jpg 1\ncafé.jpg 0\n".encode(), ["sub/a.jpg", "café.jpg"], None, [[1], [0]]),
    ("png-and-no-extension-names", b"a.png 1 1\nb 0 0\n", ["a.png", "b"], None, [[1, 1], [0, 0]]),
    ("no-extension-first-and-one-value", b"a 1\nb.jpg 0\n", ["a", "b.jpg"], None, [[1], [0]]),  # not a header
    ("unicode-attribute-names", "filename Größe 日本 café\na.jpg 1 0 NA\n".encode(), ["a.jpg"],
     ["Größe", "日本", "café"], [[1, 0, N]]),
    ("attribute-names-near-the-name-rule", b"filename Image images p_ x_p_y a.b pp_a\na.jpg 1 0 1 0 1 NA\n", ["a.jpg"],
     ["Image", "images", "p_", "x_p_y", "a.b", "pp_a"], [[1, 0, 1, 0, 1, N]]),
    ("filename-column-named-error", b"error Hat p_Smile\na.jpg 1 0\n", ["a.jpg"], ["Hat", "p_Smile"], [[1, 0]]),
]

# (id, file bytes, line named in the error (None: the whole file), words the message must contain)
REJECTED = [
    ("short-row", b"a.jpg 1 0\nb.jpg 1\nc.jpg 0 1\n", 2, "expected 3 columns"),
    ("long-row", b"a.jpg 1 0\nb.jpg 1 0 1\nc.jpg 0 1\n", 2, "found 4"),
    ("short-first-row", b"a.jpg 1\nb.jpg 1 0\nc.jpg 0 1\n", 1, "expected 3 columns"),
    ("single-column", b"a.jpg\nb.jpg\n", 1, "at least one value"),
    ("value-2", b"a.jpg 1 0\nb.jpg 2 0\n", 2, "'2'"),
    ("value-N/A", b"a.jpg 1 0\nb.jpg 0 N/A\n", 2, "'N/A'"),
    ("value-nan", b"a.jpg 1 0\n\nb.jpg nan 0\n", 3, "'nan'"),
    ("value-minus-1", b"a.jpg -1 0\n", 1, "'-1'"),
    ("value-yes", b"a.jpg 1 0\nb.jpg yes 0\n", 2, "'yes'"),
    ("value-lowercase-na", b"a.jpg na 0\n", 1, "'na'"),
    ("value-1.0", b"a.jpg 1.0 0\n", 1, "'1.0'"),
    ("duplicate-name", b"a.jpg 1 0\nb.jpg 0 1\na.jpg 1 1\n", 3, "duplicate filename 'a.jpg' (first on line 1)"),
    ("duplicate-after-normalising", b"a.jpg 1\n./a.jpg 0\n", 2, "duplicate"),
    ("empty-file", b"", None, "empty"),
    ("blank-only", b"  \n\t\n\r\n\n", None, "empty"),
    ("bom-only", b"\xef\xbb\xbf", None, "empty"),
    ("header-only", b"filename A B\n", None, "header but no label lines"),
    ("duplicate-attribute", b"filename A A\na.jpg 1 0\n", 1, "duplicate attribute"),
    ("header-width-mismatch", b"filename A B\na.jpg 1 0 1\n", 2, "expected 3 columns"),
    ("parent-dir", b"a.jpg 1\n../x.jpg 0\n", 2, "outside the image folder"),
    ("nested-parent-dir", b"a.jpg 1\nsub/../../x.jpg 0\n", 2, "outside the image folder"),
    ("absolute-path", b"/etc/x.jpg 1\n", 1, "outside the image folder"),
    ("windows-drive", b"a.jpg 1\nC:\\x.jpg 1\n", 2, "outside the image folder"),
    ("drive-relative", b"a.jpg 1\nC:x.jpg 0\n", 2, "outside the image folder"),
    ("bare-drive", b"a.jpg 1\nC: 0\n", 2, "outside the image folder"),
    ("backslash-parent", b"..\\x.jpg 1\n", 1, "outside the image folder"),
    ("nul-in-name", b"a.jpg 1\nb\x00.jpg 0\n", 2, "control character"),
    ("latin-1-bytes", b"a.jpg 1\ncaf\xe9.jpg 0\n", 2, "not valid UTF-8"),
    ("utf-16", "a.jpg 1\n".encode("utf-16"), 1, "not valid UTF-8"),
]


# Attribute names that would break `aimonk explain`'s file names or `aimonk predict --csv`'s columns:
# (id, file bytes, line of the header, the reason given before the rule)
BAD_NAMES = [
    ("slash", b"filename size/large Hat\na.jpg 1 0\n", 1, "attribute name 'size/large' contains a path separator"),
    ("backslash", b"filename Hat size\\large\na.jpg 1 0\n", 1,
     "attribute name 'size\\\\large' contains a path separator"),
    ("dot", b"filename . Hat\na.jpg 1 0\n", 1, "attribute name '.' starts with '.'"),
    ("dot-dot", b"filename Hat ..\na.jpg 1 0\n", 1, "attribute name '..' starts with '.'"),
    ("hidden", b"filename .Hat Smile\na.jpg 1 0\n", 1, "attribute name '.Hat' starts with '.'"),
    ("image", b"filename image Hat\na.jpg 1 0\n", 1, "attribute name 'image' is one of the CSV's own columns"),
    ("error", b"filename Hat error\na.jpg 1 0\n", 1, "attribute name 'error' is one of the CSV's own columns"),
    ("case", b"filename Hat hat\na.jpg 1 0\n", 1, "attribute names 'Hat' and 'hat' are equal ignoring case"),
    ("p-prefix", b"filename Hat p_hat\na.jpg 1 0\n", 1, "attribute names 'Hat' and 'p_hat': one is 'p_' + the other"),
    ("p-prefix-first", b"filename P_HAT Smile Hat\na.jpg 1 0 1\n", 1,
     "attribute names 'P_HAT' and 'Hat': one is 'p_' + the other"),
    ("delete-character", b"filename Hat\x7f Smile\na.jpg 1 0\n", 1,
     "attribute name 'Hat\\x7f' contains a control character"),
    ("c1-control", "filename Hat Sm\x9bile\na.jpg 1 0\n".encode(), 1,
     "attribute name 'Sm\\x9bile' contains a control character"),
    ("bell-after-blank-line-and-bom", b"\xef\xbb\xbf\r\nfilename Ha\x07t\r\na.jpg 1\r\n", 2,
     "attribute name 'Ha\\x07t' contains a control character"),
]


def _write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "labels.txt"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(("content", "filenames", "attributes", "values"),
                         [case[1:] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED])
def test_odd_but_valid_files_are_read_exactly(tmp_path, content, filenames, attributes, values):
    table = read_labels(_write(tmp_path, content))
    width = len(values[0])
    assert table.filenames == filenames
    assert table.attributes == (attributes or [f"Attr{j + 1}" for j in range(width)])
    assert table.known.tolist() == [[value is not None for value in row] for row in values]
    assert table.targets.tolist() == [[float(value or 0) for value in row] for row in values]
    assert table.targets.dtype == np.float32 and not np.isnan(table.targets).any()


@pytest.mark.parametrize(("content", "line", "words"), [case[1:] for case in REJECTED], ids=[c[0] for c in REJECTED])
def test_malformed_files_are_rejected_naming_file_and_line(tmp_path, content, line, words):
    path = _write(tmp_path, content)
    with pytest.raises(LabelFileError) as caught:
        read_labels(path)
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(caught.value).startswith(where)
    assert words in str(caught.value)
    assert caught.value.line == line


@pytest.mark.parametrize(("content", "line", "reason"), [case[1:] for case in BAD_NAMES], ids=[c[0] for c in BAD_NAMES])
def test_attribute_names_that_break_file_names_or_csv_columns_are_refused_with_the_rule(tmp_path, content, line,
                                                                                         reason):
    path = _write(tmp_path, content)
    with pytest.raises(LabelFileError) as caught:
        read_labels(path)
    assert str(caught.value) == f"{path}:{line}: {reason}; {NAME_RULE}"
    assert caught.value.line == line and "\n" not in str(caught.value)


def test_missing_labels_file_is_named(tmp_path):
    with pytest.raises(LabelFileError, match=r"labels\.txt: labels file not found"):
        read_labels(tmp_path / "labels.txt")


def test_values_and_positives_read_back_what_the_file_says(tmp_path):
    table = read_labels(_write(tmp_path, b"a.jpg 1 NA 0\nb.jpg NA 0 1\n"))
    assert [table.values(row) for row in range(2)] == [["1", "NA", "0"], ["NA", "0", "1"]]
    assert table.positives().tolist() == [[True, False, False], [False, False, True]]
    known, present = table.known_labels(2)
    assert known.tolist() == [True, True] and present.tolist() == [False, True]


def test_subset_keeps_rows_in_the_order_asked(tmp_path):
    table = read_labels(_write(tmp_path, b"a.jpg 1 0\nb.jpg NA 1\nc.jpg 0 0\n"))
    part = table.subset([2, 0])
    assert part.filenames == ["c.jpg", "a.jpg"]
    assert part.known.tolist() == [[True, True], [True, True]]
    assert part.targets.tolist() == [[0, 0], [1, 0]]


# --- property-based: any valid table in any tolerated formatting round-trips; any single bad token is caught ---

NAME_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x2FFF, blacklist_characters="\\/:.",
                           blacklist_categories=("Cc", "Cf", "Cn", "Co", "Cs", "Zl", "Zp", "Zs"))
IDENTIFIER = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=8)
GAP = st.sampled_from([" ", "\t", "  ", " \t ", "\t\t"])
MARGIN = st.sampled_from(["", " ", "\t", "  "])


def _one_is_p_another(names: list[str]) -> bool:
    lowered = {name.lower() for name in names}
    return any(f"p_{name}" in lowered for name in lowered)


@st.composite
def tables(draw: st.DrawFn) -> dict:
    """A valid table: unique file names, values from 1/0/NA, optional header of attribute names that are unique
    ignoring case, none `p_` + another, none a column of `predict --csv` (`image`, `error`)."""
    width = draw(st.integers(1, 5))
    stems = draw(st.lists(st.text(NAME_CHARS, min_size=1, max_size=10), min_size=1, max_size=12, unique=True))
    extension = draw(st.sampled_from([".jpg", ".png", ".JPEG"]))
    rows = [[stem + extension] + draw(st.lists(st.sampled_from(["1", "0", "NA"]),
                                                                 min_size=width, max_size=width))
            for stem in stems]
    header = None
    if draw(st.booleans()):
        header = ["filename"] + draw(st.lists(IDENTIFIER.filter(lambda name: name not in ("NA", "image", "error")),
                                              min_size=width, max_size=width, unique_by=str.lower)
                                     .filter(lambda names: not _one_is_p_another(names)))
    return {"rows": rows, "header": header}


@st.composite
def formatted(draw: st.DrawFn, table: dict) -> tuple[bytes, list[int]]:
    """`table` written with random tolerated formatting, and the file line number of each data row."""
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines: list[str] = []
    numbers: list[int] = []
    for position, tokens in enumerate(([table["header"]] if table["header"] else []) + table["rows"]):
        lines.extend(draw(st.lists(MARGIN, max_size=2)))  # blank or whitespace-only lines
        gaps = draw(st.lists(GAP, min_size=len(tokens) - 1, max_size=len(tokens) - 1))
        body = tokens[0] + "".join(gap + token for gap, token in zip(gaps, tokens[1:], strict=True))
        lines.append(draw(MARGIN) + body + draw(MARGIN))
        if position or not table["header"]:
            numbers.append(len(lines))
    lines.extend(draw(st.lists(MARGIN, max_size=2)))
    text = newline.join(lines) + (newline if draw(st.booleans()) else "")
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + text).encode(), numbers


PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_any_valid_table_in_any_tolerated_formatting_round_trips(tmp_path, data):
    table = data.draw(tables())
    content, _ = data.draw(formatted(table))
    parsed = read_labels(_write(tmp_path, content))
    width = len(table["rows"][0]) - 1
    assert parsed.filenames == [row[0] for row in table["rows"]]
    assert parsed.attributes == (table["header"][1:] if table["header"] else [f"Attr{j + 1}" for j in range(width)])
    assert parsed.known.tolist() == [[value != "NA" for value in row[1:]] for row in table["rows"]]
    assert parsed.targets.tolist() == [[1.0 if value == "1" else 0.0 for value in row[1:]] for row in table["rows"]]


# What a spreadsheet, a pandas export or a tired person writes instead of 1, 0 or NA: all must be refused.
NEAR_MISSES = ("nan", "NaN", "na", "Na", "nA", "N/A", "n/a", "NULL", "None", "?", "-", "1.0", "0.0", "1.", "1e0",
               "01", "00", "+1", "-1", "-0", "2", "true", "false", "True", "yes", "no", "\uff11", "\uff10",
               "\uff2e\uff21", '"1"', "'NA'", "NA.", "1,", "0;")
BAD_VALUE = st.one_of(st.sampled_from(NEAR_MISSES), st.text(st.characters(blacklist_categories=("Cs",)), min_size=1,
                                                            max_size=6)).filter(
    lambda token: token not in ("0", "1", "NA") and not any(c.isspace() for c in token)
)
BAD_NAME = st.sampled_from(["../x.jpg", "/abs/x.jpg", "a/../../x.jpg", "C:\\x.jpg", "x\x00.jpg", "x\x07.jpg"])


@PROPERTY_SETTINGS
@given(data=st.data())
def test_any_single_corrupted_token_is_rejected_naming_its_line(tmp_path, data):
    table = data.draw(tables())
    rows = table["rows"]
    row = data.draw(st.integers(0, len(rows) - 1))
    kind = data.draw(st.sampled_from(["value", "name", "drop", "extra", "duplicate"]))
    if kind == "value":
        rows[row][data.draw(st.integers(1, len(rows[row]) - 1))] = data.draw(BAD_VALUE)
    elif kind == "name":
        rows[row][0] = data.draw(BAD_NAME)
    elif kind in ("drop", "extra") and (table["header"] or len(rows) >= 3):  # the other rows set the width
        rows[row].pop() if kind == "drop" else rows[row].append(data.draw(st.sampled_from(["1", "0", "NA"])))
    elif kind == "duplicate" and row > 0:
        rows[row][0] = rows[data.draw(st.integers(0, row - 1))][0]
    else:
        return  # this corruption is undetectable here (e.g. a width change on a one-row file)
    content, numbers = data.draw(formatted(table))
    with pytest.raises(LabelFileError) as caught:
        read_labels(_write(tmp_path, content))
    assert caught.value.line == numbers[row], str(caught.value)
    assert str(caught.value).startswith(f"{tmp_path / 'labels.txt'}:{numbers[row]}: ")


@pytest.mark.parametrize("value", NEAR_MISSES)
@settings(PROPERTY_SETTINGS, max_examples=6)
@given(data=st.data())
def test_a_near_miss_value_is_rejected_wherever_it_stands(tmp_path, value, data):
    table = data.draw(tables())
    row = data.draw(st.integers(0, len(table["rows"]) - 1))
    table["rows"][row][data.draw(st.integers(1, len(table["rows"][row]) - 1))] = value
    content, numbers = data.draw(formatted(table))
    with pytest.raises(LabelFileError) as caught:
        read_labels(_write(tmp_path, content))
    assert str(caught.value).startswith(f"{tmp_path / 'labels.txt'}:{numbers[row]}: ")
    assert repr(value) in str(caught.value)


def test_hiding_labels_touches_only_the_given_rows_and_hides_the_share_or_all_but_k(tmp_path):
    rows = [f"img_{i}.jpg {i % 2} {(i // 2) % 2} {'NA' if i % 7 == 0 else 1}" for i in range(40)]
    (tmp_path / "labels.txt").write_text("\n".join(rows) + "\n")
    table = read_labels(tmp_path / "labels.txt")
    train = np.arange(30)
    half = table.hide(train, fraction=0.5, seed=1)
    assert np.array_equal(half.known[30:], table.known[30:])  # validation rows untouched
    assert np.all(np.abs(half.known[train].sum(0) - table.known[train].sum(0) / 2) <= 0.5)
    assert not (half.known & ~table.known).any() and np.all(half.targets[~half.known] == 0)
    three = table.hide(train, keep=3, seed=1)
    assert np.all(three.known[train].sum(0) == 3)
    assert not np.array_equal(table.hide(train, 0.5, seed=1).known, table.hide(train, 0.5, seed=2).known)


# (file bytes, the whole message after "path:line: " or "path: ")
MESSAGES = [
    (b"a.jpg 1 0\nb.jpg 1\n", "expected 3 columns (a filename and 2 values), found 2"),
    (b"a.jpg 1 0 1\nb.jpg 1 0 NA\nc.jpg 0 2 1\n", "value '2' in column 3 is not one of 1, 0, NA"),
    (b"a.jpg\nb.jpg\n", "expected a filename followed by at least one value"),
    (b" \n", "no label lines (the file is empty or blank)"),
    (b"filename A B\n", "a header but no label lines"),
    (b"a.jpg 1\ncaf\xe9.jpg 0\n", "not valid UTF-8 text"),
]


@pytest.mark.parametrize(("content", "message"), MESSAGES)
def test_each_error_message_says_exactly_what_is_wrong(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(LabelFileError) as caught:
        read_labels(path)
    assert str(caught.value).split(": ", 1)[1] == message  # after "path:line" or "path"


def test_an_unreadable_labels_file_is_named_with_the_reason(tmp_path):
    folder = tmp_path / "labels.txt"
    folder.mkdir()
    with pytest.raises(LabelFileError) as caught:
        read_labels(folder)
    assert str(caught.value) == f"{folder}: cannot read labels file: Is a directory"
    assert caught.value.path == folder and caught.value.line is None


def test_the_table_remembers_its_file_and_hiding_keeps_it_names_and_seed_zero(tmp_path):
    path = _write(tmp_path, "".join(f"img_{i}.jpg {i % 2} 1\n" for i in range(20)).encode())
    table = read_labels(path)
    assert table.path == path
    hidden = table.hide(np.arange(20), fraction=0.5)
    assert (hidden.path, hidden.filenames, hidden.attributes) == (path, table.filenames, table.attributes)
    assert np.array_equal(hidden.known, table.hide(np.arange(20), fraction=0.5, seed=0).known)


# --- the train/validation split (stratified_split): stratification is what keeps validation metrics and tuned
# thresholds honest: validation must hold its share of every attribute's positives (a rare attribute's few
# included) and of its unknown labels ---


SEEDS = range(4)


def rare_attribute_table(rows: int = 600) -> LabelTable:
    """Eight attributes from common (50 %) to rare (6 to 13 positives in 600), with 0 to 30 % NA each."""
    rng = np.random.default_rng(0)
    prevalence = np.array([0.5, 0.3, 0.1, 0.04, 0.03, 0.02, 0.02, 0.015])
    na_rate = np.array([0.1, 0.3, 0.05, 0.2, 0.02, 0.1, 0.0, 0.15])
    targets = rng.random((rows, prevalence.size)) < prevalence
    known = rng.random((rows, prevalence.size)) >= na_rate
    return label_table(targets, known)


def assert_stratified(table: LabelTable, val: np.ndarray, fraction: float) -> None:
    """Validation holds `fraction` of each attribute's positives and of its NAs, to within one image.

    A plain random split of the demo labels misses by 3 to 7 images on some attribute (for every seed tried); one
    stratified on positives alone misses the NAs by 2 to 9. Iterative stratification stays within 0.8.
    """
    positives, unknown = table.positives(), ~table.known
    for name, entries in (("positives", positives), ("NAs", unknown)):
        expected = fraction * entries.sum(axis=0)
        found = entries[val].sum(axis=0)
        assert np.all(np.abs(found - expected) <= 1), f"{name} in validation {found}, expected about {expected}"
    # What that means for the rates the metrics see: within a few points of the whole set.
    rate = positives.sum(axis=0) / table.known.sum(axis=0)
    val_rate = positives[val].sum(axis=0) / table.known[val].sum(axis=0)
    np.testing.assert_allclose(val_rate, rate, atol=0.04, err_msg="positive rate among known labels")
    np.testing.assert_allclose(unknown[val].mean(axis=0), unknown.mean(axis=0), atol=0.02, err_msg="NA rate")


@pytest.mark.parametrize("seed", SEEDS)
def test_demo_labels_are_split_with_each_attributes_positives_and_nas_in_proportion(seed: int):
    table = read_labels(ROOT / "labels.txt")
    train, val = stratified_split(table, 0.2, seed)
    assert_stratified(table, val, 0.2)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(table)))  # a partition
    assert 0.18 < len(val) / len(table) < 0.22


@pytest.mark.parametrize("fraction", [0.2, 0.3])
@pytest.mark.parametrize("seed", SEEDS)
def test_rare_attributes_keep_their_share_of_positives_in_validation(seed: int, fraction: float):
    table = rare_attribute_table()
    train, val = stratified_split(table, fraction, seed)
    assert_stratified(table, val, fraction)
    assert not set(train) & set(val) and len(train) + len(val) == len(table)


def test_the_split_is_a_function_of_the_seed():
    table = rare_attribute_table()
    first, again, other = (stratified_split(table, 0.2, seed)[1] for seed in (0, 0, 1))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_two_images_split_one_and_one_and_a_single_image_trains():
    train, val = stratified_split(label_table([[1], [0]]), 0.5, 0)
    assert sorted([*train, *val]) == [0, 1] and len(train) == len(val) == 1
    train, val = stratified_split(label_table([[1]]), 0.5, 0)
    assert train.tolist() == [0] and val.size == 0


def test_no_validation_split_trains_on_everything():
    table = rare_attribute_table(20)
    train, val = stratified_split(table, 0.0, 0)
    assert np.array_equal(train, np.arange(20)) and val.size == 0
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(table, 1.0, 0)


def test_labels_with_unknowns_are_split_without_numpy_warnings():
    """Strata come from the known positives without dividing by the known mask (0/0 warns at every NA)."""
    rng = np.random.default_rng(0)
    table = label_table(rng.random((40, 2)) < 0.5, rng.random((40, 2)) < 0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, val = stratified_split(table, 0.25, 0)
    assert len(val) == 10 and len(train) == 30


# --- folds of the training images (stratified_folds), for the choice of L2 ---


def test_folds_of_images_share_out_each_attributes_positives_and_nas_and_repeat_for_a_seed():
    """40 images: A positive in 8, B unknown in 8; 4 folds get 10 images, 2 of A's positives and 2 of B's NAs each."""
    targets = np.array([[i % 5 == 0, i % 2 == 0 and i % 5 != 1] for i in range(40)], dtype=np.float32)
    known = np.array([[True, i % 5 != 1] for i in range(40)])
    table = LabelTable(Path("labels.txt"), [f"{i}.jpg" for i in range(40)], ["A", "B"], targets, known)
    fold = stratified_folds(table, 4, seed=0)
    assert fold.dtype == np.int64
    assert np.bincount(fold).tolist() == [10, 10, 10, 10]
    assert np.bincount(fold[table.positives()[:, 0]]).tolist() == [2, 2, 2, 2]
    assert np.bincount(fold[~table.known[:, 1]]).tolist() == [2, 2, 2, 2]
    assert np.array_equal(stratified_folds(table, 4, seed=0), fold)
    assert not np.array_equal(stratified_folds(table, 4, seed=1), fold)
    # Two images per fold at least, or no folds (lbfgs then uses one L2 for every attribute).
    assert stratified_folds(table.subset(np.arange(8)), 4, seed=0) is not None
    assert stratified_folds(table.subset(np.arange(7)), 4, seed=0) is None
