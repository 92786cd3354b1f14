"""Run a function in a forked child process: a real, separate process, without a fresh interpreter's start-up.

The crash and concurrency suites start many processes; forking the test process (which has
already imported everything) makes each one cost milliseconds instead of seconds of imports.
The child never returns into pytest: it exits with ``os._exit``.
"""

from __future__ import annotations

import json
import os
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Forked", "fork", "kill_at"]


@dataclass
class Forked:
    """A forked child: wait for it, then read its exit and what it returned."""

    pid: int
    read_fd: int

    def wait(self) -> tuple[int, Any]:
        """``(status, result)``: status is the exit code, or −signal when a signal ended it."""
        chunks = []
        while chunk := os.read(self.read_fd, 65536):
            chunks.append(chunk)
        os.close(self.read_fd)
        _, status = os.waitpid(self.pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        data = b"".join(chunks).decode()
        return code, json.loads(data) if data else None


def fork(function: Callable[[], Any], env: dict[str, str] | None = None) -> Forked:
    """Start ``function()`` in a child; its JSON-able result (or error text) comes back through a pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        code = 0
        try:
            os.environ.update(env or {})
            result: Any = function()
        except BaseException:  # noqa: BLE001 - reported to the parent
            result, code = {"error": traceback.format_exc()}, 1
        try:
            os.write(write_fd, json.dumps(result, default=str).encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    return Forked(pid, read_fd)


def kill_at(owner: Any, attr: str, *, when: str, nth: int, only: Callable[..., bool] | None = None) -> None:
    """Patch ``owner.attr`` (in this process) to SIGKILL the process on its ``nth`` qualifying call.

    ``when`` is ``"before"`` or ``"after"`` the original call; ``only(*args, **kwargs)``
    says which calls count (all by default).
    """
    original = getattr(owner, attr)
    calls = [0]

    def patched(*args: Any, **kwargs: Any) -> Any:
        if only is not None and not only(*args, **kwargs):
            return original(*args, **kwargs)
        calls[0] += 1
        if when == "before" and calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if when == "after" and calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, attr, patched)
