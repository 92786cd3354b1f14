"""The design space of one real configuration per model family (prints the docs' table).

Architecture only: each preset's published config is instantiated on the meta device
(no weights, nothing downloaded) and read through its family adapter. For every family
it prints the decomposable tensors, how fused / Conv1D / mixture-of-experts weights are
handled, the parameters (all, and in decomposable tensors), and the exact size of the
full space at rank 1 (Theorem 1 with the rank bounds) and of the space the default
rules leave.

Usage: .venv/bin/python benchmarks/family_spaces.py [--json]
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from space.presets import load_spec
from space.presets_families import FAMILY_PRESETS
from space.rules import RuleSet, pruned_report


def _handling(spec: Any) -> list[str]:
    """Fused, Conv1D and experts tensors of a spec, in words."""
    notes = [f"{t.name} = {'+'.join(t.parts)} fused" for t in spec.tensors if t.parts]
    conv = [t.name for t in spec.tensors if t.kind == "conv1d"]
    if conv:
        notes.append(f"Conv1D (transposed): {', '.join(conv)}")
    experts = [t for t in spec.tensors if t.kind == "experts"]
    if experts:
        notes.append(f"per expert ({experts[0].experts} experts, {experts[0].active} per token): "
                     f"{', '.join(t.name for t in experts)}; router never decomposed")
    return notes


def rows() -> list[dict[str, Any]]:
    """One row per family preset."""
    out = []
    for name in FAMILY_PRESETS:
        spec = load_spec(name)
        report = pruned_report(spec, RuleSet.defaults(), rank=1)
        decomposable = spec.n_layers * sum(t.params for t in spec.tensors)
        handling = _handling(spec)
        out.append({
            "preset": name, "family": spec.family, "model_type": spec.model_type,
            "layers": spec.n_layers, "tensors": list(spec.tensor_names), "handling": handling,
            "total_params": spec.total_params, "decomposable_params": decomposable,
            "full_size": report.size, "log2_full": math.log2(report.size),
            "pruned_size": report.pruned_size,
        })
    return out


def markdown(table: list[dict[str, Any]]) -> str:
    """The table as docs/design-space.md prints it."""
    lines = [
        "| family | preset (real config) | decomposable tensors | fused / Conv1D / MoE | layers | "
        "parameters (decomposable) | full space, rank 1 | pruned (default rules) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        share = 100 * r["decomposable_params"] / r["total_params"]
        lines.append(
            f"| {r['family']} | `{r['preset']}` | {', '.join(r['tensors'])} | "
            f"{'; '.join(r['handling']) or 'all nn.Linear'} | {r['layers']} | "
            f"{r['total_params'] / 1e9:.3f} B ({share:.1f} %) | 2^{r['log2_full']:.2f} | "
            f"{r['pruned_size']:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Print the table (markdown, or JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args()
    table = rows()
    print(json.dumps(table, indent=2) if args.json else markdown(table))


if __name__ == "__main__":
    main()
