"""Label tables as users have them: a CSV/TSV with a header, a pandas DataFrame, values 1/0/NA, CelebA's 1/-1 and
true/false. Each reads exactly as the same labels in labels.txt; every strict check of labels.txt holds, naming the
file, line and column; and `replace_labels` changes the fields asked for and not one other byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT

from aimonk.data.labels import LabelFormat, read_labels, replace_labels
from aimonk.errors import AimonkError, LabelFileError

N = None

# (id, file name, bytes, format options, expected filenames, attributes, values with None for NA)
ACCEPTED = [
    ("csv-empty-unknowns", "l.csv", b"image,Colour,Circle\na.jpg,1,\nb.jpg,0,1\n", {}, ["a.jpg", "b.jpg"],
     ["Colour", "Circle"], [[1, N], [0, 1]]),
    ("csv-NA-unknowns-crlf-bom", "l.csv", b"\xef\xbb\xbfimage,A,B\r\na.jpg,NA,1\r\nb.jpg,0,NA", {}, ["a.jpg", "b.jpg"],
     ["A", "B"], [[N, 1], [0, N]]),
    ("celeba-1-minus-1", "l.csv", b"image,A,B\na.jpg,1,-1\nb.jpg,-1,\n", {}, ["a.jpg", "b.jpg"], ["A", "B"],
     [[1, 0], [0, N]]),
    ("true-false", "l.csv", b"image,A,B\na.jpg,TRUE,false\nb.jpg,,True\n", {}, ["a.jpg", "b.jpg"], ["A", "B"],
     [[1, 0], [N, 1]]),
    ("tsv-with-spaces-in-names", "l.tsv", b"file name\tHas hat\tB\na b.jpg\t1\t0\n", {}, ["a b.jpg"],
     ["Has hat", "B"], [[1, 0]]),
    ("txt-that-is-a-csv", "labels.txt", b"image,A\na.jpg,1\n", {}, ["a.jpg"], ["A"], [[1]]),
    ("semicolons-sniffed", "l.csv", b"image;A;B\na.jpg;1;0\n", {}, ["a.jpg"], ["A", "B"], [[1, 0]]),
    ("quoted-cells-and-blanks", "l.csv", b'"image","A, big","B"\n "a,1.jpg" , 1 ,"0"\n\n', {}, ["a,1.jpg"],
     ["A, big", "B"], [[1, 0]]),
    ("columns-chosen-by-name", "l.csv", b"A,notes,path,B\n1,x,a.jpg,0\n0,y,b.jpg,\n",
     {"filename_column": "path", "attributes": ("B", "A")}, ["a.jpg", "b.jpg"], ["B", "A"], [[0, 1], [N, 0]]),
    ("values-given", "l.csv", b"image,A\na.jpg,yes\nb.jpg,no\nc.jpg,?\n", {"values": "yes,no,?"},
     ["a.jpg", "b.jpg", "c.jpg"], ["A"], [[1], [0], [N]]),
    ("delimiter-given", "labels.dat", b"image|A\na.jpg|1\n", {"delimiter": "|"}, ["a.jpg"], ["A"], [[1]]),
    ("whitespace-values-given", "labels.txt", b"a.jpg 1 -1\nb.jpg -1 0\n", {"values": "1,-1,0"}, ["a.jpg", "b.jpg"],
     ["Attr1", "Attr2"], [[1, 0], [0, N]]),
]

# (id, file name, bytes, format options, line named (None: the file), words the message must contain)
REJECTED = [
    ("duplicate-name", "l.csv", b"image,A\na.jpg,1\nb.jpg,0\na.jpg,1\n", {}, 4,
     "duplicate filename 'a.jpg' (first on line 2)"),
    ("value-2", "l.csv", b"image,A,B\na.jpg,1,0\nb.jpg,0,2\n", {}, 3, "value '2' in column 3 (B) is not one of"),
    ("value-nan", "l.csv", b"image,A\na.jpg,nan\n", {}, 2, "'nan'"),
    ("value-1.0", "l.csv", b"image,A\na.jpg,1.0\n", {}, 2, "'1.0'"),
    ("minus-1-and-0-ambiguous", "l.csv", b"image,A,B\na.jpg,1,-1\nb.jpg,0,1\n", {}, 2, "--values"),
    ("mixed-true-and-1", "l.csv", b"image,A\na.jpg,true\nb.jpg,1\n", {}, 3, "'1'"),
    ("short-row", "l.csv", b"image,A,B\na.jpg,1\n", {}, 2, "expected 3 columns (as the header has), found 2"),
    ("long-row", "l.csv", b"image,A,B\na.jpg,1,0,1\n", {}, 2, "found 4"),
    ("trailing-comma", "l.csv", b"image,A\na.jpg,1,\n", {}, 2, "found 3"),
    ("empty-file", "l.csv", b"", {}, None, "empty"),
    ("bom-and-blanks-only", "l.csv", b"\xef\xbb\xbf\r\n  \n", {}, None, "empty"),
    ("header-only", "l.csv", b"image,A,B\n", {}, None, "a header but no label lines"),
    ("one-column", "l.csv", b"image\na.jpg\n", {}, 1, "at least one attribute column"),
    ("duplicate-column", "l.csv", b"image,A,A\na.jpg,1,0\n", {}, 1, "duplicate column name 'A'"),
    ("bad-attribute-name", "l.csv", b"image,a/b\nx.jpg,1\n", {}, 1, "contains a path separator"),
    ("empty-filename", "l.csv", b"image,A\n,1\n", {}, 2, "empty filename in column 1 (image)"),
    ("outside-the-folder", "l.csv", b"image,A\n../x.jpg,1\n", {}, 2, "outside the image folder"),
    ("control-character", "l.csv", b"image,A\nb\x01.jpg,1\n", {}, 2, "control character"),
    ("latin-1", "l.csv", b"image,A\ncaf\xe9.jpg,1\n", {}, 2, "not valid UTF-8"),
    ("unclosed-quote", "l.csv", b'image,A\n"a.jpg,1\n', {}, 2, "quote opened in column 1 is not closed"),
    ("no-such-filename-column", "l.csv", b"image,A\na.jpg,1\n", {"filename_column": "path"}, 1,
     "no column 'path' (--filename-column); the columns are image, A"),
    ("no-such-attribute", "l.csv", b"image,A\na.jpg,1\n", {"attributes": ("A", "Z")}, 1,
     "no column 'Z' (--attributes)"),
    ("value-not-the-given-encoding", "l.csv", b"image,A\na.jpg,1\nb.jpg,\n", {"values": "1,0,NA"}, 3,
     "value '' in column 2 (A) is not one of 1, 0, NA"),
]


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(("name", "content", "options", "filenames", "attributes", "values"),
                         [case[1:] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED])
def test_delimited_tables_are_read_exactly(tmp_path, name, content, options, filenames, attributes, values):
    table = read_labels(_write(tmp_path, name, content), LabelFormat(**options))
    assert (table.filenames, table.attributes) == (filenames, attributes)
    assert table.known.tolist() == [[value is not None for value in row] for row in values]
    assert table.targets.tolist() == [[float(value or 0) for value in row] for row in values]


@pytest.mark.parametrize(("name", "content", "options", "line", "words"), [case[1:] for case in REJECTED],
                         ids=[case[0] for case in REJECTED])
def test_every_strict_check_holds_for_a_csv_naming_file_line_and_column(tmp_path, name, content, options, line,
                                                                        words):
    path = _write(tmp_path, name, content)
    with pytest.raises(LabelFileError) as caught:
        read_labels(path, LabelFormat(**options))
    assert str(caught.value).startswith(f"{path}:{line}: " if line is not None else f"{path}: ")
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_values_that_are_not_three_words_are_refused_in_one_line(tmp_path):
    with pytest.raises(AimonkError, match="--values takes PRESENT,ABSENT,UNKNOWN"):
        read_labels(_write(tmp_path, "l.csv", b"image,A\na.jpg,1\n"), LabelFormat(values="1,1,NA"))


def demo_as(table, delimiter: str, spelling: dict[str, str], header: str = "image") -> str:
    """The demo's labels as a delimited table with a header, each value spelled as `spelling` says."""
    lines = [delimiter.join([header, *table.attributes])]
    lines += [delimiter.join([name, *(spelling[value] for value in table.values(i))])
              for i, name in enumerate(table.filenames)]
    return "\n".join(lines) + "\n"


