"""What measures a study's trials: the evaluator built from the definition, and the baseline.

The evaluator loads the definition's model (after checking the factor cache is writable,
so a bad cache directory costs one line, not a model load). The baseline is taken from
the baseline store (:mod:`dse.baselines`, the study database's ``dse_baselines``) or
measured once per model fingerprint and settings, and its summary stored in the study.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dse.study.definition import StudyDefinition
from dse.study.storage import retrying

if TYPE_CHECKING:
    from dse.evaluation import BaselineRecord, Evaluator, MeasurementSettings
    from dse.study.lifecycle import Prepared

__all__ = ["BASELINE_ATTR", "EvaluatorFactory", "measurement_settings", "calibration_key",
           "default_evaluator_factory", "baseline_summary", "ensure_baseline"]

logger = logging.getLogger("dse.study")

BASELINE_ATTR = "dse:baseline"

EvaluatorFactory = Callable[..., "Evaluator"]


def measurement_settings(definition: StudyDefinition) -> MeasurementSettings:
    """The evaluator's settings from a study definition."""
    from dse.evaluation import MeasurementSettings

    ev = definition.evaluation
    return MeasurementSettings(
        tasks=ev.tasks, limit=ev.limit, batch_size=ev.batch_size, data_dir=ev.data_dir,
        aggregate=ev.aggregate, workload=definition.workload, measure_latency=ev.measure_latency,
        measure_energy=ev.measure_energy, measure_memory=ev.measure_memory, chunk_size=ev.chunk_size,
        confidence=ev.confidence, method=ev.method, device=definition.device,
        calibration=calibration_key(definition),
        feasibility=ev.feasibility, max_limit=ev.max_limit, document_order=ev.document_order,
        document_seed=ev.document_seed, threads=ev.threads, ratio_width=ev.ratio_width, max_repeats=ev.max_repeats,
        fast=ev.fast,
    )


def calibration_key(definition: StudyDefinition) -> str | None:
    """What the calibrated methods' factors depend on besides the model (keys the memo)."""
    settings = definition.calibration_settings
    if settings is None:
        return None
    import hashlib

    digest = hashlib.sha256(settings.source_path().read_bytes()).hexdigest()[:16]
    return f"{digest}/{settings.model_dump_json()}"


def default_evaluator_factory(definition: StudyDefinition, *, progress: bool = True) -> Evaluator:
    """Load the definition's model and wrap it in an :class:`~dse.evaluation.Evaluator`."""
    from dse.cache import FactorCache
    from dse.evaluation import Evaluator
    from dse.models import load_model

    FactorCache().check_writable()  # before the model loads: a bad cache dir costs one line, not a load
    loaded = load_model(definition.model, device=definition.device, dtype=definition.dtype)
    calibration = definition.calibration_settings
    if calibration is not None:  # once per (model, settings), shared by every worker
        from dse.calibration_store import load_or_collect

        loaded.calibration, _ = load_or_collect(loaded, calibration, progress=progress)
    from dse.study.spectra import register

    register(loaded)  # the spectrum encoding reads this model's weights, not a second copy
    return Evaluator(loaded, measurement_settings(definition), progress=progress)


def baseline_summary(record: BaselineRecord) -> dict[str, Any]:
    """The baseline without its per-document results, for the study's attributes."""
    return record.model_dump(mode="json", exclude={"accuracy_measurement"})


def ensure_baseline(prepared: Prepared, evaluator: Evaluator) -> BaselineRecord:
    """The stored baseline for this model and settings, or a new measurement of it."""
    from dse.baselines import BaselineStore

    store = BaselineStore(prepared.tables)
    baseline = store.get(evaluator.loaded.fingerprint, evaluator.settings.accuracy_key())
    if baseline is None:
        logger.info("measuring the baseline of %s", prepared.definition.model)
        baseline = evaluator.baseline()
        store.put(baseline)
    summary = baseline_summary(baseline)
    if prepared.study.user_attrs.get(BASELINE_ATTR) != summary:
        retrying(lambda: prepared.study.set_user_attr(BASELINE_ATTR, summary))
    return baseline
