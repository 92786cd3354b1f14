"""``dse.evaluate``: one γ measured against the undecomposed model, the Python side of ``dse evaluate``.

>>> import dse
>>> result = dse.evaluate("smollm2-135m", layers=[10, 20], tasks=["dse_arc_easy"], limit=50,
...                       latency=True, energy=True, tau=4.0)  # doctest: +SKIP
>>> result["accuracy_drop_pp"], result["drop_ci_pp"], result["edp_ratio"], result["edp_ratio_ci"]  # doctest: +SKIP

The CLI only parses its flags, calls :func:`evaluate` and prints the dict it returns.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from space.errors import InvalidConfigError

if TYPE_CHECKING:
    from dse.evaluation import Evaluator
    from dse.models import LoadedModel
    from space.config import DecompositionConfig

__all__ = ["evaluate"]


def evaluate(
    model: str,
    gamma: DecompositionConfig | None = None,
    *,
    layers: Sequence[int] | str = (),
    tensors: Sequence[str] | str = "all",
    rank: int = 1,
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
    progress: bool = True,
) -> dict[str, Any]:
    """Measure ``model`` decomposed by γ against the undecomposed ``model``; the ``--json`` dict.

    γ is ``gamma``, or ``layers`` (0-based), ``tensors`` and ``rank``. Accuracy drops are
    paired on the same documents (percentage points, with intervals); with ``tau`` the
    result also says whether γ is feasible under ``feasibility`` and why. Latency and
    energy are ratios to the original modules from paired ABBA runs, with intervals
    (``latency_ratio_ci``, ``edp_ratio_ci``), the ``repeats`` used and ``noisy``.
    ``document_order="file"`` (the default) evaluates the first ``limit`` documents, as
    lm-eval's ``--limit`` does; ``"seeded"`` a seeded random sample, as studies do.

    Raises:
        DseError: bad input (one line, what is allowed), unknown model or task, missing data.
    """
    from pydantic import ValidationError

    from dse.records import MeasurementSettings
    from objectives.workload import Workload
    from space.config import DecompositionConfig, parse_int_list, parse_tensor_list

    if limit < 1:
        raise InvalidConfigError(f"--limit must be at least 1, got {limit}")
    if cache_dir:
        os.environ["DSE_CACHE_DIR"] = cache_dir
    if gamma is None:
        if rank < 1:
            raise InvalidConfigError(f"--rank must be at least 1, got {rank}")
        layer_text = layers if isinstance(layers, str) else ",".join(str(x) for x in layers)
        tensor_text = tensors if isinstance(tensors, str) else ",".join(tensors)
        gamma = DecompositionConfig(layers=parse_int_list(layer_text), tensors=parse_tensor_list(tensor_text),
                                    rank=rank)
    from objectives.tasks import task_list

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
    # Check the tasks and data before loading a model: bad input fails in a second.
    from objectives.registry import make

    make("accuracy", task_names, limit=settings.planned_limit, batch_size=batch_size, data_dir=data_dir,
         show_progress=False)

    from dse.baselines import BaselineStore
    from dse.evaluation import Evaluator
    from dse.models import load_model

    loaded = load_model(model, device=device, dtype=dtype)
    gamma.validate_for(loaded.spec)
    evaluator = Evaluator(loaded, settings, progress=progress)
    store = BaselineStore()
    baseline = store.get(loaded.fingerprint, settings.accuracy_key())
    if baseline is None:
        baseline = evaluator.baseline()
        store.put(baseline)
    record = evaluator.evaluate(gamma, baseline, tau=tau)
    result = {
        "model": model,
        "tasks": list(task_names),
        "limit": limit,
        "drop_ci_pp": [record.drop_ci_low_pp, record.drop_ci_high_pp],
        **record.model_dump(mode="json", exclude={"per_doc", "gamma_hash", "versions", "accuracy_key"}),
        "versions": record.versions,
    }
    if perplexity:
        result |= _perplexities(loaded, gamma, evaluator, data_dir, ppl_tokens or None)
    return result


def _perplexities(loaded: LoadedModel, gamma: DecompositionConfig, evaluator: Evaluator, data_dir: str | None,
                  max_tokens: int | None) -> dict[str, Any]:
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
