"""``dse space``: inspect an architecture, count its design space, check one γ.

Only ``space`` is imported here: once a preset's spec is cached these commands never
load torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from dse.cli._common import emit_json, gamma_from_options, gamma_options, json_option, print_table

__all__ = ["space"]

_LAYER_NOTE = "Layer indices are 0-based (the paper's tables are 1-based: its layer 3 is our 2)."


def _rule_options(func: Any) -> Any:
    func = click.option(
        "--no-rules", is_flag=True,
        help="Start from no rule (the full space); --rule then switches single rules on.",
    )(func)
    func = click.option(
        "--rule", "rule_items", multiple=True, metavar="NAME[=VALUE]",
        help="Switch a rule on (with VALUE, or its default) or off (NAME=off); repeatable. "
             "Without --no-rules every rule starts on with its default. See `dse space rules`.",
    )(func)
    return func


def _rule_set(rule_items: Sequence[str], no_rules: bool) -> Any:
    from space.rules import RuleSet

    return RuleSet.parse(rule_items, start=RuleSet.off() if no_rules else RuleSet.defaults())


def _num(value: int) -> str:
    return f"{value:,}"


def _bits(value: float) -> str:
    return f"{abs(value):.2f}" if abs(value) < 0.005 else f"{value:.2f}"


@click.group(help=f"Inspect, count and check the decomposition design space. {_LAYER_NOTE}")
def space() -> None:
    """The ``space`` command group."""


@space.command(help="Layers, decomposable tensors (the names γ addresses), shapes, ranks, parameters "
                    "and how each weight is stored (fused, Conv1D, experts). MODEL: a preset, a "
                    "local directory with config.json, or a Hugging Face id.")
@click.argument("model")
@json_option
def show(model: str, as_json: bool) -> None:
    from space.metrics import max_compressing_rank
    from space.presets import load_spec

    spec = load_spec(model)
    layer_params = sum(t.params for t in spec.tensors)
    tensors: list[dict[str, Any]] = [
        {
            "name": t.name,
            "path": t.path,
            "H": t.out_features,
            "W": t.in_features,
            "rank": t.rank,
            "params": t.params,
            "bias": t.bias,
            "kind": t.kind,
            "experts": t.experts,
            "handling": t.handling,
            "max_compressing_rank": max_compressing_rank(t.out_features, t.in_features),
        }
        for t in spec.tensors
    ]
    report = {
        "model": spec.name,
        "family": spec.family,
        "model_type": spec.model_type,
        "n_layers": spec.n_layers,
        "n_tensors": spec.n_tensors,
        "layer_path": spec.layer_path,
        "total_params": spec.total_params,
        "decomposable_params_per_layer": layer_params,
        "layer_pct": 100.0 * layer_params / spec.total_params,
        "hidden_size": spec.hidden_size,
        "vocab_size": spec.vocab_size,
        "tensors": tensors,
    }
    if as_json:
        emit_json(report)
        return
    print_table(
        f"{spec.name} ({spec.family}): {spec.n_layers} layers (0..{spec.n_layers - 1}), "
        f"{_num(spec.total_params)} parameters; one layer's tensors hold "
        f"{report['layer_pct']:.2f}%",
        ["tensor", "module (in a block)", "H", "W", "rank", "params", "max compressing rank",
         "handling"],
        [
            [t["name"], t["path"], t["H"], t["W"], t["rank"], _num(t["params"]),
             t["max_compressing_rank"], t["handling"]]
            for t in tensors
        ],
    )
    click.echo(f"γ addresses these tensors by name: --tensors {','.join(spec.tensor_names)} (or all)")


@space.command(help="The model families with a decomposition adapter: model types and tensor names.")
@json_option
def families(as_json: bool) -> None:
    from space.families import families_table

    rows = families_table()
    if as_json:
        emit_json({"families": rows})
        return
    # One line per family (a table truncates the tensor lists on narrow terminals).
    for row in rows:
        fused = "; ".join(f"{k} = {'|'.join(v)}" for k, v in row["fused"].items())  # type: ignore[attr-defined]
        excluded = ", ".join(row["excluded"])  # type: ignore[arg-type]
        line = (f"{row['family']} ({', '.join(row['model_types'])}): "  # type: ignore[arg-type]
                f"{','.join(row['tensors'])}")  # type: ignore[arg-type]
        if fused:
            line += f"; fused {fused}"
        if row["experts"]:
            line += f"; per expert: {','.join(row['experts'])}"  # type: ignore[arg-type]
        if excluded:
            line += f"; never decomposed: {excluded}"
        click.echo(line)


@space.command(help="Exact size of the design space (Theorem 1) and of the space the rules leave. "
                    "--rank R counts PR ∈ 1..R (default 1, Table II); --fixed-rank counts "
                    "PR = R only.")
@click.argument("model")
@click.option("--rank", type=int, default=1, show_default=True,
              help="R: the largest pruned rank counted (1 ≤ R ≤ the largest min(H, W)).")
@click.option("--fixed-rank", is_flag=True, help="Count only PR = R instead of PR ∈ 1..R.")
@_rule_options
@json_option
def size(model: str, rank: int, fixed_rank: bool, rule_items: Sequence[str], no_rules: bool,
         as_json: bool) -> None:
    from space.presets import load_spec
    from space.rules import pruned_report

    rules = _rule_set(rule_items, no_rules)
    spec = load_spec(model)
    report = pruned_report(spec, rules, rank=rank, fixed=fixed_rank)
    if as_json:
        emit_json(report.model_dump())
        return
    ranks = f"PR = {rank}" if fixed_rank or rank == 1 else f"PR ∈ 1..{rank}"
    rows: list[list[Any]] = [
        ["full space (Theorem 1)", _num(report.size), f"{report.log2_size:.2f}", ""],
    ]
    for effect in report.effects:
        rows.append([f"{effect.label} alone", _num(effect.alone_size),
                     f"{effect.log2_alone_size:.2f}", _bits(effect.alone_shrink_bits)])
    rows.append([f"pruned: {rules.describe()}", _num(report.pruned_size),
                 f"{report.log2_pruned_size:.2f}", _bits(report.shrink_bits)])
    print_table(f"design space of {spec.name}: {spec.n_layers} layers × {spec.n_tensors} "
                f"tensors, {ranks} (sizes include the original model)",
                ["space", "size", "log2", "shrinks by (bits)"], rows)
    if report.empty_rules:
        click.echo(f"note: nothing is left to decompose; blame {', '.join(report.empty_rules)}")


@space.command(help=f"Check one γ: validity, parameter reduction, compression per tensor, "
                    f"MACs and weight bytes. {_LAYER_NOTE}")
@click.argument("model")
@gamma_options
@_rule_options
@click.option("--batch", type=int, default=1, show_default=True, help="Batch size for MACs.")
@click.option("--seq-len", type=int, default=128, show_default=True, help="Tokens per sequence.")
@click.option("--bytes-per-param", type=float, default=2.0, show_default=True,
              help="Bytes per weight (2: FP16/BF16, 4: FP32).")
@json_option
def check(model: str, layers: str, tensors: str, rank: int, rule_items: Sequence[str],
          no_rules: bool, batch: int, seq_len: int, bytes_per_param: float,
          as_json: bool) -> None:
    from space.metrics import parameter_report, workload_cost
    from space.presets import load_spec

    gamma = gamma_from_options(layers, tensors, rank)
    rules = _rule_set(rule_items, no_rules)
    spec = load_spec(model)
    params = parameter_report(spec, gamma)  # validates γ first
    cost = workload_cost(spec, gamma, batch=batch, seq_len=seq_len,
                         bytes_per_param=bytes_per_param)
    verdict = rules.allows(spec, gamma)
    report = {
        "model": spec.name,
        "valid": True,
        "gamma": params.gamma,
        "hash": gamma.hash(spec),
        "canonical": gamma.canonical(spec),
        "params_before": params.params_before,
        "params_after": params.params_after,
        "param_reduction_pct": params.param_reduction_pct,
        "compresses": params.compresses,
        "allowed_by_rules": verdict.allowed,
        "rule_reason": verdict.reason,
        "rules": rules.labels(),
        "per_tensor": [entry.model_dump() for entry in params.per_tensor],
        "cost": cost.model_dump(),
    }
    if as_json:
        emit_json(report)
        return
    groups: dict[tuple[str, int], list[Any]] = {}
    for entry in params.per_tensor:
        groups.setdefault((entry.tensor, entry.rank), []).append(entry)
    print_table(
        f"{spec.name} {params.gamma}: valid; {_num(params.params_before)} → "
        f"{_num(params.params_after)} parameters ({params.param_reduction_pct:.2f}% fewer)",
        ["tensor", "H×W", "rank", "layers", "params each", "ratio", "compresses (max rank)"],
        [
            [name, f"{group[0].H}×{group[0].W}", rank_, len(group),
             f"{_num(group[0].params_before)} → {_num(group[0].params_after)}",
             f"{group[0].compression_ratio:.1f}",
             f"{'yes' if group[0].compresses else 'NO'} ({group[0].max_compressing_rank})"]
            for (name, rank_), group in groups.items()
        ],
    )
    click.echo(
        f"B={batch}, S={seq_len}, {bytes_per_param:g} B/param: "
        f"{cost.macs / 1e9:,.1f} G MACs (was {cost.macs_before / 1e9:,.1f}), "
        f"{cost.weight_bytes / 1e9:,.3f} GB of weights "
        f"(was {cost.weight_bytes_before / 1e9:,.3f}), "
        f"OI {cost.operational_intensity:.1f} MACs/B (was {cost.operational_intensity_before:.1f})"
    )
    if verdict.allowed:
        click.echo(f"rules ({rules.describe()}): allowed")
    else:
        click.echo(f"rules: rejected by {verdict.reason}")


@space.command(name="rules", help="The heuristic rules, their parameters and defaults.")
@json_option
def rules_cmd(as_json: bool) -> None:
    from space.rules import RULE_ORDER, RULES, rule_names

    entries = [
        {
            "name": name,
            "param": RULES.get(name).param,
            "default": RULES.get(name).default,
            "minimum": RULES.get(name).minimum if RULES.get(name).param else None,
            "on_by_default": name in RULE_ORDER,
            "summary": RULES.get(name).summary,
        }
        for name in rule_names()
    ]
    if as_json:
        emit_json({"rules": entries})
        return
    print_table(
        "heuristic rules (on by default; --rule NAME=VALUE, NAME=off, --no-rules)",
        ["rule", "parameter", "default", "keeps a γ when"],
        [[e["name"], e["param"] or "-", "-" if e["default"] is None else e["default"],
          e["summary"]] for e in entries],
    )