CSV = {"1": "1", "0": "0", "NA": ""}  # header, empty unknowns
CELEBA = {"1": "1", "0": "-1", "NA": ""}


def test_the_demo_as_csv_as_celeba_values_and_as_a_dataframe_is_the_same_table(tmp_path):
    given = read_labels(ROOT / "labels.txt")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(demo_as(given, ",", CSV))
    celeba = tmp_path / "labels.tsv"
    celeba.write_text(demo_as(given, "\t", CELEBA))
    frame = pd.read_csv(csv_path)  # floats with NaN for the empty cells, as pandas reads them
    for table in (read_labels(csv_path), read_labels(celeba), read_labels(frame)):
        assert (table.filenames, table.attributes) == (given.filenames, given.attributes)
        assert np.array_equal(table.known, given.known) and np.array_equal(table.targets, given.targets)


def test_a_dataframe_is_checked_as_a_file_is_naming_the_row():
    frame = pd.DataFrame({"image": ["a.jpg", "b.jpg", "a.jpg"], "A": [1, 0, 1]})
    with pytest.raises(LabelFileError, match=r"<DataFrame>:4: duplicate filename 'a.jpg' \(first on line 2\)"):
        read_labels(frame)


# Byte-faithful editing: the output differs from the input in exactly the fields replaced.
ODD_TXT = (b"\xef\xbb\xbffilename\tA\tB\tC\r\n"
           b"  image_0.png\tNA\t0\tNA\r\n"
           b"\r\n"
           b"image_1.png  1   NA  0 \r\n"
           b"\timage_2.png NA NA NA")  # BOM, CRLF, tabs, leading and trailing blanks, a blank line, no final newline
