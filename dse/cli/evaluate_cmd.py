"""``dse evaluate``: baseline, compressed and drop side by side for one γ."""

from __future__ import annotations

from typing import Any

import click

from dse.cli._common import emit_json, gamma_options, print_table
from dse.cli._methods import (
    KEEP_CONVENTION,
    calibration_from_options,
    gamma_for,
    keep_options,
    method_options,
    prepare_calibration,
)

__all__ = ["evaluate"]


def _pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ci(interval: list[float] | None, digits: int = 3) -> str:
    return "" if not interval else f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


@click.command()
@click.argument("model")
@gamma_options
@click.option("--tasks", "task_list", default="dse_arc_easy", show_default=True,
              help="Comma-separated tasks: local dse_* tasks, or lm-eval hub task names.")
@click.option("--limit", type=int, default=100, show_default=True,
              help="Documents per task (the same documents every time).")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Benchmark data directory (default: $DSE_DATA_DIR, else ../shared/data).")
@click.option("--perplexity", is_flag=True, help="Also measure WikiText-2 perplexity.")
@click.option("--ppl-tokens", type=int, default=16384, show_default=True,
              help="Tokens of WikiText-2 used for --perplexity (0: all).")
@click.option("--latency", is_flag=True, help="Measure latency (prefill + decode workload).")
@click.option("--energy", is_flag=True, help="Measure energy (NVML, RAPL, or a CPU-time estimate).")
@click.option("--prefill", type=int, default=128, show_default=True, help="Workload prefill tokens.")
@click.option("--decode", type=int, default=32, show_default=True, help="Workload decode steps.")
@click.option("--repeats", type=int, default=3, show_default=True, help="ABBA blocks at least.")
@click.option("--max-repeats", type=int, default=8, show_default=True, help="ABBA blocks at most.")
@click.option("--ratio-width", type=float, default=0.02, show_default=True,
              help="Stop adding blocks once the latency ratio's interval is within ± this (relative).")
@click.option("--threads", type=int, default=None, help="Threads of the timed runs (default: usable cores).")
@click.option("--tau", type=float, default=None, help="Also decide feasibility: accuracy-drop tolerance in pp.")
@click.option("--feasibility", type=click.Choice(["point", "confident", "adaptive"]), default="point",
              show_default=True, help="How --tau is decided (see docs/objectives.md).")
@click.option("--confidence", type=float, default=0.95, show_default=True)
@click.option("--max-limit", type=int, default=None, help="adaptive: documents per task at most.")
@click.option("--chunk-size", type=int, default=None, help="Documents per task between looks (early stop).")
@click.option("--document-order", type=click.Choice(["seeded", "file"]), default="file", show_default=True,
              help="file: the first --limit documents, as lm-eval's --limit takes them; seeded: a seeded random "
                   "sample in a fixed order (what studies use).")
@click.option("--document-seed", type=int, default=0, show_default=True)
@keep_options
@method_options
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--dtype", default="float32", show_default=True, help="float32, bfloat16 or float16.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache directory (default: $DSE_CACHE_DIR, else the platform cache dir).")
@click.option("--output-path", "output_path", default=None, metavar="DIR",
              help="Also write lm-eval's results file (its schema) for the original and the decomposed "
                   "model under DIR/<model>/, from lm-eval's simple_evaluate on the same documents.")
