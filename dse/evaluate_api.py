"""``dse.evaluate``: one γ measured against the undecomposed model, the Python side of ``dse evaluate``.

>>> import dse
>>> result = dse.evaluate("smollm2-135m", layers=[10, 20], tasks=["dse_arc_easy"], limit=50,
...                       latency=True, energy=True, tau=4.0)  # doctest: +SKIP
>>> result["accuracy_drop_pp"], result["drop_ci_pp"], result["edp_ratio"], result["edp_ratio_ci"]  # doctest: +SKIP

All of ``dse evaluate`` happens here (saved model directories, ``keep``, calibrated
methods, perplexity, lm-eval's own files); the CLI only parses its flags, calls
:func:`evaluate` and prints the dict it returns (docs/cli-json.md names its keys).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dse.gamma_args import KEEP_CONVENTION, gamma_for, gamma_for_model, prepare_calibration
from space.errors import DataError, InvalidConfigError

if TYPE_CHECKING:
    from dse.calibration import CalibrationSettings
    from dse.evaluation import Evaluator
    from dse.models import LoadedModel
    from dse.records import MeasurementSettings
    from dse.saving import DecomposedManifest
    from space.config import DecompositionConfig

__all__ = ["evaluate"]

_NOT_IN_RESULT = {"per_doc", "gamma_hash", "versions", "accuracy_key"}  # per-document data, internal keys


def evaluate(
    model: str,
    gamma: DecompositionConfig | None = None,
    *,
    layers: Sequence[int] | str = (),
    tensors: Sequence[str] | str = "all",
    rank: int | None = None,
    keep: float | None = None,
    tasks: Sequence[str] | str = ("dse_arc_easy",),
    limit: int = 100,
    batch_size: int = 16,
    data_dir: str | None = None,
    perplexity: bool = False,
    ppl_tokens: int | None = 16384,
    latency: bool = False,
    energy: bool = False,
    prefill: int = 128,
    decode: int = 32,
    repeats: int = 3,
    max_repeats: int = 8,
    ratio_width: float = 0.02,
    threads: int | None = None,
    method: str = "svd",
    calibration: CalibrationSettings | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    cache_dir: str | None = None,
    tau: float | None = None,
    feasibility: str = "point",
    confidence: float = 0.95,
    max_limit: int | None = None,
    chunk_size: int | None = None,
    document_order: str = "file",
    document_seed: int = 0,
    output_path: str | None = None,
    log_samples: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure ``model`` decomposed by γ against the undecomposed ``model``; the ``--json`` dict.

    γ is ``gamma``, or ``layers`` (0-based, or ``"all"``), ``tensors`` and ``rank`` or
    ``keep`` (a kept-parameter ratio), decomposed by ``method`` (the calibrated methods
    calibrate under ``calibration``). ``model`` may be a directory written by
    ``dse decompose --out``: its base model is measured with its own γ and method.
    Accuracy drops are paired on the same documents (percentage points, with intervals);
    with ``tau`` the result also says whether γ is feasible under ``feasibility`` and why.
    Latency and energy are ratios to the original modules from paired ABBA runs, with
    intervals (``latency_ratio_ci``, ``edp_ratio_ci``), the ``repeats`` used and ``noisy``.
    ``document_order="file"`` (the default) evaluates the first ``limit`` documents, as
    lm-eval's ``--limit`` does; ``"seeded"`` a seeded random sample, as studies do.
    ``output_path`` also writes lm-eval's own results files (``log_samples``: its samples).

    Raises:
        DseError: bad input (one line, what is allowed), unknown model or task, missing data.
    """
    from dse.calibration import CalibrationSettings

    if cache_dir:
        os.environ["DSE_CACHE_DIR"] = cache_dir
    if limit < 1:
        raise InvalidConfigError(f"--limit must be at least 1, got {limit}")
    if log_samples and output_path is None:
        raise InvalidConfigError("--log-samples writes lm-eval's samples files; give --output-path DIR too")
    given = gamma if gamma is not None else gamma_for(layers, tensors, rank, keep, n_layers=1, method=method)
    saved = _saved_model(model, given, dtype)
    if saved is not None:  # a directory from `dse decompose --out`: its base model, γ and method
        model, gamma, method, dtype = saved.base.name, saved.config(), saved.method, saved.base.dtype
    gamma = gamma_for_model(model, layers, tensors, rank, keep, method, gamma)  # before the slow load
    settings = _settings(tasks, limit, batch_size, data_dir, prefill, decode, repeats, latency, energy, method,
                         device, confidence, feasibility, max_limit, chunk_size, document_order, document_seed,
                         threads, ratio_width, max_repeats)

    from dse.baselines import BaselineStore
    from dse.evaluation import Evaluator
    from dse.models import load_model

    loaded = load_model(model, device=device, dtype=dtype)
    if saved is not None and loaded.fingerprint != saved.base.fingerprint:
        raise DataError(f"{model} now has fingerprint {loaded.fingerprint}, but the saved model was "
                        f"decomposed from {saved.base.fingerprint}; decompose it again")
    prepare_calibration(loaded, gamma, method, calibration or CalibrationSettings(), cache_dir=cache_dir,
                        progress=progress)
    evaluator = Evaluator(loaded, settings, progress=progress)
    store = BaselineStore()
    baseline = store.get(loaded.fingerprint, settings.accuracy_key())
    if baseline is None:
        baseline = evaluator.baseline()
        store.put(baseline)
    record = evaluator.evaluate(gamma, baseline, tau=tau)
    result: dict[str, Any] = {
        "model": model,
        "tasks": list(settings.tasks),
        "limit": limit,
        "drop_ci_pp": [record.drop_ci_low_pp, record.drop_ci_high_pp],
        **record.model_dump(mode="json", exclude=_NOT_IN_RESULT),
        "versions": record.versions,
        "method": method,
        "rank_convention": KEEP_CONVENTION if keep is not None else "absolute rank per tensor",
    }
    if perplexity:
        result |= _perplexities(loaded, gamma, evaluator, data_dir, ppl_tokens or None)
    if output_path is not None:
        result["lm_eval_output"] = _lm_eval_files(loaded, gamma, evaluator, output_path, log_samples,
                                                  f"{loaded.name}-lowrank-{record.gamma_hash}")
    return result


