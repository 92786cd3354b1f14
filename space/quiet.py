"""Library warnings once per process, on one line each.

transformers, torch and lm-eval raise the same deprecation warnings on every forward
pass or trial. Python's own ``once`` action does not hold them back, so they are
deduplicated where they are printed (:func:`library_warnings_once`). The CLI installs it
at start-up and every spawned study worker does too.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["library_warnings_once"]

_SEEN_WARNINGS: set[tuple[str, str]] = set()


def _show_once(message: Warning | str, category: type[Warning], filename: str, lineno: int,
               file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` that prints each (category, message) once, on one line."""
    text = str(message).strip()
    key = (category.__name__, text)
    if key in _SEEN_WARNINGS:
        return
    _SEEN_WARNINGS.add(key)
    first = text.splitlines()[0] if text else ""
    (file or sys.stderr).write(f"warning: {filename}:{lineno}: {category.__name__}: {first}\n")


def library_warnings_once() -> None:
    """Show each warning (transformers' and torch's deprecations, …) once per process, on one line.

    Python's own ``once`` action does not hold: every ``warnings.catch_warnings()``
    block (lm-eval, torch and transformers open them per call) clears the registry
    of warnings already shown, so the same FutureWarning came back on every trial.
    Deduplication therefore happens where warnings are printed.
    """
    import warnings

    warnings.showwarning = _show_once
