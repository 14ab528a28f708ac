"""Where things are: the repository root, so notebooks find data and outputs whatever their working directory."""

from __future__ import annotations

from pathlib import Path

from aimonk.errors import AimonkError


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
