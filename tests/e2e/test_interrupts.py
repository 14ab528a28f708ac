"""Ctrl-C and SIGTERM at any moment of `train`, `complete` and `next` with DataLoader workers: exit code 130, one
line on stderr, no traceback, nothing partial left behind (interrupting.py runs and observes them).

CI runs a few of the moments. The whole matrix (2 signals x 5 moments x 3 commands x 3 repetitions, about half an
hour on 2 cores) runs with `AIMONK_INTERRUPT_MATRIX=1 pytest tests/e2e/test_interrupts.py -s -k matrix` (or
`=SIGINT`, `=SIGTERM` for one signal's half), and prints the table quoted in docs/testing.md.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import ROOT
from interrupting import MOMENTS, SIGNALS, Outcome, interrupt

COMMANDS = ["train", "complete", "next"]


def _run(command: str, moment: str, name: str, work: Path, image_size: int = 32) -> Outcome:
    """`aimonk COMMAND` on the demo set with 2 workers, a cold cache, interrupted at `moment` by signal `name`."""
    shutil.rmtree(work, ignore_errors=True)
    out = work / "out"
    out.mkdir(parents=True)
    if moment == "extraction":
        image_size = 128  # long enough for the workers to be caught at work
    common = ["--data-dir", str(ROOT), "--weights", "none", "--image-size", str(image_size), "--workers", "2",
              "--cache-dir", str(work / "cache"), "--no-progress"]
    arguments, outputs = {
        "train": (["train", "--out-dir", str(out), "--quiet"], [out / "aimonk_model.pth"]),  # no per-epoch lines
        "complete": (["complete", "--out", str(out / "labels.completed.txt"), "--csv", str(out / "fills.csv")],
                     [out / "labels.completed.txt", out / "fills.csv"]),
        "next": (["next", "--csv", str(out / "next.csv")], [out / "next.csv"]),
    }[command]
    return interrupt([*arguments, *common], outputs, moment, name, work)


@pytest.mark.slow
@pytest.mark.parametrize(("command", "moment", "name"), [
    ("next", "import", "SIGINT"),
    ("complete", "fork", "SIGINT"),
    ("next", "fork", "SIGTERM"),
    ("train", "writing", "SIGTERM"),
    ("complete", "after workers", "SIGINT"),
])
def test_an_interrupt_exits_130_with_one_line_and_leaves_nothing_partial(command, moment, name, tmp_path):
    outcome = _run(command, moment, name, tmp_path)
    assert not outcome.missed, f"{moment} never came"
    assert outcome.ok, outcome.stderr


@pytest.mark.skipif(not os.environ.get("AIMONK_INTERRUPT_MATRIX"), reason="half an hour: AIMONK_INTERRUPT_MATRIX=1")
def test_matrix(tmp_path):
    rows, failed = [], []
    chosen = os.environ["AIMONK_INTERRUPT_MATRIX"]  # 1, or the signals to send: SIGINT,SIGTERM
    for name in [name for name in SIGNALS if chosen == "1" or name in chosen.split(",")]:
        for moment in MOMENTS:
            cells = []
            for command in COMMANDS:
                results = [_run(command, moment, name, tmp_path / "run") for _ in range(3)]
                cells.append(", ".join(result.cell() for result in results))
                failed += [f"{name} {moment} {command}: {result.stderr}" for result in results
                           if not result.ok and not result.missed]
            rows.append(f"| {name} | {moment} | " + " | ".join(cells) + " |")
    print("\n| signal | moment | " + " | ".join(COMMANDS) + " |\n|---|---|---|---|---|\n" + "\n".join(rows))
    assert not failed, "\n".join(failed)