@click.option("--log-samples", is_flag=True, help="With --output-path: also lm-eval's per-document samples files.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(
    model: str, layers: str, tensors: str, rank: int | None, keep: float | None, task_list: str,
    limit: int,
    batch_size: int, data_dir: str | None, perplexity: bool, ppl_tokens: int, latency: bool,
    energy: bool, prefill: int, decode: int, repeats: int, method: str, device: str, dtype: str,
    cache_dir: str | None, output_path: str | None, log_samples: bool, as_json: bool,
    max_repeats: int, ratio_width: float, threads: int | None, tau: float | None, feasibility: str,
    confidence: float, max_limit: int | None, chunk_size: int | None, document_order: str, document_seed: int,
    **calibration_options: Any,
) -> None:
    """Measure MODEL decomposed by a γ against the undecomposed MODEL.

    MODEL may be a directory written by `dse decompose --out` or `dse study best
    --save-model`: its base model is measured with its γ and method.

    Accuracy drops are paired comparisons on the same documents, in percentage points,
    with a 95% confidence interval. Latency and energy are ratios to the baseline
    measured in this same process.
    """
    import os

    from space.errors import InvalidConfigError

    if cache_dir:
        os.environ["DSE_CACHE_DIR"] = cache_dir
    if limit < 1:
        raise InvalidConfigError(f"--limit must be at least 1, got {limit}")
    if log_samples and output_path is None:
        raise InvalidConfigError("--log-samples writes lm-eval's samples files; give --output-path DIR too")
    calibration = calibration_from_options(calibration_options)
    gamma = gamma_for(layers, tensors, rank, keep, n_layers=1, method=method)  # checks the options early
    from objectives.tasks import task_list as parse_tasks

    tasks = parse_tasks(task_list)
    saved = _saved_model(model, gamma, dtype)
    if saved is not None:  # a directory from `dse decompose --out`: its base model, γ and method
        model, gamma, method, dtype = saved.base.name, saved.config(), saved.method, saved.base.dtype

    from pydantic import ValidationError

    from dse.baselines import BaselineStore
    from dse.evaluation import Evaluator, MeasurementSettings
    from dse.models import load_model
    from objectives.workload import Workload

    try:
        settings = MeasurementSettings(
            tasks=tasks, limit=limit, batch_size=batch_size, data_dir=data_dir,
            workload=Workload(prefill_tokens=prefill, decode_tokens=decode, repeats=repeats),
            measure_latency=latency, measure_energy=energy, measure_memory=True, method=method,
            device=device, confidence=confidence, feasibility=feasibility, max_limit=max_limit,
            chunk_size=chunk_size, document_order=document_order, document_seed=document_seed, threads=threads,
            ratio_width=ratio_width, max_repeats=max_repeats,
        )
    except ValidationError as exc:  # one line: the first problem
        first = exc.errors()[0]
        raise InvalidConfigError(f"{'.'.join(str(p) for p in first['loc']) or 'settings'}: {first['msg']}") from None
    # Check the tasks and data before loading a model: bad input fails in a second.
    from objectives.accuracy import AccuracyObjective

    AccuracyObjective(tasks, limit=settings.planned_limit, batch_size=batch_size, data_dir=data_dir)

    loaded = load_model(model, device=device, dtype=dtype)
    if saved is None:
        gamma = gamma_for(layers, tensors, rank, keep, n_layers=loaded.spec.n_layers, method=method)
    gamma.validate_for(loaded.spec)
    if saved is not None and loaded.fingerprint != saved.base.fingerprint:
        from space.errors import DataError

        raise DataError(f"{model} now has fingerprint {loaded.fingerprint}, but the saved model was "
                        f"decomposed from {saved.base.fingerprint}; decompose it again")
    prepare_calibration(loaded, gamma, method, calibration, cache_dir=cache_dir, progress=not as_json)
    evaluator = Evaluator(loaded, settings, progress=not as_json)
    store = BaselineStore()
    baseline = store.get(loaded.fingerprint, settings.accuracy_key())
    if baseline is None:
        baseline = evaluator.baseline()
        store.put(baseline)
    record = evaluator.evaluate(gamma, baseline, tau=tau)

    ppl: dict[str, Any] = {}
    if perplexity:
        ppl = _perplexities(loaded, gamma, evaluator, data_dir, ppl_tokens or None)

    lm_eval_files: dict[str, Any] = {}
    if output_path is not None:
        lm_eval_files = _lm_eval_files(loaded, gamma, evaluator, tasks, limit, batch_size, data_dir, output_path,
                                       log_samples, f"{loaded.name}-lowrank-{record.gamma_hash}")
    result = {
        "model": model,
        "gamma": record.gamma,
        "gamma_label": record.gamma_label,
        "tasks": list(tasks),
        "limit": limit,
        "accuracy": record.accuracy,
        "baseline_accuracy": record.baseline_accuracy,
        "accuracy_drop_pp": record.accuracy_drop_pp,
        "drop_ci_low_pp": record.drop_ci_low_pp,
        "drop_ci_high_pp": record.drop_ci_high_pp,
        "drop_ci_pp": [record.drop_ci_low_pp, record.drop_ci_high_pp],
        "per_task": {name: task.model_dump() for name, task in record.per_task.items()},
        "latency_s": record.latency_s,
        "latency_ratio": record.latency_ratio,
        "energy_j": record.energy_j,
        "energy_ratio": record.energy_ratio,
        "energy_method": record.energy_method,
        "energy_estimated": record.energy_estimated,
        "edp_ratio": record.edp_ratio,
        "memory_bytes": record.memory_bytes,
        "memory_ratio": record.memory_ratio,
        "params": record.params,
        "params_before": record.params_before,
        "param_reduction_pct": record.param_reduction_pct,
        "max_rel_error": record.max_rel_error,
        # ratio intervals, how they were measured, and the decision under --tau
        **record.model_dump(mode="json", include={
            "latency_ratio_ci", "latency_method", "energy_ratio_ci", "edp_ratio_ci", "edp_method", "repeats",
            "noisy", "noise", "threads", "hardware", "standins", "tau", "feasible", "feasibility", "decided_by",
            "decision_docs", "decision_ci_pp", "early_stopped", "stop_reason",
        }),
        "method": method,
        "rank_convention": KEEP_CONVENTION if keep is not None else "absolute rank per tensor",
        **ppl,
    }
    if lm_eval_files:
        result["lm_eval_output"] = lm_eval_files
    if as_json:
        emit_json(result)
        return
    _print_result(result)


