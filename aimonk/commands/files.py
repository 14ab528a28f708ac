"""Files a command writes: named by an option, checked before any work, written atomically under a lock."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aimonk import world
from aimonk.config import data_paths
from aimonk.errors import AimonkError
from aimonk.io import atomic_file, output_lock


@contextmanager
def output_file(path: str | Path | None, suffix: str, option: str, reads: Sequence[str | Path],
                mode: str = "w", **options: Any) -> Iterator[IO | None]:
    """The file a command was asked to write (`--csv FILE`), written atomically while holding its folder's lock;
    None where not asked for, or on a process other than rank 0 (see `output_path`)."""
    target = output_path(path, suffix, option, reads)
    if target is None:
        yield None
        return
    with output_lock(target.parent), atomic_file(target, mode, **options) as file:
        yield file


@contextmanager
def output_locks(paths: Sequence[Path | None]) -> Iterator[None]:
    """The lock of each folder that `paths` (checked by `output_path`; None: not asked for) write into, each taken
    once, held for the whole of a command that writes several files."""
    with ExitStack() as stack:
        for folder in sorted({Path(path).resolve().parent for path in paths if path is not None}):
            stack.enter_context(output_lock(folder))
        yield


def output_path(path: str | Path | None, suffix: str, option: str, reads: Sequence[str | Path]) -> Path | None:
    """`path` as a file to write, checked before any work: refused if it is a file the command reads, if it is not a
    `suffix` file (`--csv images/a.jpg b.jpg` forgot the CSV's name: the image is kept), or if part of it is a file.
    None where not asked for, or on a process other than rank 0 (which alone writes)."""
    if path is None or not world.is_main():
        return None
    target = Path(path)
    if target.is_dir():
        raise AimonkError(f"{target}: is a folder, not a file to write")
    if any(folder.exists() and not folder.is_dir() for folder in target.parents):
        raise AimonkError(f"{target}: cannot write there (part of the path is a file, not a folder)")
    if target.suffix.lower() != suffix:
        raise AimonkError(f"{target}: not a {suffix} file name, so not written ({option} takes the name of the file "
                          f"to write, e.g. {option} results{suffix})")
    if any(target.resolve() == Path(read).resolve() for read in reads):
        raise AimonkError(f"{target}: is a file this command reads, so not written over ({option}): write the "
                          "output elsewhere")
    return target


@dataclass(frozen=True)
class LabelledData:
    """The labels (file and format) and images a command scores a checkpoint on; `training`: the labels its run
    was trained on (so its validation images can be told apart), else a test set."""

    labels: Path
    images: Path
    label_format: Any  # a LabelFormat (imported with the command's work, not with the parser)
    training: bool


def labelled_data(args: argparse.Namespace, checkpoint: dict) -> LabelledData:
    """What `--data-dir`, `--labels`, `--image-dir` and the format options name; where they are not given, the labels
    and images the checkpoint's run read (recorded absolute and relative to it: found from any folder), read as that
    run read them. Labels other than the training ones are a test set, read with the format options given alone."""
    from aimonk.checkpoint import recorded_data
    from aimonk.data.labels import LabelFormat

    recorded_labels, recorded_images = recorded_data(checkpoint, args.model)
    settings = checkpoint.get("train_config") or {}
    trained_on = recorded_labels or data_paths(settings.get("data_dir") or ".", settings.get("labels"), None)[0]
    given = args.data_dir is not None or args.labels is not None
    labels = data_paths(args.data_dir or ".", args.labels, None)[0] if given else trained_on
    training = labels.resolve() == trained_on.resolve()
    if args.image_dir or args.data_dir or not (training and recorded_images):
        images = data_paths(args.data_dir or ".", None, args.image_dir)[1]
    else:
        images = recorded_images
    options = LabelFormat.of(vars(args)).settings()
    if training:  # read as the run read them, but for what is said otherwise
        options = {**LabelFormat.of(settings).settings(), **{k: v for k, v in options.items() if v is not None}}
    return LabelledData(labels, images, LabelFormat.of(options), training)