def _settings(tasks: Sequence[str] | str, limit: int, batch_size: int, data_dir: str | None, prefill: int,
              decode: int, repeats: int, latency: bool, energy: bool, method: str, device: str,
              confidence: float, feasibility: str, max_limit: int | None, chunk_size: int | None,
              document_order: str, document_seed: int, threads: int | None, ratio_width: float,
              max_repeats: int) -> MeasurementSettings:
    """The measurement settings, with the tasks and their data checked (bad input fails before loading)."""
    from pydantic import ValidationError

    from dse.records import MeasurementSettings
    from objectives.registry import make
    from objectives.tasks import task_list
    from objectives.workload import Workload

    task_names = task_list(tasks)
    try:
        settings = MeasurementSettings(
            tasks=task_names, limit=limit, batch_size=batch_size, data_dir=data_dir,
            workload=Workload(prefill_tokens=prefill, decode_tokens=decode, repeats=repeats),
            measure_latency=latency, measure_energy=energy, measure_memory=True, method=method,
            device=device, confidence=confidence, feasibility=feasibility,
            max_limit=max_limit, chunk_size=chunk_size, document_order=document_order,
            document_seed=document_seed, threads=threads, ratio_width=ratio_width, max_repeats=max_repeats,
        )
    except ValidationError as exc:  # one line: the first problem, what is allowed
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise InvalidConfigError(f"{where}: {first['msg']}") from None
    make("accuracy", task_names, limit=settings.planned_limit, batch_size=batch_size, data_dir=data_dir,
         show_progress=False)
    return settings


def _saved_model(path: str, gamma: DecompositionConfig, dtype: str) -> DecomposedManifest | None:
    """The manifest when ``path`` is a saved decomposed directory (which carries its own γ)."""
    from dse import saving

    if not saving.is_decomposed_dir(path):
        return None
    if not gamma.is_identity:
        raise InvalidConfigError(f"{path!r} is a saved decomposed model and carries its own γ; "
                                 f"drop --layers/--tensors/--rank")
    manifest = saving.read_manifest(path)
    if dtype != "float32" and dtype != manifest.base.dtype:
        raise InvalidConfigError(f"{path!r} was saved in {manifest.base.dtype}; drop --dtype")
    return manifest


def _lm_eval_files(loaded: LoadedModel, gamma: DecompositionConfig, evaluator: Evaluator, output_path: str,
                   log_samples: bool, label: str) -> dict[str, Any]:
    """lm-eval's own files for the original and the decomposed model (a second, lm-eval-only pass)."""
    from dse.surgery import decomposed
    from objectives.lm_eval_output import write_lm_eval_run

    settings = evaluator.settings
    common: dict[str, Any] = {"out_dir": output_path, "limit": settings.limit, "batch_size": settings.batch_size,
                              "data_dir": settings.data_dir, "log_samples": log_samples}
    original = write_lm_eval_run(loaded.target(), settings.tasks, label=loaded.name, **common)
    with decomposed(loaded, gamma, cache=evaluator.cache, method=settings.method):
        compressed = write_lm_eval_run(loaded.target(), settings.tasks, label=label, **common)
    return {"original": original, "decomposed": compressed}


def _perplexities(loaded: LoadedModel, gamma: DecompositionConfig, evaluator: Evaluator, data_dir: str | None,
                  max_tokens: int | None) -> dict[str, Any]:
    """WikiText-2 perplexity of the original and the decomposed model."""
    from dse.surgery import decomposed
    from objectives.registry import make

    objective = make("perplexity", data_dir=data_dir, max_tokens=max_tokens)
    base = objective.measure(loaded.target())
    with decomposed(loaded, gamma, cache=evaluator.cache, method=evaluator.settings.method):
        compressed = objective.measure(loaded.target())
    return {
        "perplexity": compressed.perplexity,
        "baseline_perplexity": base.perplexity,
        "perplexity_tokens": compressed.tokens,
    }