def _lm_eval_files(loaded: Any, gamma: Any, evaluator: Any, tasks: Any, limit: int, batch_size: int,
                   data_dir: str | None, output_path: str, log_samples: bool, label: str) -> dict[str, Any]:
    """lm-eval's own files for the original and the decomposed model (a second, lm-eval-only pass)."""
    from dse.surgery import decomposed
    from objectives.lm_eval_output import write_lm_eval_run

    common: dict[str, Any] = {"out_dir": output_path, "limit": limit, "batch_size": batch_size,
                              "data_dir": data_dir, "log_samples": log_samples}
    original = write_lm_eval_run(loaded.target(), tasks, label=loaded.name, **common)
    with decomposed(loaded, gamma, cache=evaluator.cache, method=evaluator.settings.method):
        compressed = write_lm_eval_run(loaded.target(), tasks, label=label, **common)
    return {"original": original, "decomposed": compressed}


def _saved_model(path: str, gamma: Any, dtype: str) -> Any:
    """The manifest when MODEL is a saved decomposed directory (which carries its own γ)."""
    from dse import saving
    from space.errors import InvalidConfigError

    if not saving.is_decomposed_dir(path):
        return None
    if not gamma.is_identity:
        raise InvalidConfigError(f"{path!r} is a saved decomposed model and carries its own γ; "
                                 f"drop --layers/--tensors/--rank")
    manifest = saving.read_manifest(path)
    if dtype != "float32" and dtype != manifest.base.dtype:
        raise InvalidConfigError(f"{path!r} was saved in {manifest.base.dtype}; drop --dtype")
    return manifest


def _perplexities(loaded: Any, gamma: Any, evaluator: Any, data_dir: str | None,
                  max_tokens: int | None) -> dict[str, Any]:
    from dse.surgery import decomposed
    from objectives.perplexity import PerplexityObjective

    objective = PerplexityObjective(data_dir=data_dir, max_tokens=max_tokens)
    base = objective.measure(loaded.target())
    with decomposed(loaded, gamma, cache=evaluator.cache, method=evaluator.settings.method):
        compressed = objective.measure(loaded.target())
    return {
        "perplexity": compressed.perplexity,
        "baseline_perplexity": base.perplexity,
        "perplexity_tokens": compressed.tokens,
    }


def _print_result(result: dict[str, Any]) -> None:
    rows = []
    for name, task in result["per_task"].items():
        rows.append([
            name, _pct(task["baseline_accuracy"] * 100, 1), _pct(task["accuracy"] * 100, 1),
            f"{task['drop_pp']:+.1f} [{_pct(task['ci_low_pp'], 1)}, {_pct(task['ci_high_pp'], 1)}]",
            task["n_docs"],
        ])
    rows.append([
        "aggregate", _pct(result["baseline_accuracy"] * 100, 1), _pct(result["accuracy"] * 100, 1),
        f"{result['accuracy_drop_pp']:+.1f} [{_pct(result['drop_ci_pp'][0], 1)}, "
        f"{_pct(result['drop_ci_pp'][1], 1)}]", "",
    ])
    print_table(
        f"{result['model']} · {result['gamma_label']} (layers 0-based)",
        ["task", "baseline acc %", "compressed acc %", "drop pp [95% CI]", "docs"],
        rows,
    )
    facts = [
        ["parameters", f"{result['params_before']:,} → {result['params']:,} "
                       f"(−{result['param_reduction_pct']:.2f}%)"],
    ]
    if result.get("feasible") is not None:
        verdict = "feasible" if result["feasible"] else "not feasible"
        facts.append(["decision", f"{verdict} ({result['feasibility']}, {result['decision_docs']} documents): "
                                  f"{result['decided_by']}"])
    standins = result.get("standins") or {}
    if result["latency_ratio"] is not None:
        facts.append(["latency", f"{result['latency_s']:.4f} s, ×{result['latency_ratio']:.3f}"
                                 f"{_ci(result.get('latency_ratio_ci'))} of baseline"])
    if result["energy_ratio"] is not None:
        how = " (estimated)" if result["energy_estimated"] else ""
        facts.append(["energy", f"{result['energy_j']:.3f} J, ×{result['energy_ratio']:.3f}"
                                f"{_ci(result.get('energy_ratio_ci'))} via {result['energy_method']}{how}"])
    if result["edp_ratio"] is not None:
        label = f" — stand-in: {standins['edp_ratio']}" if "edp_ratio" in standins else ""
        facts.append(["EDP ratio", f"{result['edp_ratio']:.3f}{_ci(result.get('edp_ratio_ci'))}{label}"])
    if result.get("repeats"):
        state = "NOISY: " + "; ".join(result.get("noise") or []) if result.get("noisy") else "quiet"
        facts.append(["runs", f"{result['repeats']} ABBA blocks, {result['threads']} thread(s), {state}"])
    if result.get("perplexity") is not None:
        facts.append(["perplexity", f"{result['baseline_perplexity']:.2f} → {result['perplexity']:.2f} "
                                    f"({result['perplexity_tokens']} WikiText-2 tokens)"])
    print_table(None, ["measure", "value"], facts)
