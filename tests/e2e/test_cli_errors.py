"""The CLI on bad input: exit code 2 and one line on stderr naming the problem, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_dataset

from aimonk.cli import main
from aimonk.io import RUNS_FOLDER, STATE_FILE


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = write_dataset(tmp_path_factory.mktemp("data"), [f"img_{i}.jpg {i % 2} NA" for i in range(10)], size=32)
    out = tmp_path_factory.mktemp("model")
    assert main(["train", "--data-dir", str(data), "--out-dir", str(out), "--weights", "none", "--image-size", "32",
                 "--epochs", "1", "--workers", "0", "--no-progress"]) == 0
    return out / "aimonk_model.pth"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data", [f"img_{i}.jpg {i % 2} 1" for i in range(6)], size=32)


def _train(data: Path, *options: str) -> list[str]:
    """A short run into DATA/../out; --quiet: stderr holds warnings and errors alone."""
    return ["train", "--data-dir", str(data), "--out-dir", str(data.parent / "out"), "--weights", "none",
            "--image-size", "32", "--epochs", "1", "--workers", "0", "--quiet", *options]


def _one_error_line(capsys: pytest.CaptureFixture, *words: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aimonk: error: "), err
    assert all(word in err for word in words), err
    return err


def _break_labels(data: Path) -> Path:
    labels = data / "labels.txt"
    labels.write_text("img_0.jpg 1 0\nimg_1.jpg 1 N/A\n")
    return labels


def test_malformed_labels(data, capsys):
    labels = _break_labels(data)
    assert main(_train(data)) == 2
    _one_error_line(capsys, f"{labels}:2:", "'N/A'")


def test_missing_data_dir(tmp_path, capsys):
    assert main(_train(tmp_path / "nowhere")) == 2
    _one_error_line(capsys, str(tmp_path / "nowhere" / "labels.txt"), "not found")


def test_missing_image_folder(tmp_path, capsys):
    (tmp_path / "labels.txt").write_text("a.jpg 1\n")
    assert main(_train(tmp_path)) == 2
    _one_error_line(capsys, str(tmp_path / "images"), "image folder not found")


def test_labels_path_is_a_folder(data, capsys):
    assert main(_train(data, "--labels", str(data / "images"))) == 2
    _one_error_line(capsys, str(data / "images"), "cannot read labels file")


def test_no_usable_images(data, capsys):
    for image in (data / "images").iterdir():
        image.write_bytes(b"")
    assert main(_train(data)) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("aimonk: warning: skipping 6 unreadable image(s)") and len(err) == 2
    assert err[1].startswith("aimonk: error: ") and "no usable images" in err[1]


def test_strict_with_a_missing_image(data, capsys):
    (data / "images" / "img_3.jpg").unlink()
    assert main(_train(data, "--strict")) == 2
    _one_error_line(capsys, "1 missing image(s) (--strict): img_3.jpg")


@pytest.mark.parametrize(("option", "value", "words"), [("--epochs", "0", "epochs must be at least 1"),
                                                          ("--batch-size", "0", "batch_size must be at least 1"),
                                                          ("--lr", "-1", "lr must be positive"),
                                                          ("--val-fraction", "1", "val_fraction must be in [0, 1)")])
def test_out_of_range_options(data, capsys, option, value, words):
    assert main(_train(data, option, value)) == 2
    _one_error_line(capsys, words)


@pytest.mark.parametrize("weights", ["missing.pth", "folder", "text.pth"])
def test_bad_weights_path(data, capsys, weights):
    (data / "folder").mkdir()
    (data / "text.pth").write_text("not weights")
    assert main(_train(data, "--weights", str(data / weights))) == 2
    _one_error_line(capsys, str(data / weights))


def test_unknown_backbone(data, capsys):
    assert main(_train(data, "--backbone", "resnet9")) == 2
    _one_error_line(capsys, "unknown backbone 'resnet9'")


@pytest.mark.parametrize("kind", ["missing", "text", "training-state"])
def test_wrong_checkpoint_for_predict(model, data, tmp_path, capsys, kind):
    path = {"missing": tmp_path / "none.pth", "text": tmp_path / "text.pth",
            "training-state": model.parent / STATE_FILE}[kind]
    if kind == "text":
        path.write_text("hello")
    assert main(["predict", str(data / "images"), "--model", str(path)]) == 2
    _one_error_line(capsys, str(path))


def test_predict_prints_the_good_images_and_names_the_bad_ones(model, data, capsys):
    images = data / "images"
    (images / "img_2.jpg").write_text("not an image")
    paths = [images / "img_0.jpg", images / "img_2.jpg", images / "gone.jpg", images / "img_4.jpg"]
    assert main(["predict", *map(str, paths), "--model", str(model)]) == 1
    captured = capsys.readouterr()
    assert [line.split(": ")[0] for line in captured.out.splitlines()] == [str(paths[0]), str(paths[3])]
    note, *errors = captured.err.splitlines()
    assert note == ("aimonk: note: this model cannot judge Attr2 (no known label (all NA) in its training labels: no "
                    "probability): never reported present")  # trained on an Attr2 all NA
    assert len(errors) == 2
    assert errors[0].startswith(f"aimonk: error: {paths[1]}: cannot read image")
    assert errors[1] == f"aimonk: error: {paths[2]}: image file not found"


def test_predict_on_a_folder_without_images_is_an_error(model, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no images here")
    assert main(["predict", str(tmp_path), "--model", str(model)]) == 2
    _one_error_line(capsys, str(tmp_path), "no image files")


def test_the_real_command_prints_no_traceback(data):
    _break_labels(data)
    done = subprocess.run([sys.executable, "-m", "aimonk", *_train(data)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr == f"aimonk: error: {data / 'labels.txt'}:2: value 'N/A' in column 3 is not one of 1, 0, NA\n"
    assert done.stdout == ""


@pytest.mark.slow
def test_a_huge_labels_file_with_few_images_warns_briefly_and_lists_all_in_a_file(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", [f"img_{i}.jpg {i % 2} 1" for i in range(4)], size=32)
    names = [f"img_{i}.jpg" for i in range(200_000)]
    (data / "labels.txt").write_text("".join(f"{name} {i % 2} 1\n" for i, name in enumerate(names)))
    assert main(_train(data, "--val-fraction", "0")) == 0
    full_list = tmp_path / "out" / "missing_images.txt"
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and len(warning.encode()) < 1024, warning[:2000]
    assert warning == (f"aimonk: warning: skipping 199996 missing image(s): img_4.jpg, img_5.jpg, img_6.jpg, "
                       f"img_7.jpg, img_8.jpg, ... (full list in {full_list})\n")
    assert full_list.read_text().splitlines() == names[4:]


def test_strict_with_many_missing_images_is_one_short_line_and_a_full_list(data, capsys):
    missing = [f"gone_{i}.jpg" for i in range(50)]
    with open(data / "labels.txt", "a") as labels:
        labels.writelines(f"{name} 1 0\n" for name in missing)
    assert main(_train(data, "--strict")) == 2
    full_list = data.parent / "out" / "missing_images.txt"
    line = _one_error_line(capsys, "50 missing image(s) (--strict): gone_0.jpg, gone_1.jpg", str(full_list))
    assert len(line.encode()) < 1024
    assert full_list.read_text().splitlines() == missing


def _command(command: str, data: Path, device: str) -> list[str]:
    """`command` with arguments that would fail later (missing model, data) if the device were not refused first."""
    where = {"train": _train(data), "predict": ["predict", str(data / "images"), "--model", str(data / "none.pth")],
             "evaluate": ["evaluate", "--model", str(data / "none.pth"), "--data-dir", str(data / "nowhere")],
             "tune": ["tune", "--model", str(data / "none.pth"), "--data-dir", str(data / "nowhere")]}
    return [*where[command], "--device", device]


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "tune"])
@pytest.mark.parametrize("device", ["cdua", "beyond", "meta"])
def test_an_unusable_device_is_refused_first_in_one_line(data, capsys, command, device):
    if device == "beyond":  # an index past the last GPU, on any machine
        import torch

        device = f"cuda:{torch.cuda.device_count()}"
    assert main(_command(command, data, device)) == 2
    _one_error_line(capsys, f"--device {device}: ", "available: cpu")
    assert not (data.parent / "out").exists()


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "tune"])
def test_cuda_without_a_gpu_names_what_is_available(data, capsys, monkeypatch, command):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(_command(command, data, "cuda")) == 2
    _one_error_line(capsys, "aimonk: error: --device cuda: no CUDA GPU is available here (available: cpu")


def test_a_full_disk_in_the_output_folder_is_one_line_and_keeps_the_previous_outputs(data, capsys, full_disk):
    out = data.parent / "out"
    assert main(_train(data)) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    capsys.readouterr()
    full_disk(room=0, under=out)
    assert main(_train(data, "--lr", "1e-3")) == 2
    # The previous model moved (renames: no space needed) before the first epoch's row failed to be written
    _one_error_line(capsys, f"aimonk: error: {out / 'metrics.csv'}: cannot write: No space left on device\n")
    kept, = (out / RUNS_FOLDER).iterdir()
    assert {path.name: path.read_bytes() for path in kept.iterdir()} == before
    assert [path.name for path in out.iterdir()] == [RUNS_FOLDER]


@pytest.mark.slow
def test_a_write_the_kernel_refuses_is_one_line_and_leaves_no_temporary_file(data):
    """A real failed write, no root needed: files may not grow beyond 1 MiB (RLIMIT_FSIZE; SIGXFSZ ignored)."""
    import resource
    import signal

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, resource.RLIM_INFINITY))

    out = data.parent / "out"
    done = subprocess.run([sys.executable, "-m", "aimonk", *_train(data)], capture_output=True, text=True,
                          timeout=120, preexec_fn=limit_file_size)
    assert done.returncode == 2
    assert done.stderr.startswith(f"aimonk: error: {out}/") and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.endswith(".pth: cannot write: File too large\n"), done.stderr
    assert not [path for path in out.iterdir() if path.name.endswith(".tmp")]
