"""``dse decompose`` and ``dse generate``: flags in, :mod:`dse.decompose_api` called, tables or JSON out."""

from __future__ import annotations

from typing import Any

import click

from dse.cli._common import emit_json, gamma_options, print_table
from dse.cli._methods import KEEP_CONVENTION, calibration_from_options, keep_options, method_options
from dse.models import DTYPES

__all__ = ["decompose", "generate"]


def _cache_options(func: Any) -> Any:
    func = click.option("--no-cache", is_flag=True,
                        help="Decompose every tensor afresh; neither read nor write the factor cache.")(func)
    func = click.option("--cache-dir", default=None, metavar="DIR",
                        help="Cache root; factors go to DIR/factors (default: $DSE_CACHE_DIR, else the "
                             "platform cache dir).")(func)
    return keep_options(method_options(func))


@click.command()
@click.argument("model")
@gamma_options
@_cache_options
@click.option("--fold", is_flag=True,
              help="Fold Γ into U1: two matmuls instead of three, but H·r + r·W parameters "
                   "instead of the paper's H·r + r² + r·W.")
@click.option("--out", default=None, metavar="DIR",
              help="Save the decomposed model to DIR: factors + γ + base model reference, and a Hugging Face "
                   "model with remote code (AutoModelForCausalLM + trust_remote_code, lm-eval's hf model).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def decompose(model: str, layers: str, tensors: str, rank: int | None, keep: float | None,
              method: str, cache_dir: str | None, no_cache: bool, fold: bool, out: str | None,
              device: str, dtype: str, as_json: bool, **calibration_options: Any) -> None:
    """Decompose MODEL by a γ: parameters before/after, error per tensor, time, cache use.

    MODEL is smollm2-135m (the embedded default), tiny-llama, a local directory or a
    Hugging Face id. Examples: dse decompose smollm2-135m --layers 2,17,29 --rank 1;
    dse decompose smollm2-135m --layers all --keep 0.9 --method svd-llm
    """
    from dse.decompose_api import decompose_model

    result = decompose_model(
        model, layers=layers, tensors=tensors, rank=rank, keep=keep, method=method,
        calibration=calibration_from_options(calibration_options), fold=fold, out=out, device=device,
        dtype=dtype, cache_dir=cache_dir, use_cache=not no_cache, progress=not as_json,
    )
    if as_json:
        emit_json(result)
        return
    print_table(
        f"{model}: {result['description']} ({result['method']}, "
        f"{'two factors' if result['fold'] else 'three factors'})",
        ["layer", "tensor", "rank", "method", "rel. error", "factors from"],
        [[t["layer"], t["tensor"], t["rank"], t["method"], f"{t['rel_error']:.4f}",
          "cache" if t["cached"] else "decomposition"] for t in result["per_tensor"]],
    )
    if keep is not None:
        click.echo(f"keep {keep:g}: {KEEP_CONVENTION}")
    rows = [
        ["parameters before", f"{result['params_before']:,}"],
        ["parameters after", f"{result['params_after']:,}"],
        ["reduction", f"{result['param_reduction_pct']:.2f}%"],
        ["max rel. error", f"{result['max_rel_error']:.4f}"],
        ["decompose time", f"{result['decompose_seconds']:.2f} s"],
        ["cache hits / misses", f"{result['cache_hits']} / {result['cache_misses']}"],
    ]
    if result["out"] is not None:
        rows.append(["saved to", result["out"]])
    print_table(None, ["", ""], rows)


@click.command()
@click.argument("model_or_dir", metavar="MODEL_OR_DIR")
@gamma_options
@_cache_options
@click.option("--prompt", required=True, help="Text to continue (plain text, no chat template).")
@click.option("--max-new-tokens", type=int, default=16, show_default=True)
@click.option("--compare", is_flag=True, help="Also print the original model's continuation.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(DTYPES), default=None,
              help="[default: float32; a saved directory uses its own dtype]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def generate(model_or_dir: str, layers: str, tensors: str, rank: int | None, keep: float | None,
             method: str, cache_dir: str | None, no_cache: bool, prompt: str, max_new_tokens: int,
             compare: bool, device: str, dtype: str | None, as_json: bool,
             **calibration_options: Any) -> None:
    """Greedy-decode PROMPT with a model, decomposed by a γ or loaded from `decompose --out`.

    Example: dse generate smollm2-135m --layers 0,1 --prompt "The capital of France is" --compare
    """
    from dse.decompose_api import generate as generate_api

    result = generate_api(
        model_or_dir, prompt=prompt, max_new_tokens=max_new_tokens, compare=compare, layers=layers,
        tensors=tensors, rank=rank, keep=keep, method=method,
        calibration=calibration_from_options(calibration_options), device=device, dtype=dtype,
        cache_dir=cache_dir, use_cache=not no_cache, progress=not as_json,
    )
    if as_json:
        emit_json(result)
        return
    original = result.get("original_continuation")
    if original is None:
        click.echo(prompt + result["continuation"])
        return
    print_table(
        f"{result['model']}: greedy continuation of {prompt!r}",
        ["model", "continuation"],
        [["original", original], [result["description"], result["continuation"]]],
    )
