"""``dse evaluate``: baseline, compressed and drop side by side for one γ."""

from __future__ import annotations

from typing import Any

import click

from dse.cli._common import emit_json, gamma_options, print_table
from dse.cli._methods import calibration_from_options, keep_options, method_options

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
    from dse.evaluate_api import evaluate as evaluate_api

    result = evaluate_api(
        model, layers=layers, tensors=tensors, rank=rank, keep=keep, tasks=task_list, limit=limit,
        batch_size=batch_size, data_dir=data_dir, perplexity=perplexity, ppl_tokens=ppl_tokens, latency=latency,
        energy=energy, prefill=prefill, decode=decode, repeats=repeats, max_repeats=max_repeats,
        ratio_width=ratio_width, threads=threads, method=method,
        calibration=calibration_from_options(calibration_options), device=device, dtype=dtype,
        cache_dir=cache_dir, tau=tau, feasibility=feasibility, confidence=confidence, max_limit=max_limit,
        chunk_size=chunk_size, document_order=document_order, document_seed=document_seed,
        output_path=output_path, log_samples=log_samples, progress=not as_json,
    )
    if as_json:
        emit_json(result)
        return
    _print_result(result)


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
