"""`torchrun --standalone --nproc_per_node=2` on CPUs (gloo) against one process.

The same split and training (loss history within float reduction order), files written by rank 0 alone, every image
predicted once and in order, unusable images reported once, and a job that loses a rank (SIGKILL) or is stopped
with Ctrl-C resumes to the history of an uninterrupted run. Each launch costs a few seconds of start-up, so the
checks share few launches.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, cached_entries, needs_gloo, write_dataset

from aimonk.cache.folders import MARKER
from aimonk.cache.store import decode
from aimonk.checkpoint import load_checkpoint, load_train_state
from aimonk.cli import main
from aimonk.data.images import image_files
from aimonk.io import (
    CARD_FILE,
    CURVE_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    STATE_FILE,
    VALIDATION_CURVE_FILE,
)
from aimonk.model.classifier import build_model

pytestmark = [needs_gloo, pytest.mark.slow]

# Measured here: the 2-process loss history differs from one process's by at most 2e-7 (float reduction order).
TOLERANCE = 1e-5
OUTPUTS = {MODEL_FILE, HISTORY_FILE, CURVE_FILE, STATE_FILE, CARD_FILE, METRICS_FILE, VALIDATION_CURVE_FILE}


def _torchrun(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "aimonk",
            *arguments]


def _run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(_torchrun(*arguments), capture_output=True, text=True, timeout=300)


def _start(*arguments: str) -> subprocess.Popen:
    return subprocess.Popen(_torchrun(*arguments), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _aimonk_lines(stderr: str) -> list[str]:
    """What aimonk itself said (torchrun adds its own log lines and failure report)."""
    return [line for line in stderr.splitlines() if line.startswith("aimonk:")]


def _history(out: Path) -> list[float]:
    with open(out / HISTORY_FILE, newline="") as file:
        return [float(loss) for _, loss in list(csv.reader(file))[1:]]


def _assert_close(history: list[float], reference: list[float]) -> None:
    assert len(history) == len(reference)
    assert max(abs(a - b) for a, b in zip(history, reference, strict=True)) <= TOLERANCE


def _demo_training(out: Path, cache: Path) -> list[str]:
    return ["train", "--data-dir", str(ROOT), "--out-dir", str(out), "--cache-dir", str(cache), "--weights", "none",
            "--image-size", "32", "--epochs", "2", "--lr", "1e-3", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The demo data trained by one process (here) and by two (torchrun), each extracting into its own cache."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    assert main(_demo_training(one / "out", one / "cache")) == 0
    run = _run(*_demo_training(two / "out", two / "cache"))
    assert run.returncode == 0, run.stderr
    return {"one": one, "two": two, "run": run}


def test_two_processes_train_like_one_and_only_rank_0_writes(trained):
    one, two, run = trained["one"], trained["two"], trained["run"]
    assert run.stdout.count("trained on ") == 1 and _aimonk_lines(run.stderr) == []
    assert {path.name for path in (two / "out").iterdir()} == OUTPUTS
    assert sorted(path.relative_to(two) for path in two.rglob("*") if path.is_file() and "cache" not in path.parts) \
        == sorted(Path("out") / name for name in OUTPUTS)  # rank 1 wrote nothing beside
    cached = [path.name for path in (two / "cache").rglob("*") if path.is_file()]
    # Each image once, in a shard of each process; the cache folder's key and marker, no temporary file left.
    assert cached_entries(two / "cache") == 400 and sum(name.startswith("shard-") for name in cached) == 2
    assert sorted(name for name in cached if not name.startswith("shard-")) == \
        sorted(["key.json", MARKER, "digests.npz", "digests.lock"])
    [index] = (two / "cache").rglob("digests.npz")
    assert len(decode(index.read_bytes())) == 400  # the index: both processes' digests, merged
    [line] = [line for line in run.stdout.splitlines() if line.startswith("trained on ")]
    assert " images by 2 processes, " in line and ", 0 of 400 images' features from the cache; " in line

    single, double = load_checkpoint(one / "out" / MODEL_FILE), load_checkpoint(two / "out" / MODEL_FILE)
    assert double["train_files"] == single["train_files"] and double["val_files"] == single["val_files"]
    for name, value in single["state_dict"].items():
        torch.testing.assert_close(double["state_dict"][name], value, rtol=0, atol=TOLERANCE)
    _assert_close(_history(two / "out"), _history(one / "out"))


def test_predict_with_two_processes_prints_every_image_once_in_order(trained, tmp_path, capsys):
    model, images = str(trained["two"] / "out" / MODEL_FILE), str(ROOT / "images")
    options = ["--model", model, "--json", "--batch-size", "7"]  # 400 images: 29 rounds, the last one partial
    assert main(["predict", images, *options]) == 0
    expected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    run = _run("predict", images, *options, "--csv", str(tmp_path / "predictions.csv"))
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [record["image"] for record in records] == [str(path) for path in image_files([images])]
    for record, reference in zip(records, expected, strict=True):
        assert record["image"] == reference["image"]
        assert max(abs(record["probabilities"][name] - p) for name, p in reference["probabilities"].items()) <= 1e-3
    with open(tmp_path / "predictions.csv", newline="") as file:
        assert [row[0] for row in list(csv.reader(file))[1:]] == [record["image"] for record in records]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """41 small images, one of them unreadable (in rank 1's share: rank 0 reports it)."""
    rows = [f"img_{i}.jpg {i % 2} {'NA' if i % 5 == 0 else (i // 2) % 2} {(i // 3) % 2}" for i in range(41)]
    data = write_dataset(tmp_path_factory.mktemp("data"), rows, size=32)
    (data / "images" / "img_5.jpg").write_bytes(b"not an image")
    return data


def _training(data: Path, out: Path, *options: str) -> list[str]:
    """A small backbone, so that saving the state at every step (--checkpoint-every 1) stays quick."""
    return ["train", "--data-dir", str(data), "--out-dir", str(out), "--cache-dir", str(data.parent / "cache"),
            "--backbone", "mobilenet_v3_small", "--weights", "none", "--image-size", "32", "--batch-size", "4",
            "--epochs", "4", "--workers", "0", "--no-progress", *options]


def _saves(state: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until `state` has been written `count` times (each save is a new file renamed over the last)."""
    seen, last, deadline = 0, None, time.monotonic() + timeout
    while seen < count:
        assert process.poll() is None, f"exited early: {process.communicate()[1]}"
        assert time.monotonic() < deadline, "timed out"
        try:
            status = state.stat()
        except FileNotFoundError:
            status = None
        if status and (status.st_ino, status.st_mtime_ns) != last:
            seen, last = seen + 1, (status.st_ino, status.st_mtime_ns)
        time.sleep(0.001)


def _worker(launcher: subprocess.Popen, rank: int) -> int:
    """The process id of the launcher's worker of that rank (from /proc: its parent and its RANK variable)."""
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == launcher.pid and f"RANK={rank}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except (OSError, ValueError, IndexError):
            continue
    raise AssertionError(f"no worker of rank {rank}")


@pytest.fixture(scope="module")
def reference(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> list[float]:
    """The loss history of an uninterrupted run, by one process."""
    out = tmp_path_factory.mktemp("reference")
    assert main(_training(dataset, out)) == 0
    return _history(out)


def test_a_killed_rank_then_ctrl_c_leave_states_that_resume_to_the_uninterrupted_history(dataset, reference,
                                                                                         tmp_path):
    out = tmp_path / "out"
    launcher = _start(*_training(dataset, out, "--checkpoint-every", "1"))
    _saves(out / STATE_FILE, 3, launcher)
    os.kill(_worker(launcher, 1), signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    warnings = [line for line in _aimonk_lines(stderr) if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("aimonk: warning: skipping 1 unreadable image(s)")
    killed = len(load_train_state(out)["history"])  # the state is intact
    assert 3 <= killed < len(reference)
    assert STATE_FILE in {path.name for path in out.iterdir()} <= {STATE_FILE, "unreadable_images.txt"}

    launcher = _start("train", "--resume", "--out-dir", str(out), "--no-progress")  # under torchrun again
    _saves(out / STATE_FILE, 2, launcher)
    os.killpg(launcher.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert [line for line in _aimonk_lines(stderr) if "warning" not in line] == [
        f"aimonk: interrupted; state saved, continue with: torchrun ... -m aimonk train --resume --out-dir {out}"]
    assert killed < len(load_train_state(out)["history"]) < len(reference)

    assert main(["train", "--resume", "--out-dir", str(out), "--no-progress"]) == 0  # by one process, this time
    _assert_close(_history(out), reference)


def test_fine_tuning_under_ddp_trains_the_last_stage_only(dataset, tmp_path):
    """Without the feature cache, each process also checks its share of the images for readability."""
    out = tmp_path / "out"
    run = _run(*_training(dataset, out, "--epochs", "1", "--no-feature-cache", "--image-size", "64",
                          "--trainable-stages", "1", "--precision", "fp32"))
    assert run.returncode == 0, run.stderr
    checkpoint = load_checkpoint(out / MODEL_FILE)
    assert checkpoint["skipped_files"] == ["img_5.jpg"]
    torch.manual_seed(0)  # train() seeds with 0 before building: the initial weights
    initial, _ = build_model(3, "mobilenet_v3_small", weights="none", trainable_stages=1)
    tensors = initial.state_dict(keep_vars=True)
    trainable = {id(tensor) for tensor in initial.trainable_part.state_dict(keep_vars=True).values()}
    changed = {name for name, value in tensors.items()
               if name.startswith("backbone.") and not torch.equal(checkpoint["state_dict"][name], value.detach())}
    assert changed and all(id(tensors[name]) in trainable for name in changed)  # BatchNorm statistics too
