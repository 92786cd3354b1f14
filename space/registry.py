"""A name -> object registry that answers an unknown name with the names it knows.

Modelled on lm-eval's registry: everything a user may name (model presets, model
families, heuristic rules, objectives, samplers) is looked up through one of these, so
the CLI can list the choices and an unknown name gets "Did you mean ...? Available: ...".
Entries may be lazy ``"module:attr"`` strings, resolved on first use, so that listing a
registry never imports torch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from space.errors import UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (or lazy ``"module:attr"`` references to them)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, obj: T | str) -> None:
        """Add ``obj`` under ``name``; a second registration under one name is a bug."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """Return the object for ``name``; raise UnknownNameError listing the known names."""
        try:
            entry = self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None
        if isinstance(entry, str) and ":" in entry:
            module_name, attr = entry.split(":", 1)
            entry = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(known)}"
