"""Files aimonk writes and where things are: the output folder's file names, atomic writes, full lists behind short
messages, one writer per output folder (a lock held for the whole run), interrupts that leave every file whole, the
earlier runs a new one keeps in OUT_DIR/runs, a file's content digest, the repository root that notebooks resolve
their paths from. What these promise a user is written down once, in docs/validation.md.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from aimonk.errors import AimonkError

MODEL_FILE = "aimonk_model.pth"
STATE_FILE = "train_state.pth"
HISTORY_FILE = "loss_history.csv"
CURVE_FILE = "loss_curve.png"
CARD_FILE = "MODEL_CARD.md"  # beside the checkpoint (aimonk.card)
METRICS_FILE = "metrics.csv"  # one row per epoch: training loss, validation loss, mAP and each attribute's AP
VALIDATION_CURVE_FILE = "validation_curve.png"
RUNS_FOLDER = "runs"  # the models a new run replaced, each in a folder of its own (keep_previous_run)
# What belongs to the model in an output folder: moved together when a new run replaces it (the ONNX files are the
# default paths of `aimonk export`, fp32 and `--quantize int8`)
RUN_FILES = (MODEL_FILE, CARD_FILE, HISTORY_FILE, CURVE_FILE, METRICS_FILE, VALIDATION_CURVE_FILE, STATE_FILE,
             str(Path(MODEL_FILE).with_suffix(".onnx")), str(Path(MODEL_FILE).with_suffix(".int8.onnx")))
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
    for name in RUN_FILES:
        for stale in Path(out_dir).glob(f".{name}.*.tmp"):
            stale.unlink()


# Runs kept: a new run into a folder that holds a model first moves that model and its files into
# OUT_DIR/runs/<when it was written, UTC>/. Each file is renamed into a hidden `.<name>.partial` folder there, which is
# then renamed to its name: a run killed in between leaves the partial folder, and the next run into OUT_DIR finishes
# the move (`finish_moves`) before it writes anything.


def keep_previous_run(out_dir: str | Path) -> Path | None:
    """Move the model in `out_dir` (if any) and the files of its run into a new folder under `out_dir/runs`, named
    after the UTC time the model was last written; that folder, or None if there was no model."""
    out_dir = Path(out_dir)
    model = out_dir / MODEL_FILE
    if not model.is_file():
        return None
    runs = out_dir / RUNS_FOLDER
    written = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(model.stat().st_mtime))
    name, number = written, 1
    while (runs / name).exists() or (runs / f".{name}.partial").exists():
        number += 1
        name = f"{written}-{number}"
    partial = runs / f".{name}.partial"
    try:
        partial.mkdir(parents=True)
        return _finish_move(out_dir, partial)
    except OSError as error:
        raise AimonkError(f"{out_dir}: cannot keep the previous model in {runs}: {error.strerror or error}") from None


def finish_moves(out_dir: str | Path) -> list[Path]:
    """Complete each move of a previous run that a killed run left half done (see `keep_previous_run`); the folders
    the runs are in now."""
    return [_finish_move(Path(out_dir), partial)
            for partial in sorted((Path(out_dir) / RUNS_FOLDER).glob(".*.partial"))]


def _finish_move(out_dir: Path, partial: Path) -> Path:
    for name in RUN_FILES:  # the model file is moved last: while it is in `out_dir`, the move is not done
        if (out_dir / name).is_file() and name != MODEL_FILE:
            os.replace(out_dir / name, partial / name)
    if (out_dir / MODEL_FILE).is_file():
        os.replace(out_dir / MODEL_FILE, partial / MODEL_FILE)
    kept = partial.with_name(partial.name[1:].removesuffix(".partial"))
    os.replace(partial, kept)
    _sync(partial.parent)
    _sync(out_dir)
    return kept


def _sync(folder: Path) -> None:
    """The renames in `folder` reach the disk."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def previous_runs(out_dir: str | Path) -> list[Path]:
    """The folders of the runs kept in `out_dir/runs`, newest first."""
    runs = Path(out_dir) / RUNS_FOLDER
    if not runs.is_dir():
        return []
    folders = [folder for folder in runs.iterdir() if folder.is_dir() and not folder.name.startswith(".")]

    def written(folder: Path) -> tuple[str, int]:  # 20261206T143000Z-2 after 20261206T143000Z
        stamp, _, number = folder.name.partition("-")
        return stamp, int(number) if number.isdigit() else 1

    return sorted(folders, key=written, reverse=True)


