"""A command never writes over a file it reads or that the user did not ask it to write, and every command that
writes into a folder holds that folder's lock (docs/validation.md, "Nothing lost")."""

from __future__ import annotations

import io
import shutil
import signal
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from helpers import ROOT, train_cached

from aimonk.cli import main
from aimonk.config import TrainConfig
from aimonk.io import output_lock

IMAGES = ROOT / "images"


def _run(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


@pytest.fixture
def model(tiny_model: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "models" / "aimonk_model.pth"
    copy.parent.mkdir()
    shutil.copy(tiny_model, copy)
    return copy


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    return [Path(shutil.copy(IMAGES / f"image_{i}.jpg", folder)) for i in range(2)]


def _unchanged(paths: list[Path], before: dict[Path, bytes]) -> bool:
    return all(path.read_bytes() == before[path] for path in paths)


@pytest.mark.parametrize("case", ["forgotten csv name", "csv is the model", "csv is an input image"])
def test_predict_never_writes_its_csv_over_an_input(model, images, case):
    before = {path: path.read_bytes() for path in [model, *images]}
    first, second = map(str, images)
    argv = {"forgotten csv name": ["--csv", first, second],  # the CSV's name forgotten: the image is taken for it
            "csv is the model": [first, "--csv", str(model)],
            "csv is an input image": [first, second, "--csv", str(images[1].with_suffix(".csv"))]}[case]
    if case == "csv is an input image":  # an input that happens to be a .csv name: still refused
        shutil.copy(images[1], images[1].with_suffix(".csv"))
        argv = [first, str(images[1].with_suffix(".csv")), "--csv", str(images[1].with_suffix(".csv"))]
    code, err = _run("predict", "--model", str(model), *argv)
    assert code == 2 and err.count("\n") == 1 and "so not written" in err and "(--csv" in err, err
    assert _unchanged([model, *images], before)


def test_export_never_replaces_the_checkpoint_it_reads(model):
    before = model.read_bytes()
    for out in (model, model.with_name("copy.pth")):
        code, err = _run("export", "--model", str(model), "--out", str(out))
        assert code == 2 and err.count("\n") == 1 and f"aimonk: error: {out}: " in err and "--out" in err, err
    assert model.read_bytes() == before and not model.with_name("copy.pth").exists()


def test_evaluate_never_writes_its_csv_over_the_labels(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("image_0.jpg 1\n")
    code, err = _run("evaluate", "--model", str(tmp_path / "m.pth"), "--labels", str(labels), "--csv", str(labels))
    assert code == 2 and "is a file this command reads" in err and labels.read_text() == "image_0.jpg 1\n"


def test_tune_waits_for_no_one_a_folder_in_use_is_refused_and_the_checkpoint_kept(model):
    before = model.read_bytes()
    with output_lock(model.parent):  # as a running `aimonk train` into the model's folder holds it
        code, err = _run("tune", "--model", str(model), "--data-dir", str(ROOT))
    assert code == 2 and err.count("\n") == 1 and f"{model.parent}: in use by process" in err, err
    assert model.read_bytes() == before


@pytest.mark.parametrize("command", ["predict", "evaluate", "explain", "export", "demo"])
def test_every_command_that_writes_into_a_folder_holds_its_lock(model, images, tmp_path, command):
    out = tmp_path / "out"
    argv = {"predict": ["predict", str(images[0]), "--model", str(model), "--csv", str(out / "p.csv")],
            "evaluate": ["evaluate", "--model", str(model), "--data-dir", str(ROOT), "--csv", str(out / "e.csv")],
            "explain": ["explain", str(images[0]), "--model", str(model), "--out", str(out)],
            "export": ["export", "--model", str(model), "--out", str(out / "m.onnx")],
            "demo": ["demo", "--out-dir", str(out), "--n-images", "2"]}[command]
    with output_lock(out):
        code, err = _run(*argv)
    assert code == 2 and f"{out}: in use by process" in err, err
    assert sorted(path.name for path in out.iterdir()) == []  # nothing written, the lock file gone with the lock


def test_a_model_trained_on_every_image_is_refused_by_tune_and_evaluate_each_with_its_own_advice(tmp_path):
    config = TrainConfig(data_dir=str(ROOT), out_dir=str(tmp_path), weights="none", image_size=32, epochs=1,
                         val_fraction=0, workers=0, progress=False, labels=str(_few_labels(tmp_path)))
    model = train_cached(config).model_path
    code, err = _run("tune", "--model", str(model), "--labels", config.labels, "--data-dir", str(ROOT))
    assert code == 2 and "no validation images" in err and "--all" not in err  # tune has no --all
    code, err = _run("evaluate", "--model", str(model), "--labels", config.labels, "--data-dir", str(ROOT))
    assert code == 2 and "no validation images" in err and "with --all" in err


def _few_labels(tmp_path: Path) -> Path:
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(line + "\n" for line in (ROOT / "labels.txt").read_text().splitlines()[:12]))
    return labels


@pytest.mark.slow
def test_sigterm_stops_predict_like_ctrl_c_and_the_previous_csv_stays_whole(model, tmp_path):
    out = tmp_path / "predictions.csv"
    out.write_text("previous\n")
    command = [sys.executable, "-m", "aimonk", "predict", str(IMAGES), "--model", str(model), "--csv", str(out),
               "--workers", "0", "--batch-size", "1"]
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        assert run.stdout.readline()  # predicting
        run.send_signal(signal.SIGTERM)  # what docker stop, Slurm and systemd send
        _, err = run.communicate(timeout=60)
    assert run.returncode == 130 and err.strip().endswith("aimonk: interrupted"), err
    assert out.read_text() == "previous\n"  # and neither a temporary file nor the lock left beside it:
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["predictions.csv"]
