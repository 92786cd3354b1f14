"""The one exception root of lowrank-dse.

Every error a user can cause (a bad model name, an invalid γ, a missing data file)
derives from :class:`DseError`. The CLI prints such an error as one line and exits
with code 2; anything else is a bug and keeps its traceback. It lives in ``space``
because ``space`` depends on nothing else of ours, and every package can import it.
"""

from __future__ import annotations

__all__ = ["DseError", "InvalidConfigError", "UnknownNameError", "DataError", "StorageError"]


class DseError(Exception):
    """Root of all user-facing errors: the message says what is wrong and what is allowed."""


class InvalidConfigError(DseError, ValueError):
    """A decomposition configuration, study definition or option value is not allowed."""


class UnknownNameError(DseError, KeyError):
    """A name (model, task, rule, objective, sampler, study) is not known."""

    def __str__(self) -> str:  # KeyError would quote the message.
        return str(self.args[0]) if self.args else ""


class DataError(DseError):
    """A data file or directory is missing, unreadable or malformed."""


class StorageError(DseError):
    """A storage URL, database or cache is unreachable, unwritable or malformed."""


class CalibrationError(DseError):
    """Calibration data or statistics cannot serve a data-aware method."""