# One writer per output folder: the kernel's flock on OUT_DIR/.aimonk.lock. It goes when its process ends, however
# it ends, so a run killed with SIGKILL never blocks the next; the file says who holds it, for the message another
# run gets, and is removed when the lock is released.
LOCK_FILE = ".aimonk.lock"
SHOWN_COMMAND = 100  # characters of the holder's command line in a message

_held: set[int] = set()  # this process's lock descriptors


def _close_held_in_child() -> None:
    # A forked child (a DataLoader worker) shares the lock; closing its copy leaves the parent the only holder, so
    # the lock goes with the parent even if a worker outlives it for a moment.
    for handle in _held:
        os.close(handle)
    _held.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


@contextmanager
def output_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold `out_dir` (created if needed) for this process; an AimonkError at once, naming the holder, if another
    process or run holds it. Under torchrun, rank 0 alone, the one that writes, takes it."""
    out_dir = Path(out_dir)
    path = out_dir / LOCK_FILE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AimonkError(f"{out_dir}: cannot write: {error.strerror or error}") from None
    handle = _acquire(path)
    _held.add(handle)
    try:
        _describe(handle)
        yield
    finally:
        _held.discard(handle)
        path.unlink(missing_ok=True)  # while still held: a run that opened this file meanwhile retries on a new one
        os.close(handle)


def _acquire(path: Path) -> int:
    while True:
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise AimonkError(f"{path.parent}: cannot write: {error.strerror or error}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            os.close(handle)
            raise AimonkError(f"{path.parent}: in use by {holder}; wait for it or use another --out-dir") from None
        try:
            if os.stat(path).st_ino == os.fstat(handle).st_ino:
                return handle
        except FileNotFoundError:
            pass
        os.close(handle)  # the file was released and removed between open and flock: take the new one


def _describe(handle: int) -> None:
    """Who holds the lock, in the lock file; best effort (the lock holds without it, e.g. on a full disk)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if name == "__main__.py":  # python -m aimonk
        name = Path(sys.argv[0]).parent.name
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join([name, *sys.argv[1:]]),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(holder).encode(), 0)
    except OSError:
        pass


def _holder(handle: int) -> str:
    """`process 12345 (aimonk train ..., started 2026-11-29 06:01:02)`, from the lock file, or `another process`."""
    try:
        holder = json.loads(os.pread(handle, 65536, 0))
        command = holder["command"]
        if len(command) > SHOWN_COMMAND:
            command = command[: SHOWN_COMMAND - 3] + "..."
        where = "" if holder["host"] == socket.gethostname() else f" on {holder['host']}"
        return f"process {holder['pid']}{where} ({command}, started {holder['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


# Where things are.


# Interrupts. The command line (aimonk/__main__.py) calls `handle_interrupts` first thing, before torch loads and
# DataLoader workers start (this module imports neither torch nor numpy): from then on Ctrl-C and SIGTERM are one
# KeyboardInterrupt in that process, which every writer above turns into "nothing written", and the command into
# exit code 130 and one line (`interrupted`).

_HANDLER_PID: list[int] = []  # the process whose handler raises: its forked children (DataLoader workers) inherit it
_RECEIVED: list[int] = []  # the interrupts this process received (signal numbers)
_STOPPING: list[bool] = []  # the command caught its interrupt and exits: later ones are not raised


