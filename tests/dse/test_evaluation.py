"""The Evaluator: baseline once, trials against it, early stop, and the model left untouched."""

from __future__ import annotations

import pytest
import torch

from dse.evaluation import Evaluator, MeasurementSettings
from objectives.workload import Workload
from space.config import DecompositionConfig
from space.errors import InvalidConfigError
from space.metrics import parameter_report

SMALL = Workload(prefill_tokens=8, decode_tokens=2, warmup=0, repeats=1)


def _settings(**overrides) -> MeasurementSettings:  # type: ignore[no-untyped-def]
    fields = {"tasks": ("dse_arc_easy",), "limit": 6, "batch_size": 8, "workload": SMALL}
    fields.update(overrides)
    return MeasurementSettings(**fields)


@pytest.fixture(scope="module")
def evaluator(tiny_llama, data_dir, tmp_path_factory):  # type: ignore[no-untyped-def]
    from dse.cache import FactorCache

    cache = FactorCache(tmp_path_factory.mktemp("factors"))
    return Evaluator(tiny_llama, _settings(data_dir=str(data_dir)), cache=cache, progress=False)


@pytest.fixture(scope="module")
def baseline(evaluator):  # type: ignore[no-untyped-def]
    return evaluator.baseline()


def test_baseline_holds_per_document_results(baseline, tiny_llama) -> None:  # type: ignore[no-untyped-def]
    task = baseline.accuracy_result().per_task["dse_arc_easy"]
    assert task.n_docs == 6 and len(task.per_doc) == 6
    assert baseline.accuracy == pytest.approx(sum(task.per_doc) / 6)
    assert baseline.params == tiny_llama.spec.total_params
    assert baseline.latency_s is not None and baseline.latency_s > 0
    assert baseline.energy_method is not None


def test_trial_matches_the_space_and_leaves_the_model_untouched(evaluator, baseline, tiny_llama) -> None:  # type: ignore[no-untyped-def]
    ids = torch.arange(1, 17).unsqueeze(0)
    with torch.no_grad():
        before = tiny_llama.model(ids).logits
    gamma = DecompositionConfig(layers=(1, 3), tensors="all", rank=1)
    record = evaluator.evaluate(gamma, baseline)
    predicted = parameter_report(tiny_llama.spec, gamma)
    assert record.params == predicted.params_after
    assert record.param_reduction_pct == pytest.approx(predicted.param_reduction_pct)
    assert record.accuracy_drop_pp == pytest.approx((baseline.accuracy - record.accuracy) * 100)
    assert record.drop_ci_low_pp <= record.accuracy_drop_pp <= record.drop_ci_high_pp
    assert record.per_task["dse_arc_easy"].n_docs == 6
    assert record.latency_ratio is not None and record.energy_ratio is not None
    assert record.edp_ratio == pytest.approx(record.latency_ratio * record.energy_ratio)
    assert record.gamma_hash == gamma.hash(tiny_llama.spec)
    with torch.no_grad():
        assert torch.equal(tiny_llama.model(ids).logits, before)


def test_hopeless_trial_stops_after_one_chunk(tiny_llama, data_dir, baseline, evaluator) -> None:  # type: ignore[no-untyped-def]
    early = Evaluator(
        tiny_llama, _settings(data_dir=str(data_dir), chunk_size=2), cache=evaluator.cache,
        progress=False,
    )
    # Any drop is "certainly above" τ = -1000 pp, so the first chunk decides.
    record = early.evaluate(DecompositionConfig(layers=(2,), rank=1), baseline, tau=-1000.0)
    assert record.early_stopped
    assert record.per_task["dse_arc_easy"].n_docs == 2
    assert record.latency_s is None and record.edp_ratio is None
    assert "τ=-1000 pp" in (record.stop_reason or "")
    assert record.feasible is False and record.decision_docs == 2 and record.decided_by == record.stop_reason


def test_settings_keys_separate_accuracy_from_efficiency() -> None:
    a = _settings()
    b = _settings(measure_latency=False, measure_energy=False)
    assert a.accuracy_key() == b.accuracy_key()
    assert a.key() != b.key()
    assert a.key() == _settings(data_dir="/elsewhere", chunk_size=3).key()
    assert a.accuracy_key() != _settings(limit=7).accuracy_key()


