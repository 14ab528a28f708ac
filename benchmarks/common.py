"""What the benchmark scripts share: a description of the machine, and a stopwatch that notices other load."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    """CPU model, cores, memory, accelerator and torch version, in one line."""
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{models[0] if models else platform.processor() or platform.machine()}, {os.cpu_count()} cores"
            f"{memory}, {device}, torch {torch.__version__} ({torch.get_num_threads()} threads)")


def _busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> float:
    """CPU seconds used by this process and its finished children (DataLoader workers, subprocesses)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


class Stopwatch:
    """`with Stopwatch() as watch:` -> watch.seconds, and watch.others: CPU seconds other processes used meanwhile."""

    def __enter__(self) -> Stopwatch:
        self._busy, self._own, self._start = _busy_seconds(), cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self._start
        busy = _busy_seconds()
        self.others = None if busy is None else max(0.0, (busy - self._busy) - (cpu_seconds() - self._own))

    def note(self) -> str:
        """Empty, or a warning when other processes took more than 5 % of the machine during the measurement."""
        if self.others is None or self.others <= 0.05 * self.seconds * (os.cpu_count() or 1):
            return ""
        return f"  [disturbed: other processes used {self.others:.1f} CPU-s meanwhile; rerun on a quiet machine]"
