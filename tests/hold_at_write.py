"""Run `aimonk` as its console script does; with a FOLDER, hold the process still at its first rename of an output
into FOLDER (the temporary file written, not yet in place), creating MARKER, until a signal ends the hold. Training's
state and per-epoch metrics.csv are written while interrupts are held back (the interrupt comes once the write is
whole), which a hold that never returns would turn into a hang: the hold waits for the outputs written after.

    python hold_at_write.py FOLDER|- MARKER AIMONK-ARGUMENTS...
"""

import os
import sys
import time
from pathlib import Path

folder, marker, arguments = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
if folder != "-":
    replace = os.replace

    def replace_holding(source, target, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        if Path(target).parent == Path(folder) and not Path(target).name.startswith(("train_state", "metrics")):
            marker.touch()
            while True:  # until the signal raises here (or, lost, the test's timeout)
                time.sleep(0.01)
        replace(source, target, *args, **kwargs)

    os.replace = replace_holding

sys.argv = ["aimonk", *arguments]
from aimonk.__main__ import main  # noqa: E402  (after the hold is in place, as the console script imports it)

sys.exit(main())
