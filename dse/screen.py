"""A cheap screen before a trial's accuracy evaluation: KL divergence to the baseline (multi-fidelity).

The KL divergence between the baseline's and a γ's next-token distributions on the
first ``n_tokens`` of WikiText-2 *validation* costs one forward pass of those tokens
(the baseline's distributions are computed once per process and kept, in float16). A
study records it for every trial; once enough trials relate it to the accuracy drop,
:func:`decide` skips the full evaluation of a γ whose drop is surely above τ.

The rule (conservative; every condition must hold):

1. at least ``min_trials`` fully evaluated trials carry a KL, at least one of them feasible;
2. the γ's KL exceeds ``margin`` × the largest KL of any evaluated trial that was, or
   could have been, feasible (its drop's lower confidence bound below τ);
3. some evaluated trial with a KL between that largest value and the γ's own was surely
   infeasible (lower bound at or above τ, or stopped early): the study has seen a model
   at most this distorted fail.

A skipped γ is recorded as ``screened``: never feasible, never on a front, not stored in
the memo, so a later run with screening off (``--no-screen``) evaluates it fully when
the sampler proposes it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from space.errors import DataError

if TYPE_CHECKING:
    import torch

__all__ = ["KLScreen", "ScreenDecision", "decide", "wikitext2_validation_text"]

DEFAULT_TOKENS = 1024
WINDOW = 256
MIN_TRIALS = 5
MARGIN = 2.0


class ScreenDecision(BaseModel):
    """Whether to skip a γ's full evaluation, and why (in words, recorded with the trial)."""

    model_config = ConfigDict(frozen=True)

    skip: bool
    kl: float
    reason: str


def wikitext2_validation_text(data_dir: Path) -> str:
    """WikiText-2's validation split (the calibration data; never the test split)."""
    for name in ("wikitext2/wiki.valid.raw", "wikitext2/valid.txt"):
        path = data_dir / name
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise DataError(f"the KL screen needs WikiText-2 validation (wikitext2/valid.txt) in {data_dir}")


