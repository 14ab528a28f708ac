"""Files aimonk writes: the output folder's file names, atomic writes, full lists behind short messages, the loss
history."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from aimonk.errors import AimonkError

MODEL_FILE = "aimonk_model.pth"
STATE_FILE = "train_state.pth"
HISTORY_FILE = "loss_history.csv"
CURVE_FILE = "loss_curve.png"
NAMES_SHOWN = 5  # names a message lists before pointing to the full list
NAME_LENGTH = 150  # longer names are shortened in a message (the full list has them whole)


@contextmanager
def atomic_file(path: str | Path | None, mode: str = "wb", *, durable: bool = True,
                **options: object) -> Iterator[IO | None]:
    """A file to write that replaces `path` only once complete and on disk: a crash leaves the old or the new.

    It is a temporary file beside `path`, flushed, fsynced (unless not `durable`) and renamed over it; on any error
    it is removed and `path` left as it was. `mode` and `options` are those of `open`. Parent folders are created.
    A path that cannot be written, or a write that fails (no space left, read-only, permission), is an AimonkError
    naming `path` and the cause. With `path` None (an output not asked for) it gives None.
    """
    if path is None:
        yield None
        return
    path = Path(path)
    if path.is_dir():
        raise AimonkError(f"{path}: is a folder, not a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except (FileExistsError, NotADirectoryError):
        raise AimonkError(f"{path}: cannot write there (part of the path is a file, not a folder)") from None
    except OSError as error:
        raise AimonkError(f"{path}: cannot write: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, mode, **options) as file:
            yield file
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.filename not in (None, temporary):  # the block failed on another file: not a failed write
            raise
        raise AimonkError(f"{path}: cannot write: {error.strerror or error}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if not durable:
        return
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself reaches the disk
    finally:
        os.close(directory)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def listed(names: Sequence[str], full_list: str | Path | None = None) -> str:
    """`a, b, c, d, e, ... (full list in PATH)` for a message of bounded length, whatever the number of names.

    When names are left out or shortened, all of them are written one per line to `full_list` (default: a new
    temporary file), which the text names; otherwise nothing is written.
    """
    shown = [name if len(name) <= NAME_LENGTH else f"{name[:NAME_LENGTH // 2]}...{name[-NAME_LENGTH // 2:]}"
             for name in names[:NAMES_SHOWN]]
    if len(names) <= NAMES_SHOWN and shown == list(names):
        return ", ".join(shown)
    if full_list is None:
        handle, full_list = tempfile.mkstemp(prefix="aimonk-list-", suffix=".txt")
        os.close(handle)
    with atomic_file(full_list, "w", encoding="utf-8") as file:
        file.writelines(f"{name}\n" for name in names)
    return f"{', '.join(shown)}{', ...' if len(names) > NAMES_SHOWN else ''} (full list in {full_list})"


def remove_stale_temporaries(out_dir: Path) -> None:
    """Delete temporary files left by a run killed while saving (they never replaced a good file)."""
    for name in (STATE_FILE, MODEL_FILE, HISTORY_FILE, CURVE_FILE):
        for stale in Path(out_dir).glob(f".{name}.*.tmp"):
            stale.unlink()


def write_history(out_dir: Path, history: list[float]) -> None:
    """`loss_history.csv` (iteration_number,training_loss) and `loss_curve.png`, each written atomically."""
    from aimonk.plots import loss_curve_figure  # matplotlib only here: `aimonk predict` imports this module

    with atomic_file(out_dir / HISTORY_FILE, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["iteration_number", "training_loss"])
        writer.writerows((i, f"{loss:.8g}") for i, loss in enumerate(history, start=1))
    with atomic_file(out_dir / CURVE_FILE) as file:
        loss_curve_figure(history).savefig(file, format="png", dpi=100)