ODD_CSV = (b"\xef\xbb\xbfimage, A ,B\r\n"
           b'"image_0.png", ,-1\r\n'
           b"image_1.png,1,NA\r\n"
           b"image_2.png,\"\",-1")


@pytest.mark.parametrize(("name", "content", "changes", "expected"), [
    ("labels.txt", ODD_TXT, {("image_0.png", "C"): True, ("image_2.png", "A"): False},
     ODD_TXT.replace(b"\t0\tNA\r\n", b"\t0\t1\r\n").replace(b"\timage_2.png NA", b"\timage_2.png 0")),
    ("labels.txt", ODD_TXT, {}, ODD_TXT),
    ("labels.csv", ODD_CSV, {("image_0.png", "A"): True, ("image_1.png", "B"): False, ("image_2.png", "A"): True},
     ODD_CSV.replace(b'.png", ,-1', b'.png", 1,-1').replace(b"1,NA", b"1,-1").replace(b'"",-1', b"1,-1")),
], ids=["txt-two-fills", "txt-nothing-filled", "csv-quoted-blank-celeba"])
def test_replace_labels_changes_exactly_the_fields_asked_for(tmp_path, name, content, changes, expected):
    path = _write(tmp_path, name, content)
    assert replace_labels(path, changes) == expected
    assert path.read_bytes() == content
    after = _write(tmp_path, f"after{path.suffix}", expected)
    before, changed = read_labels(path), read_labels(after)
    for (image, attribute), value in changes.items():
        i, j = changed.filenames.index(image), changed.attributes.index(attribute)
        assert changed.known[i, j] and changed.targets[i, j] == float(value)
    untouched = np.ones(before.known.shape, bool)
    for image, attribute in changes:
        untouched[before.filenames.index(image), before.attributes.index(attribute)] = False
    assert np.array_equal(changed.known[untouched], before.known[untouched])
