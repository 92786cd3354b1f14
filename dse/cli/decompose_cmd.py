"""``dse decompose`` and ``dse generate``: apply a γ to a real model and see what it does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from dse.models import DTYPES

if TYPE_CHECKING:
    from dse.cache import FactorCache

__all__ = ["decompose", "generate"]



def _cache(cache_dir: str | None, no_cache: bool) -> FactorCache | None:
    if no_cache:
        return None
    from dse.cache import FactorCache

    return FactorCache.for_cache_dir(cache_dir)


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
    from dse import saving, surgery
    from dse.models import load_model
    from space.errors import InvalidConfigError

    calibration = calibration_from_options(calibration_options)
    gamma = gamma_for(layers, tensors, rank, keep, n_layers=0, method=method)
    if out is not None:
        if gamma.is_identity and layers.strip().lower() != "all":
            raise InvalidConfigError("--out saves a decomposed model, but no --layers were given")
        saving.check_writable(out)  # fail before the slow part
    loaded = load_model(model, device=device, dtype=dtype)
    gamma = gamma_for(layers, tensors, rank, keep, n_layers=loaded.spec.n_layers, method=method)
    gamma.validate_for(loaded.spec)
    prepare_calibration(loaded, gamma, method, calibration, cache_dir=cache_dir, progress=not as_json)
    report = surgery.apply(loaded, gamma, cache=_cache(cache_dir, no_cache), method=method,
                           fold=fold or None, progress=not as_json)
    saved = str(saving.save_decomposed(loaded, report, out)) if out is not None else None
    if as_json:
        extra = {"out": saved, "rank_convention": KEEP_CONVENTION if keep is not None
                 else "absolute rank per tensor"}
        emit_json(report.model_dump(mode="json") | extra)
        return
    print_table(
        f"{model}: {report.description} ({report.method}, "
        f"{'two factors' if report.fold else 'three factors'})",
        ["layer", "tensor", "rank", "method", "rel. error", "factors from"],
        [[t.layer, t.tensor, t.rank, t.method, f"{t.rel_error:.4f}",
          "cache" if t.cached else "decomposition"] for t in report.per_tensor],
    )
    if keep is not None:
        click.echo(f"keep {keep:g}: {KEEP_CONVENTION}")
    rows = [
        ["parameters before", f"{report.params_before:,}"],
        ["parameters after", f"{report.params_after:,}"],
        ["reduction", f"{report.param_reduction_pct:.2f}%"],
        ["max rel. error", f"{report.max_rel_error:.4f}"],
        ["decompose time", f"{report.decompose_seconds:.2f} s"],
        ["cache hits / misses", f"{report.cache_hits} / {report.cache_misses}"],
    ]
    if saved is not None:
        rows.append(["saved to", saved])
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
    from dse import saving, surgery
    from dse.models import load_model
    from space.errors import InvalidConfigError

    calibration = calibration_from_options(calibration_options)
    gamma = gamma_for(layers, tensors, rank, keep, n_layers=1, method=method)  # checks the options early
    if max_new_tokens < 1:
        raise InvalidConfigError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    original: str | None = None
    if saving.is_decomposed_dir(model_or_dir):
        if not gamma.is_identity:
            raise InvalidConfigError(
                f"{model_or_dir!r} is a saved decomposed model and carries its own γ; "
                f"drop --layers/--tensors/--rank"
            )
        manifest = saving.read_manifest(model_or_dir)
        if dtype is not None and dtype != manifest.base.dtype:
            raise InvalidConfigError(
                f"{model_or_dir!r} was saved in {manifest.base.dtype} and runs only in it; "
                f"drop --dtype or give --dtype {manifest.base.dtype}"
            )
        loaded = saving.load_decomposed(model_or_dir, device=device)
        report = surgery.current(loaded)
        text = surgery.greedy_continuation(loaded, prompt, max_new_tokens=max_new_tokens)
        if compare:
            surgery.undo(loaded)
            original = surgery.greedy_continuation(loaded, prompt, max_new_tokens=max_new_tokens)
    else:
        loaded = load_model(model_or_dir, device=device, dtype=dtype or "float32")
        gamma = gamma_for(layers, tensors, rank, keep, n_layers=loaded.spec.n_layers, method=method)
        gamma.validate_for(loaded.spec)
        prepare_calibration(loaded, gamma, method, calibration, cache_dir=cache_dir,
                            progress=not as_json)
        if compare and not gamma.is_identity:
            original = surgery.greedy_continuation(loaded, prompt, max_new_tokens=max_new_tokens)
        report = None
        if not gamma.is_identity:
            report = surgery.apply(loaded, gamma, cache=_cache(cache_dir, no_cache), method=method,
                                   progress=not as_json)
        text = surgery.greedy_continuation(loaded, prompt, max_new_tokens=max_new_tokens)
    label = report.description if report is not None else "original"
    if as_json:
        payload: dict[str, Any] = {
            "model": loaded.name,
            "gamma": report.gamma if report is not None else None,
            "description": label,
            "prompt": prompt,
            "continuation": text,
        }
        if report is not None:
            payload["param_reduction_pct"] = report.param_reduction_pct
            payload["method"] = report.method
            if keep is not None:
                payload["rank_convention"] = KEEP_CONVENTION
        if original is not None:
            payload["original_continuation"] = original
        emit_json(payload)
        return
    if original is None:
        click.echo(prompt + text)
        return
    print_table(
        f"{loaded.name}: greedy continuation of {prompt!r}",
        ["model", "continuation"],
        [["original", original], [label, text]],
    )
