"""Worker processes: ``workers − 1`` spawned beside this one, tied to its life.

- A worker dies with its parent: on Linux the kernel sends it SIGTERM when the parent
  exits (``PR_SET_PDEATHSIG``), elsewhere a watchdog thread notices the parent's pid
  change. Either way it fails its running trial, queues that γ again, and exits, so no
  orphan finishes a study on its own.
- Ctrl-C reaches every worker of the terminal's process group: each prints one line and
  exits; the children are started with SIGINT ignored until their handler is set, so an
  interrupt during their start-up prints no traceback either.
- Each child sends its :class:`~dse.study.worker.WorkerStats` back through a pipe, so the
  run's summary counts every worker's trials.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from dse.study.definition import StudyDefinition
from dse.study.lifecycle import prepare
from dse.study.measuring import EvaluatorFactory, default_evaluator_factory
from dse.study.worker import STAT_FIELDS, Worker, WorkerStats
from space.errors import DseError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from dse.evaluation import BaselineRecord, Evaluator
    from dse.study.lifecycle import Prepared

__all__ = ["run_workers", "die_with_parent"]

_PR_SET_PDEATHSIG = 1


def _parent_died(signum: int, frame: Any) -> None:
    # Once: the kernel's death signal and the watchdog may both fire, and a second interrupt
    # would cut short the clean-up (failing the trial, queueing its γ again).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt("the parent process died")


def die_with_parent(parent_pid: int) -> None:
    """Make this process stop (as on Ctrl-C) when ``parent_pid`` exits."""
    signal.signal(signal.SIGTERM, _parent_died)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="dse-parent-watchdog", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


def _child_worker(definition_json: str, pool: str, index: int, parent_pid: int,
                  factory: EvaluatorFactory | None, conn: Connection) -> None:
    """Entry point of a spawned worker process (quiet: the parent shows progress)."""
    stats = WorkerStats()
    try:
        die_with_parent(parent_pid)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from dse.baselines import BaselineStore
        from space.quiet import library_warnings_once

        library_warnings_once()

        definition = StudyDefinition.model_validate(json.loads(definition_json))
        prepared = prepare(definition, force=True, resume_only=True, pool=pool)
        evaluator = (factory or default_evaluator_factory)(definition, progress=False)
        stored = BaselineStore(prepared.tables).get(evaluator.loaded.fingerprint, evaluator.settings.accuracy_key())
        assert stored is not None, "the parent measures the baseline before starting workers"
        worker = Worker(prepared, evaluator, stored, progress=False)
        stats = worker.stats
        worker.run()
    except KeyboardInterrupt as exc:
        why = str(exc) or "interrupted"
        print(f"worker {index}: {why}; its running trial was marked FAIL and its γ queued again",
              file=sys.stderr, flush=True)
        _send(conn, stats)
        sys.exit(130)
    except DseError as exc:
        print(f"worker {index}: error: {exc}", file=sys.stderr, flush=True)
        _send(conn, stats)
        sys.exit(2)
    _send(conn, stats)


def _send(conn: Connection, stats: WorkerStats) -> None:
    with contextlib.suppress(OSError, ValueError):
        conn.send(asdict(stats))
        conn.close()


def _receive(conn: Connection, into: WorkerStats) -> None:
    with contextlib.suppress(OSError, EOFError, ValueError):
        if conn.poll():
            data = conn.recv()
            into.merge(WorkerStats(**{k: data[k] for k in STAT_FIELDS}))


def run_workers(prepared: Prepared, evaluator: Evaluator, baseline: BaselineRecord, *,
                factory: EvaluatorFactory | None = None, progress: bool = True) -> WorkerStats:
    """Run this process's worker and ``workers − 1`` spawned ones until the pool is spent.

    Returns:
        Every worker's counts, merged.
    """
    definition = prepared.definition
    children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    if definition.workers > 1:
        context = multiprocessing.get_context("spawn")
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited until the child sets its own
        try:
            for index in range(1, definition.workers):
                receiver, sender = context.Pipe(duplex=False)
                child = context.Process(
                    target=_child_worker, name=f"dse-worker-{index}",
                    args=(definition.to_json(), prepared.pool, index, os.getpid(), factory, sender),
                )
                child.start()
                sender.close()
                children.append((child, receiver))
        finally:
            signal.signal(signal.SIGINT, previous)
    try:
        stats = Worker(prepared, evaluator, baseline, progress=progress).run()
    except BaseException:
        # Ctrl-C reached the children too; give them time to fail their own trials.
        for process, _ in children:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()  # SIGTERM: it fails its trial and exits like on Ctrl-C
                process.join()
        raise
    failed = []
    for process, receiver in children:
        while process.is_alive() and not receiver.poll(0.5):
            pass
        _receive(receiver, stats)
        process.join()
        if process.exitcode not in (0, None):
            failed.append(process)
    if failed:
        codes = ", ".join(f"{c.name} exit {c.exitcode}" for c in failed)
        raise DseError(f"{len(failed)} worker process(es) failed ({codes}); their errors are printed above")
    return stats
