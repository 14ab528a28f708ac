"""Run `aimonk` and hold it still at the N-th save of its training state, for the kill tests to signal it there.

    python hold_at_save.py MARKER N {before,after} AIMONK-ARGUMENTS...

A save writes the new state to a temporary file, then renames it over `train_state.pth`. At the N-th such rename the
process creates MARKER and waits: `before` the rename (the new state fully written but not in place: a kill in the
middle of a save), or `after` it (the N-th state in place). Nothing else about the run changes, so where a test's
signal lands is decided by N, not by timing.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from aimonk.cli import main
from aimonk.io import STATE_FILE


def hold_at_save(marker: Path, count: int, moment: str) -> None:
    replace = os.replace
    saves = 0

    def hold() -> None:
        marker.touch()
        while True:  # until a signal ends the process (SIGKILL) or raises here (SIGINT)
            time.sleep(0.05)

    def replace_holding(source, target, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        nonlocal saves
        if Path(target).name != STATE_FILE:
            replace(source, target, *args, **kwargs)
            return
        saves += 1
        if saves == count and moment == "before":
            hold()
        replace(source, target, *args, **kwargs)
        if saves == count and moment == "after":
            hold()

    os.replace = replace_holding


if __name__ == "__main__":
    hold_at_save(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
    sys.exit(main(sys.argv[4:]))
