"""Ctrl-C and SIGTERM at five moments of a command run as a user runs it (its own process group, DataLoader workers),
and what the user sees: the exit code, stderr, the files left behind. Used by e2e/test_interrupts.py.

The moments are observed from outside, as a user's Ctrl-C lands: while torch is being imported (its library mapped
into the process), as the first DataLoader worker is forked, while the workers extract features, after they are
gone (training or cross-fitting), and while an output is written (the process held at the rename of its first
output's temporary file by `hold_at_write.py`, the one moment not left to timing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MOMENTS = ["import", "fork", "extraction", "after workers", "writing"]
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
HOLD = Path(__file__).with_name("hold_at_write.py")
TIMEOUT = 120  # seconds a run may take after its signal


@dataclass
class Outcome:
    """What one interrupted run did."""

    code: int | None  # None: still running at the timeout (killed)
    stderr: str
    missed: bool  # the moment never came, or the run ended before the signal was sent
    leftovers: list[str]  # temporary files, partial outputs, processes of its group still alive

    @property
    def ok(self) -> bool:
        lines = self.stderr.splitlines()
        return (self.code == 130 and len(lines) == 1 and lines[0].startswith("aimonk: interrupted")
                and not self.leftovers)

    def cell(self) -> str:
        if self.missed:
            return "missed"
        if self.ok:
            return "ok"
        return f"exit {self.code}, {len(self.stderr.splitlines())} lines{', ' if self.leftovers else ''}" \
               f"{' '.join(self.leftovers)}"


def _workers(pid: int) -> list[int]:
    """The forked children of `pid` (DataLoader workers; not a program it runs, as ctypes runs ldconfig)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    forked = []
    for child in children:
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes() == command:
                forked.append(int(child))
        except OSError:
            pass
    return forked


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def _torch_loading(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _group_alive(group: int) -> list[int]:
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] not in "ZX":
                alive.append(int(entry.name))
    return alive


def _wait(condition, process: subprocess.Popen, limit: float = TIMEOUT) -> bool:  # noqa: ANN001
    """Poll `condition` until true (True) or the process ends or `limit` passes (False)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if condition():
            return True
        if not _alive(process.pid):
            return False
        time.sleep(0.002)
    return False


def _extracting(pid: int, process: subprocess.Popen) -> bool:
    """Wait for workers that are still at work a second after they appeared (extraction, not a quick scan)."""
    while _wait(lambda: bool(_workers(pid)), process):
        time.sleep(1.0)
        if _workers(pid):
            return True
        _wait(lambda: not _workers(pid), process)
    return False


def _as_in_a_terminal() -> None:
    """Ctrl-C handled as in a terminal's foreground job, even where these tests run in the background (whose
    commands start with Ctrl-C ignored, which aimonk respects)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(arguments: list[str], outputs: list[Path], moment: str, name: str, work: Path) -> Outcome:
    """Run `aimonk ARGUMENTS` and send signal `name` at `moment`: SIGINT to its process group (Ctrl-C in a terminal),
    SIGTERM to the process (`docker stop`, systemd). `outputs` are the files it would write: none may be left
    partial (a temporary file, or an output other than a training state)."""
    marker = work / "held"
    marker.unlink(missing_ok=True)
    held = str(outputs[0].parent) if moment == "writing" else "-"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(HOLD), held, str(marker), *arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True, env=environment,
                               preexec_fn=_as_in_a_terminal)
    pid, seen = process.pid, []

    def workers_gone() -> bool:
        children = _workers(pid)
        seen.extend(children)
        return bool(seen) and not children

    came = {"import": lambda: _wait(lambda: _torch_loading(pid), process),
            "fork": lambda: _wait(lambda: bool(_workers(pid)), process),
            "extraction": lambda: _extracting(pid, process),
            "after workers": lambda: _wait(workers_gone, process) and not time.sleep(0.05),
            "writing": lambda: _wait(marker.exists, process)}[moment]()
    missed = not came or not _alive(pid)
    if not missed:
        if name == "SIGINT":
            os.killpg(pid, signal.SIGINT)
        else:
            os.kill(pid, SIGNALS[name])
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        code = None
    time.sleep(0.2)
    leftovers = [f"pid {p} alive" for p in _group_alive(pid)]
    for folder in {path.parent for path in outputs}:
        leftovers += [f"{path.name} left" for path in folder.glob(".*.tmp")]
    leftovers += [f"{path.name} written" for path in outputs if path.exists() and code != 0]
    return Outcome(code, stderr, missed, leftovers)