class KLScreen:
    """Mean per-token KL(baseline ‖ current model) on calibration tokens, in nats.

    Args:
        model: the model (an HF causal LM); measured as it is at each call.
        tokenizer: its tokenizer.
        data_dir: the benchmark data directory holding ``wikitext2/``.
        n_tokens: calibration tokens (whole windows of 256).
    """

    def __init__(self, model: Any, tokenizer: Any, data_dir: Path, *, n_tokens: int = DEFAULT_TOKENS) -> None:
        import torch

        ids = tokenizer(wikitext2_validation_text(data_dir), add_special_tokens=False)["input_ids"]
        windows = max(1, min(n_tokens, len(ids)) // WINDOW)
        if len(ids) < WINDOW:
            raise DataError(f"WikiText-2 validation holds {len(ids)} tokens, fewer than one window of {WINDOW}")
        self.model = model
        self.ids = torch.tensor(ids[: windows * WINDOW], dtype=torch.long).reshape(windows, WINDOW)
        self._baseline: torch.Tensor | None = None

    @property
    def n_tokens(self) -> int:
        """Calibration tokens scored."""
        return int(self.ids.numel())

    def _logprobs(self, rows: slice) -> torch.Tensor:
        import torch

        device = next(self.model.parameters()).device
        with torch.no_grad():
            logits = self.model(self.ids[rows].to(device)).logits
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def record_baseline(self) -> None:
        """Keep the current (undecomposed) model's distributions; call before any γ is applied."""
        import torch

        training = self.model.training
        self.model.eval()
        try:
            self._baseline = torch.cat([self._logprobs(slice(i, i + 1)).half() for i in range(len(self.ids))])
        finally:
            self.model.train(training)

    def measure(self) -> float:
        """KL(baseline ‖ model as it is now), averaged over the calibration tokens."""
        import torch

        if self._baseline is None:
            raise RuntimeError("record_baseline() must run on the undecomposed model first")
        training = self.model.training
        self.model.eval()
        total = 0.0
        try:
            for i in range(len(self.ids)):
                base = self._baseline[i].float()
                current = self._logprobs(slice(i, i + 1))[0]
                total += float((base.exp() * (base - current)).sum())
        finally:
            self.model.train(training)
        return max(0.0, total / self.n_tokens) if torch.isfinite(torch.tensor(total)) else float("inf")


def decide(
    kl: float,
    history: Iterable[Mapping[str, Any]],
    tau: float,
    *,
    min_trials: int = MIN_TRIALS,
    margin: float = MARGIN,
) -> ScreenDecision:
    """Apply the module's rule to a γ's KL, given the study's fully evaluated trials.

    Each history entry needs ``kl_divergence``, ``accuracy_drop_pp`` and, where measured,
    ``drop_ci_low_pp`` and ``early_stopped`` (a trial record's keys).
    """
    points = [h for h in history if h.get("kl_divergence") is not None and not h.get("screened")]
    if len(points) < min_trials:
        reason = f"{len(points)} evaluated trials with a KL, {min_trials} needed"
        return ScreenDecision(skip=False, kl=kl, reason=reason)

    def surely_infeasible(h: Mapping[str, Any]) -> bool:
        low = h.get("drop_ci_low_pp")
        return bool(h.get("early_stopped")) or (low if low is not None else h["accuracy_drop_pp"]) >= tau

    feasible = [h for h in points if h["accuracy_drop_pp"] < tau]
    if not feasible:
        return ScreenDecision(skip=False, kl=kl, reason="no feasible trial yet to relate KL to the drop")
    k_ok = max(float(h["kl_divergence"]) for h in points if not surely_infeasible(h))
    if kl <= margin * k_ok:
        return ScreenDecision(
            skip=False, kl=kl,
            reason=f"KL {kl:.4g} within {margin:g} × {k_ok:.4g} (largest of a possibly feasible trial)",
        )
    failed = [
        float(h["kl_divergence"]) for h in points if surely_infeasible(h) and k_ok < h["kl_divergence"] <= kl
    ]
    if not failed:
        return ScreenDecision(skip=False, kl=kl, reason="no surely infeasible trial seen at or below this KL")
    return ScreenDecision(
        skip=True, kl=kl,
        reason=(f"KL {kl:.4g} > {margin:g} × {k_ok:.4g} (largest KL of a possibly feasible trial), and a trial "
                f"with KL {min(failed):.4g} ≤ {kl:.4g} was surely above τ={tau:g} pp"),
    )


# --------------------------------------------------------------------------- in a study


class StudyScreen:
    """The screen as a study worker uses it: built on first use, on the undecomposed model.

    Args:
        evaluator: the worker's evaluator (its model, factor cache and method).
        data_dir: the benchmark data directory (for ``wikitext2/``).
        tau: the study's τ.
    """

    def __init__(self, evaluator: Any, data_dir: Path, tau: float, *, n_tokens: int = DEFAULT_TOKENS) -> None:
        self.evaluator = evaluator
        self.data_dir = data_dir
        self.tau = tau
        self.n_tokens = n_tokens
        self._screen: KLScreen | None = None

    def check(self, gamma: Any, trials: Iterable[Any]) -> ScreenDecision:
        """γ's KL (applied, measured, undone) and the rule's decision given ``trials`` (Optuna's)."""
        from optuna.trial import TrialState

        from dse.surgery import decomposed, undo

        loaded = self.evaluator.loaded
        if self._screen is None:
            if loaded.applied is not None:
                undo(loaded)
            self._screen = KLScreen(loaded.model, loaded.tokenizer, self.data_dir, n_tokens=self.n_tokens)
            self._screen.record_baseline()
        with decomposed(loaded, gamma, cache=self.evaluator.cache, method=self.evaluator.settings.method):
            kl = self._screen.measure()
        history = [
            t.user_attrs for t in trials
            if t.state == TrialState.COMPLETE and not t.user_attrs.get("rejected")
        ]
        return decide(kl, history, self.tau)


def tell_screened(study: Any, trial: Any, decision: ScreenDecision, metrics: Iterable[str], reduction: float) -> None:
    """Finish a skipped trial: COMPLETE, infeasible, stand-in values, not memoized."""
    from optuna.trial import TrialState

    from dse.study.goals import CONSTRAINT_KEY, REJECTED_CONSTRAINT, standin_ratios
    from dse.study.storage import retrying

    estimates = standin_ratios(reduction) | {"param_reduction_pct": reduction, "accuracy_drop_pp": 100.0}
    trial.set_constraint(CONSTRAINT_KEY, REJECTED_CONSTRAINT)
    for key, value in {
        "screened": True, "kl_divergence": decision.kl, "screen_reason": decision.reason, "rejected": False,
        "memoized": False, "feasible": False, "param_reduction_pct": reduction,
    }.items():
        trial.set_user_attr(key, value)
    values = [estimates[m] for m in metrics]
    retrying(lambda: study.tell(trial, values, state=TrialState.COMPLETE, skip_if_finished=True))
