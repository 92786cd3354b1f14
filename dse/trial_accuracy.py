"""A trial's accuracy: measured against the baseline's documents, looked at and decided under τ.

The drop is paired on the same documents (:mod:`objectives.paired`); with τ the looks
follow the settings' sequential rule (:mod:`objectives.sequential`), which may stop the
evaluation early. A stored record is judged again by replaying the looks on its
per-document results, never by trusting its old decision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dse.records import TaskRecord, TrialRecord

if TYPE_CHECKING:
    from dse.records import BaselineRecord, MeasurementSettings
    from objectives.accuracy import AccuracyMeasurement, AccuracyObjective
    from objectives.base import EvalTarget
    from objectives.sequential import Decision, SequentialDecider

__all__ = ["decider", "measure_accuracy", "accuracy_fields", "rederive"]


def decider(s: MeasurementSettings, baseline: AccuracyMeasurement, tau: float) -> SequentialDecider:
    """The sequential decision rule of these settings, for a trial against ``baseline``."""
    from objectives.sequential import SequentialDecider

    planned = {name: task.n_planned for name, task in baseline.per_task.items()}
    minimum = sum(min(n, s.limit) if s.limit is not None else n for n in planned.values())
    return SequentialDecider(tau=tau, confidence=s.confidence, mode=s.feasibility,
                             planned_docs=sum(planned.values()), min_docs=minimum,
                             early_stop=s.chunk_size is not None or s.feasibility == "adaptive")


def measure_accuracy(accuracy: AccuracyObjective, target: EvalTarget, settings: MeasurementSettings,
                     baseline: AccuracyMeasurement,
                     tau: float | None) -> tuple[AccuracyMeasurement, Decision | None]:
    """Accuracy of ``target``; with ``tau``, looked at every ``look_every`` documents and decided."""
    from objectives.paired import paired_drop

    every = settings.look_every
    if tau is None:
        return accuracy.measure(target), None
    rule = decider(settings, baseline, tau)

    def look(partial: AccuracyMeasurement, *, final: bool) -> Decision | None:
        return rule.look(
            lambda c: paired_drop(baseline, partial, aggregate=settings.aggregate,
                                  confidence=settings.confidence, critical=c),
            partial.n_docs_total, final=final,
        )

    decided: list[Decision] = []

    def should_stop(partial: AccuracyMeasurement) -> bool:
        decision = look(partial, final=False)
        if decision is not None:
            decided.append(decision)
        return decision is not None

    if every is None:
        measured = accuracy.measure(target)
    else:
        measured = accuracy.measure_chunked(target, chunk_size=every, should_stop=should_stop)
    return measured, decided[0] if decided else look(measured, final=True)


def accuracy_fields(settings: MeasurementSettings, baseline: BaselineRecord, measured: AccuracyMeasurement,
                    decision: Decision | None) -> dict[str, Any]:
    """The accuracy and decision fields of a trial record, from a measurement and its decision."""
    from objectives.paired import paired_drop

    base = baseline.accuracy_result()
    drop = paired_drop(base, measured, aggregate=settings.aggregate, confidence=settings.confidence)
    fields: dict[str, Any] = {
        "accuracy": measured.accuracy,
        "baseline_accuracy": base.accuracy,
        "accuracy_drop_pp": drop.drop_pp,
        "drop_ci_low_pp": drop.ci_low_pp,
        "drop_ci_high_pp": drop.ci_high_pp,
        "per_task": {
            name: TaskRecord(accuracy=measured.per_task[name].accuracy,
                             baseline_accuracy=base.per_task[name].accuracy, drop_pp=task.drop_pp,
                             ci_low_pp=task.ci_low_pp, ci_high_pp=task.ci_high_pp, n_docs=task.n_docs)
            for name, task in drop.per_task.items()
        },
        "per_doc": {name: list(task.per_doc) for name, task in measured.per_task.items()},
        "accuracy_key": settings.accuracy_key(),
        "early_stopped": False,
        "stop_reason": None,
    }
    if decision is not None:
        fields.update(
            tau=decision.tau, feasible=decision.feasible, feasibility=decision.mode, decided_by=decision.reason,
            decision_docs=decision.docs, decision_ci_pp=[decision.ci_low_pp, decision.ci_high_pp],
            decision_confidence=decision.confidence,
            early_stopped=decision.stopped_early,
            stop_reason=decision.reason if decision.stopped_early else None,
        )
    return fields


def rederive(settings: MeasurementSettings, record: dict[str, Any], baseline: BaselineRecord, tau: float,
             *, wants_efficiency: bool) -> TrialRecord | None:
    """A memo record judged under these settings and ``tau``: its measurement, never its decision.

    Replays the looks on the stored per-document results. None when they end before a
    decision, or efficiency this decision needs was not measured: measure γ again.
    """
    from objectives.sequential import replay

    per_doc = record.get("per_doc")
    if not per_doc or record.get("accuracy_key") != settings.accuracy_key():
        return None
    base = baseline.accuracy_result()
    stored = base.model_copy(update={
        "per_task": {name: task.model_copy(update={"per_doc": list(per_doc.get(name, []))})
                     for name, task in base.per_task.items()},
    })
    replayed = replay(base, stored, decider(settings, base, tau), chunk_size=settings.look_every,
                      aggregate=settings.aggregate)
    if replayed is None:
        return None
    decision, measured = replayed
    if not decision.stopped_early and record.get("early_stopped") and wants_efficiency:
        return None  # now worth its latency and energy, which were never measured
    return TrialRecord.model_validate(record).model_copy(
        update=accuracy_fields(settings, baseline, measured, decision))