def interrupt(number: int, frame: object) -> None:
    """The handler of SIGINT and SIGTERM: a KeyboardInterrupt in the process that installed it, until it stops. A
    forked child (a DataLoader worker, which inherits it before any code of its own runs) ignores Ctrl-C, which its
    parent got too and stops it for, and ends at once on SIGTERM (as its parent stops it at exit)."""
    if os.getpid() not in _HANDLER_PID:
        if number == signal.SIGTERM:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        return
    _RECEIVED.append(number)
    if not _STOPPING:
        raise KeyboardInterrupt


def handle_interrupts() -> None:
    """For the whole life of this process: Ctrl-C and SIGTERM (`docker stop`, Slurm, systemd, torchrun) are one
    KeyboardInterrupt, raised in this process only. A signal ignored when it started (a background job's Ctrl-C,
    `nohup`) stays ignored. An interrupt that Python drops where it came (in a fork's callbacks or a `__del__`, where
    an exception is printed and forgotten) is raised again at the next point it can be; once one came, the noise of
    the shutdown (`Exception ignored in ...`) is not printed."""
    _HANDLER_PID[:] = [os.getpid()]
    for number in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, interrupt)
    if getattr(sys.unraisablehook, "__name__", "") != "_after_interrupt":
        sys.unraisablehook = _after_interrupt(sys.unraisablehook)
        threading.excepthook = _after_interrupt(threading.excepthook)  # a helper thread failing as workers stop
        sys.excepthook = _quiet_in_workers(sys.excepthook)


def _quiet_in_workers(hook: Callable) -> Callable:
    """`sys.excepthook`, silent for a connection closed by the other end in a forked worker (its parent went away)
    or after an interrupt (multiprocessing's resource sharer, which passes a tensor's file descriptor between them,
    reports through it from its thread)."""
    def _excepthook(kind: type, error: BaseException, traceback: object) -> None:
        closed = isinstance(error, (ConnectionError, EOFError))
        if not closed or (os.getpid() in _HANDLER_PID and not interrupt_received()):
            hook(kind, error, traceback)
    return _excepthook


def _after_interrupt(hook: Callable) -> Callable:
    """`hook` (of an exception Python prints and forgets), silent once an interrupt came, and in a forked worker for
    a connection its parent closed; an interrupt itself dropped there is sent again."""
    def _after_interrupt(failure: object) -> None:
        if os.getpid() not in _HANDLER_PID and isinstance(getattr(failure, "exc_value", None),
                                                          (ConnectionError, EOFError)):
            return  # a forked worker whose parent went away: the parent reports what matters
        if not interrupt_received():
            hook(failure)
        elif isinstance(getattr(failure, "exc_value", None), KeyboardInterrupt) and not _STOPPING:
            # Again in a millisecond, from the kernel: raised where the program is then, not in this hook (a signal
            # sent from here would be handled, and dropped, before the hook returns).
            signal.signal(signal.SIGALRM, interrupt)
            signal.setitimer(signal.ITIMER_REAL, 0.001)
    return _after_interrupt


def interrupt_received() -> bool:
    """Whether this process received Ctrl-C or SIGTERM (under `handle_interrupts`): whatever failed after it (a
    DataLoader worker gone, say) failed because of it."""
    return bool(_RECEIVED) and os.getpid() in _HANDLER_PID


def interrupted(line: str = "aimonk: interrupted", show: bool = True) -> int:
    """Exit code 130 after an interrupt, with its one line if `show` (rank 0 alone under torchrun). From here on
    interrupts are not raised, so nothing cuts the exit short or adds to the line."""
    _STOPPING[:] = [True]
    if show:
        print(line, file=sys.stderr, flush=True)
    return 130


