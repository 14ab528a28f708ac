"""The registry tables: plain dicts, filled by ordinary imports of the modules that own their entries. No module of
aimonk imports another by name, so import-linter sees every arrow of the house (a string import would hide one)."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from helpers import ROOT

from aimonk.errors import AimonkError
from aimonk.registry import NA_MODES, Registry


def test_no_module_imports_another_by_name():
    for path in sorted((ROOT / "aimonk").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
                    for alias in node.names}
        assert not {"import_module", "__import__"} & (names | imported), path


def _tables_after(statement: str) -> dict[str, list[str]]:
    listing = "{name: list(table) for name, table in vars(registry).items() if isinstance(table, registry.Registry)}"
    code = f"{statement}\nfrom aimonk import registry\nprint({listing})"
    return ast.literal_eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                           cwd=ROOT).stdout)


def test_importing_the_training_layer_fills_every_table_a_run_reads_and_the_labels_workflow_adds_its_mode():
    tables = _tables_after("import aimonk.train")
    assert all(tables.values()), tables
    assert {"adam", "lbfgs"} <= set(tables["SOLVERS"]) and {"bce", "focal", "asymmetric"} <= set(tables["LOSSES"])
    assert "self_train" not in tables["NA_MODES"]  # an extra's entry
    assert "self_train" in _tables_after("import aimonk.train, aimonk.labelling.selftrain")["NA_MODES"]
    assert _tables_after("import aimonk.config")["SOLVERS"] == []  # checking a setting loads no training code


def test_an_unknown_name_lists_the_choices_and_says_where_an_extras_entry_comes_from():
    table = Registry("colour")
    table.add("red", object(), "a colour")
    with pytest.raises(AimonkError, match=r"^unknown colour 'blue'; choose one of red$"):
        table["blue"]
    with pytest.raises(AimonkError, match="self_train is the labels workflow's: import aimonk.labelling.selftrain"):
        NA_MODES["a mode nobody registered"]


def test_a_family_makes_each_of_its_names_once_on_demand_and_lists_none_of_them():
    made = []
    table = Registry("colour")
    table.add("red", "RED", "a colour")
    table.add_family("paint:", lambda name: made.append(name) or name.upper(), "any paint")
    assert table["paint:blue"] == table["paint:blue"] == "BLUE" and made == ["blue"]
    assert list(table) == ["red"] and table.family_names == ["paint:NAME"]
    assert table.descriptions == {"red": "a colour", "paint:NAME": "any paint"}
    with pytest.raises(AimonkError, match=r"^unknown colour 'blue'; choose one of red, paint:NAME$"):
        table["blue"]
