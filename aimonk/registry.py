"""Named choices (losses, samplers, solvers, backbones, recipes): registering an entry makes its name a valid
option of the training config, the command line and the docs at once.

    @LOSSES.register("toy")
    def toy(config): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from aimonk.errors import AimonkError

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered mapping from names to entries of one kind, with a one-line description per entry."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, description: str | None = None) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` adds the decorated function or class under `name`."""

        def add(entry: T) -> T:
            self.add(name, entry, description)
            return entry

        return add

    def add(self, name: str, entry: T, description: str | None = None) -> T:
        """Add `entry` under `name`; the description defaults to the first line of its docstring."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        doc = description if description is not None else (getattr(entry, "__doc__", None) or "")
        self._descriptions[name] = doc.strip().splitlines()[0] if doc.strip() else ""
        return entry

    def remove(self, name: str) -> None:
        """Take an entry out again (tests that register a temporary entry)."""
        del self._entries[name]
        del self._descriptions[name]

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise AimonkError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def describe(self) -> str:
        """`name: description` for every entry, for help texts and docs."""
        return "; ".join(f"{name}: {text}" if text else name for name, text in self._descriptions.items())