def sigterm_as_sigint(number: int, frame: object) -> None:
    """SIGTERM handled as Ctrl-C: SIGINT raised (so that it is held wherever Ctrl-C is); a KeyboardInterrupt where
    Ctrl-C itself is ignored (a background job), so that SIGTERM still stops the process."""
    if callable(signal.getsignal(signal.SIGINT)):
        signal.raise_signal(signal.SIGINT)
    else:
        raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM is Ctrl-C: raised as SIGINT, a KeyboardInterrupt where nothing holds it; the
    previous handler is restored after. For callers from Python (`train`, `cli.main`); a no-op where
    `handle_interrupts` made it so for the process, outside the main thread, where SIGTERM is ignored on purpose, or
    where its handler was not set from Python (it could not be put back)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) in (
            None, signal.SIG_IGN, interrupt):
        yield
        return
    previous = signal.signal(signal.SIGTERM, sigterm_as_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def held_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT), and SIGTERM where Python handles it, until the block ends, then pass them on; a no-op
    outside the main thread or under a foreign SIGINT handler."""
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT), signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
    if threading.current_thread() is not threading.main_thread() or previous[signal.SIGINT] is None:
        yield
        return
    held = [number for number, handler in previous.items() if number == signal.SIGINT or callable(handler)]
    received: list[int] = []
    for number in held:
        signal.signal(number, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for number in held:
            signal.signal(number, previous[number])
        for number in dict.fromkeys(received):  # each once, in the order they came
            if callable(previous[number]):
                previous[number](number, None)


def repository_root(start: Path | None = None) -> Path:
    """The aimonk repository holding `start` (default: the working directory), from the root or any folder in it."""
    start = Path.cwd() if start is None else Path(start)
    for folder in [start, *start.parents]:
        if (folder / "pyproject.toml").is_file() and (folder / "aimonk").is_dir():
            return folder
    raise AimonkError(f"run this inside the aimonk repository (none found above {start})")


def from_root(*paths: str | Path, start: Path | None = None) -> list[Path]:
    """Each path resolved against the repository root (absolute paths stay as they are)."""
    root = repository_root(start)
    return [(root / path).resolve() for path in paths]


def shown(path: Path, start: Path | None = None) -> str:
    """`path` relative to the repository root where it lies inside it, else absolute."""
    root = repository_root(start)
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


# Names that become file names and columns: an attribute's name is part of `aimonk explain`'s
# `<image>__<attribute>.png` and of `aimonk predict --csv`'s columns `p_<attribute>` and `<attribute>`.
CSV_COLUMNS = ("image", "error")  # predict --csv's own columns
NAME_RULE = ("attribute names become file names and CSV columns: no '/', '\\' or control characters, not starting "
             "with '.', not 'image' or 'error', and no two equal ignoring case or one 'p_' + another")


def attribute_names_problem(names: Sequence[str]) -> str | None:
    """Why these attribute names cannot all be used (the first bad one, with the rule), or None if they can."""
    seen: dict[str, str] = {}  # lower case -> the name as given
    for name in names:
        folded = name.lower() if isinstance(name, str) else ""
        prefixed = seen.get(f"p_{folded}") or (folded[:2] == "p_" and seen.get(folded[2:]))
        if not folded:
            problem = f"attribute name {name!r} is empty or not text"
        elif "/" in name or "\\" in name:
            problem = f"attribute name {name!r} contains a path separator"
        elif any(ord(character) < 32 or 127 <= ord(character) < 160 for character in name):  # Unicode's Cc
            problem = f"attribute name {name!r} contains a control character"
        elif name.startswith("."):
            problem = f"attribute name {name!r} starts with '.'"
        elif name in CSV_COLUMNS:
            problem = f"attribute name {name!r} is one of the CSV's own columns"
        elif folded in seen:
            problem = f"attribute names {seen[folded]!r} and {name!r} are equal ignoring case"
        elif prefixed:
            problem = f"attribute names {prefixed!r} and {name!r}: one is 'p_' + the other"
        else:
            seen[folded] = name
            continue
        return f"{problem}; {NAME_RULE}"
    return None


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes (hex): the feature cache's key of an image, a checkpoint's identity."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
