"""Progress bars that stay bars on a terminal and become plain periodic lines elsewhere.

tqdm redraws its bar with carriage returns; written to a log file or a CI console that
is one ever-growing line. Without a TTY, :func:`progress_bar` sends tqdm's output
through :class:`LineWriter` (each refresh one line) and refreshes at most every
``$DSE_PROGRESS_INTERVAL`` seconds (default 30).
"""

from __future__ import annotations

import io
import os
import re
import sys
from typing import Any, TextIO

__all__ = ["LineWriter", "progress_bar", "DEFAULT_INTERVAL_S"]

DEFAULT_INTERVAL_S = 30.0
_CONTROL = re.compile(r"\r|\x1b\[[0-9;]*[A-Za-z]")


class LineWriter(io.TextIOBase):
    """A text stream that turns tqdm's carriage-return redraws into whole lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, s: str) -> int:
        """Write each non-empty redraw as one line."""
        for part in _CONTROL.split(s):
            text = part.strip()
            if text:
                self.stream.write(text + "\n")
        self.stream.flush()
        return len(s)

    def flush(self) -> None:
        """Flush the underlying stream."""
        self.stream.flush()

    def isatty(self) -> bool:
        """Never a terminal (that is the point)."""
        return False


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("DSE_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)``, in plain-line mode when its stream is not a terminal."""
    if "ipykernel" in sys.modules and "file" not in kwargs:
        from tqdm.auto import tqdm as notebook_bar  # a notebook draws its own widget

        return notebook_bar(iterable, **kwargs)
    from tqdm import tqdm

    stream = kwargs.pop("file", None) or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if not kwargs.get("disable") and not (callable(isatty) and isatty()):
        kwargs["file"] = LineWriter(stream)
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), _interval())
        kwargs["dynamic_ncols"] = False
        kwargs.setdefault("ncols", 100)
        kwargs["ascii"] = True
        kwargs["position"] = None
    else:
        kwargs["file"] = stream
    return tqdm(iterable, **kwargs)