def test_the_fast_switch_picks_the_scoring_path_and_keeps_the_keys(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    plain = _settings(fast=False)
    assert plain.key() == _settings().key() and plain.accuracy_key() == _settings().accuracy_key()
    assert Evaluator(tiny_llama, plain, progress=False).accuracy.fast is False
    assert Evaluator(tiny_llama, _settings(), progress=False).accuracy.fast is True


def test_baseline_of_other_weights_is_refused(evaluator, baseline) -> None:  # type: ignore[no-untyped-def]
    forged = baseline.model_copy(update={"fingerprint": "0" * 16})
    with pytest.raises(InvalidConfigError, match=r"other weights|weights"):
        evaluator.evaluate(DecompositionConfig(layers=(1,)), forged)


def test_invalid_gamma_is_refused_before_surgery(evaluator, baseline, tiny_llama) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidConfigError, match="out of range"):
        evaluator.evaluate(DecompositionConfig(layers=(9,)), baseline)
    assert tiny_llama.applied is None


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [({"tasks": ()}, "no tasks given"), ({"limit": 0}, "greater than or equal to 1"),
     ({"tasks": ("a", "a")}, "a given twice")],
)
def test_bad_settings_say_what_is_allowed(fields, fragment) -> None:  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=fragment):
        _settings(**fields)


def test_trial_in_a_fresh_evaluator_measures_efficiency_side_by_side(tiny_llama, data_dir, baseline, evaluator) -> None:  # type: ignore[no-untyped-def]
    """A resumed study's evaluator has a stored baseline and no efficiency measured yet."""
    fresh = Evaluator(tiny_llama, _settings(data_dir=str(data_dir)), cache=evaluator.cache, progress=False)
    gamma = DecompositionConfig(layers=(0, 2), tensors=("up", "down"), rank=2)
    record = fresh.evaluate(gamma, baseline)
    predicted = parameter_report(tiny_llama.spec, gamma)
    assert record.params == predicted.params_after
    assert record.memory_ratio == pytest.approx(predicted.params_after / predicted.params_before, rel=1e-3)
    assert record.latency_ratio is not None and record.latency_ratio > 0
    assert tiny_llama.applied is None and not tiny_llama.originals


def test_memo_key_separates_devices_but_the_accuracy_baseline_is_shared() -> None:
    cpu, gpu = _settings(device="cpu"), _settings(device="cuda")
    assert cpu.key() != gpu.key()
    assert cpu.accuracy_key() == gpu.accuracy_key()


def test_memo_reuses_the_measurement_and_rederives_the_decision(tiny_llama, data_dir, baseline, evaluator) -> None:  # type: ignore[no-untyped-def]
    chunked = Evaluator(
        tiny_llama, _settings(data_dir=str(data_dir), chunk_size=2, measure_latency=False, measure_energy=False,
                              measure_memory=False),
        cache=evaluator.cache, progress=False,
    )
    gamma = DecompositionConfig(layers=(1,), rank=1)
    full = chunked.evaluate(gamma, baseline, tau=100.0)
    assert full.feasible and full.decision_docs == 6 and full.per_doc is not None
    assert len(full.per_doc["dse_arc_easy"]) == 6
    stored = full.model_dump(mode="json")
    # The same τ: the same decision, from the stored per-document results alone.
    again = chunked.rederive(stored, baseline, 100.0)
    assert again is not None
    assert (again.feasible, again.decision_docs, again.accuracy_drop_pp) == (True, 6, full.accuracy_drop_pp)
    # A τ the full measurement stops under: the record a fresh run would make (stopped at the first look).
    fresh = chunked.evaluate(gamma, baseline, tau=-1000.0)
    judged = chunked.rederive(stored, baseline, -1000.0)
    assert judged is not None and judged.early_stopped and fresh.early_stopped
    assert (judged.decision_docs, judged.decided_by, judged.accuracy_drop_pp) == (
        fresh.decision_docs, fresh.decided_by, fresh.accuracy_drop_pp)
    # An early stop never answers a τ under which the γ would have gone on: measured again.
    assert chunked.rederive(fresh.model_dump(mode="json"), baseline, 100.0) is None


def test_confident_mode_needs_the_upper_bound_below_tau(tiny_llama, data_dir, baseline, evaluator) -> None:  # type: ignore[no-untyped-def]
    confident = Evaluator(
        tiny_llama, _settings(data_dir=str(data_dir), feasibility="confident", measure_latency=False,
                              measure_energy=False, measure_memory=False),
        cache=evaluator.cache, progress=False,
    )
    record = confident.evaluate(DecompositionConfig(layers=(3,), rank=1), baseline, tau=4.0)
    assert record.decision_ci_pp is not None
    # Six documents give an interval tens of pp wide: never confidently below τ = 4 pp.
    assert record.decision_ci_pp[1] > 4.0 and record.feasible is False
    assert record.feasibility == "confident" and "straddling" in (record.decided_by or "")
