"""The progress bar of a study run: trials done of the pool, the γ now measured, the best so far."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dse.study.lifecycle import Prepared

__all__ = ["Progress"]


class Progress:
    """A tqdm bar over a pool's trials; does nothing when ``enabled`` is False."""

    def __init__(self, prepared: Prepared, *, enabled: bool) -> None:
        self.p = prepared
        self.enabled = enabled
        self._bar: Any = None
        self._current = ""

    def _numbers(self) -> tuple[int, int]:
        budget, name = self.p.tables.budget, self.p.definition.study_name
        target, _ = budget.pool(name, self.p.pool)
        return target, budget.counts(name, self.p.pool).get("done", 0)

    def open(self) -> None:
        if not self.enabled:
            return
        from space.progress import progress_bar as tqdm

        target, done = self._numbers()
        self._bar = tqdm(total=target, initial=done, desc=self.p.definition.study_name, unit="trial",
                         dynamic_ncols=True)
        self._bar.set_postfix_str(self._postfix())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def status(self, label: str) -> None:
        """Show what the worker does now (a γ's label, or waiting)."""
        self._current = label
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=True)

    def advance(self) -> None:
        """A trial ended: re-read the pool (other workers count too)."""
        if self._bar is None:
            return
        self._bar.total, self._bar.n = self._numbers()
        self._bar.set_postfix_str(self._postfix(), refresh=False)
        self._bar.refresh()

    def _postfix(self) -> str:
        from dse.study.queries import best_row, trial_rows

        best = best_row(trial_rows(self.p.study), self.p.goal)
        metric = self.p.goal.metrics[0]
        if best is None or best.get(metric) is None:
            best_text = "none yet"
        else:
            best_text = f"{best[metric]:.3f} ({best['gamma_label']})"
        current = f"now {self._current} · " if self._current else ""
        return f"{current}best feasible {metric}: {best_text}"
