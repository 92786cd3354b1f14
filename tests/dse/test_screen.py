"""The KL screen: its rule, its measurement on tiny-llama, and screened trials in a study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dse.screen import KLScreen, decide
from space.config import DecompositionConfig
from space.errors import DataError

TAU = 4.0


def _trial(kl: float, drop: float, low: float | None = None, **extra: Any) -> dict[str, Any]:
    return {"kl_divergence": kl, "accuracy_drop_pp": drop, "drop_ci_low_pp": drop - 2 if low is None else low, **extra}


HISTORY = [_trial(0.01, 1.0), _trial(0.02, 2.0), _trial(0.05, 3.0), _trial(0.3, 20.0), _trial(0.5, 40.0)]


def test_a_gamma_far_beyond_every_possibly_feasible_trial_is_skipped() -> None:
    decision = decide(0.4, HISTORY, TAU)
    assert decision.skip and decision.kl == 0.4
    assert "KL 0.4 > 2 × 0.05" in decision.reason and "KL 0.3 ≤ 0.4 was surely above τ=4 pp" in decision.reason


@pytest.mark.parametrize(
    ("kl", "history", "why"),
    [
        (0.4, HISTORY[:4], "4 evaluated trials with a KL, 5 needed"),
        (0.4, [_trial(k, 30.0) for k in (0.1, 0.2, 0.3, 0.4, 0.5)], "no feasible trial yet"),
        (0.09, HISTORY, "within 2 × 0.05"),
        (0.2, HISTORY, "no surely infeasible trial seen at or below this KL"),
        # a trial above τ whose interval reaches below τ counts as possibly feasible: its KL sets the bar
        (0.4, [*HISTORY, _trial(0.25, 5.0, low=3.0)], "within 2 × 0.25"),
    ],
)
def test_the_rule_evaluates_whenever_the_evidence_is_short(kl: float, history: list[dict[str, Any]], why: str) -> None:
    decision = decide(kl, history, TAU)
    assert not decision.skip
    assert why in decision.reason


def test_screened_and_unscreened_trials_do_not_count_as_evidence() -> None:
    history = [*HISTORY[:4], _trial(0.5, 100.0, screened=True), {"accuracy_drop_pp": 50.0}]
    assert not decide(0.4, history, TAU).skip


def test_early_stopped_trials_count_as_surely_infeasible() -> None:
    history = [*HISTORY[:3], _trial(0.3, 6.0, low=1.0, early_stopped=True), _trial(0.6, 9.0, low=1.0)]
    decision = decide(0.45, history, TAU)
    assert not decision.skip and "within 2 × 0.6" in decision.reason  # the 0.6 one could be feasible
    assert decide(0.45, [*history[:4], _trial(0.01, 0.5)], TAU).skip


def test_kl_is_zero_for_the_baseline_and_grows_with_the_decomposition(tiny_llama: Any, data_dir: Path) -> None:
    from dse.surgery import decomposed

    screen = KLScreen(tiny_llama.model, tiny_llama.tokenizer, data_dir, n_tokens=256)
    assert screen.n_tokens == 256
    with pytest.raises(RuntimeError, match="record_baseline"):
        screen.measure()
    screen.record_baseline()
    same = screen.measure()
    with decomposed(tiny_llama, DecompositionConfig(layers=(3,), rank=1)):
        one = screen.measure()
    with decomposed(tiny_llama, DecompositionConfig(layers=(0, 1, 2, 3), rank=1)):
        every = screen.measure()
    assert same < 1e-3  # the baseline is kept in float16: rounding, not distortion
    assert same < one < every


def test_kl_screen_needs_wikitext2_validation(tiny_llama: Any, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="WikiText-2 validation"):
        KLScreen(tiny_llama.model, tiny_llama.tokenizer, tmp_path)
