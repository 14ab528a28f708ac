"""Output files: short messages about long lists of names, with the full list in a file."""

from __future__ import annotations

from pathlib import Path

from aimonk.outputs import listed


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
