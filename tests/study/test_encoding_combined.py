"""The combined encoding: rank-1 layers under the paper's rules, a keep-ratio profile elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from dse.cli import cli
from dse.study.encoding import make_encoding, paper_configs
from dse.study.encoding_ratios import UNTOUCHED, profile_keep
from dse.study.search_space import SearchSpace, build_search_space, check_budget_reachable, check_gamma
from space.config import DecompositionConfig, rank_for_keep
from space.errors import InvalidConfigError
from space.metrics import parameter_report
from space.presets import load_spec

PAPER_RULES = {"rank-one": True, "whole-layers": True, "skip-early": 2, "min-distance": 2}
SMOL = load_spec("smollm2-135m")


def _space(rules: dict[str, Any] = PAPER_RULES, **bounds: Any) -> SearchSpace:
    bounds.setdefault("max_layers", 4)
    return build_search_space(SMOL, rules, methods=("svd-llm",), keep_min=0.5, mixes_deletions=True, **bounds)


def _params(n: int, keep: float, slope: float, gaps: tuple[float, ...] = (0.2, 0.5, 0.3, 0.0, 0.0)) -> dict[str, Any]:
    return {"n_layers": n, **{f"gap_{i}": g for i, g in enumerate(gaps)}, "keep": keep, "slope": slope}


def test_table_iv_seeds_are_rank_one_layers_and_nothing_else() -> None:
    encoding = make_encoding("combined", _space())
    taken, skipped = paper_configs(encoding, limit=2)
    assert [c.gamma.layers for c in taken] == [(2, 27), (2, 16, 29)] and not skipped
    for config in taken:
        assert config.params["keep"] == 1.0 and config.params["slope"] == 0.0
        # The paper's γ (rank 1, whole layers) by the study's method: two factors for svd-llm.
        assert config.gamma == DecompositionConfig(layers=config.gamma.layers, rank=1, method="svd-llm")
        assert config.gamma.is_two_factor()
        assert check_gamma(encoding.space, config.gamma) is None
    # Rank 1 on 2 of 30 layers: 5.25 % of SmolLM2's parameters.
    assert parameter_report(SMOL, taken[0].gamma).param_reduction_pct == pytest.approx(5.2467, abs=1e-3)


def test_decode_places_rank_one_layers_and_keeps_the_profile_elsewhere() -> None:
    space = _space()
    gamma = make_encoding("combined", space).decode(_params(2, keep=0.9, slope=-0.4))
    ranks = gamma.ranks or {}
    deleted = [layer for layer in gamma.layers if ranks[f"{layer}:q"] == 1]
    assert len(deleted) == 2 and deleted[1] - deleted[0] >= 2
    untouched = [layer for layer in space.layers if layer not in gamma.layers]
    # keep 0.9 falling by 0.4 across depth: the first layers keep ≥ 0.995 and stay whole.
    assert untouched and all(profile_keep(space.layers, 0.5, 0.9, -0.4, x) >= UNTOUCHED for x in untouched)
    for layer in set(gamma.layers) - set(deleted):
        keep = profile_keep(space.layers, 0.5, 0.9, -0.4, layer)
        for t in SMOL.tensors:
            assert ranks[f"{layer}:{t.name}"] == rank_for_keep(t.out_features, t.in_features, keep)
    assert gamma.is_two_factor() and check_gamma(space, gamma) is None
    assert gamma.method == "svd-llm" and gamma.methods is None
    others = [r for key, r in ranks.items() if int(key.split(":")[0]) not in deleted]
    runs = f"L[{deleted[0]},{deleted[1]}]"
    assert gamma.describe(SMOL) == (f"L[{gamma.layers[0]},10-29] all r=1 on {runs}, r={min(others)}..{max(others)} "
                                    f"elsewhere svd-llm")
    # search.rank_one_method: the rank-1 layers by another method, named per (layer, tensor) pair.
    plain = make_encoding("combined", _space(rank_one_method="svd")).decode(_params(2, keep=0.9, slope=-0.4))
    assert {plain.method_for(t, layer=x) for x in deleted for t in SMOL.tensor_names} == {"svd"}
    assert {plain.method_for(t, layer=x) for x in set(plain.layers) - set(deleted) for t in SMOL.tensor_names} \
        == {"svd-llm"}
    assert plain.describe(SMOL).endswith(f"svd on {runs}, svd-llm elsewhere")
    assert plain.ranks == gamma.ranks and plain.hash(SMOL) != gamma.hash(SMOL)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 4), keep=st.floats(0.5, 1.0), slope=st.floats(-1.0, 1.0),
       gaps=st.tuples(*[st.floats(0.0, 1.0)] * 5))
def test_every_decoded_gamma_is_allowed(n: int, keep: float, slope: float, gaps: tuple[float, ...]) -> None:
    space = _space()
    gamma = make_encoding("combined", space).decode(_params(n, keep, slope, gaps))
    if gamma.is_identity:
        assert n == 0 and profile_keep(space.layers, 0.5, keep, slope, space.layers[0]) >= UNTOUCHED
        return
    assert check_gamma(space, gamma) is None
    assert min(gamma.layers) >= 2


def test_rules_bind_the_rank_one_layers_only() -> None:
    space = _space()
    both = [5, 6]
    ranks = {f"{layer}:{t}": 1 for layer in both for t in SMOL.tensor_names}
    too_close = DecompositionConfig(layers=tuple(both), rank=None, ranks=ranks, two_factor=True)
    expected = "rank-1 layers: min-distance=2: layers 5 and 6 are 1 apart, at least 2 required"
    assert check_gamma(space, too_close) == expected
    mild = {f"{layer}:{t.name}": rank_for_keep(t.out_features, t.in_features, 0.8)
            for layer in both for t in SMOL.tensors}
    adjacent_mild = DecompositionConfig(layers=tuple(both), rank=None, ranks=mild, two_factor=True)
    assert check_gamma(space, adjacent_mild) is None
    early = {f"1:{t.name}": rank_for_keep(t.out_features, t.in_features, 0.8) for t in SMOL.tensors}
    skipped = DecompositionConfig(layers=(1,), rank=None, ranks=early, two_factor=True)
    assert check_gamma(space, skipped) == "layer 1 is outside the allowed layers " + str(list(range(2, 30)))


def test_combined_needs_the_rank_one_and_whole_layer_rules() -> None:
    with pytest.raises(InvalidConfigError, match="switch on the rules rank-one and whole-layers"):
        make_encoding("combined", _space({"skip-early": 2}))


def test_budget_out_of_reach_counts_rank_one_layers_and_keep_min() -> None:
    import dataclasses

    space = dataclasses.replace(_space(), min_reduction_pct=60.0)
    with pytest.raises(InvalidConfigError, match=r"removes at most 42\.1\d % .*rank-1 layers as spaced"):
        check_budget_reachable(space, keep_ratios=True)


COMBINED_TOML = """
model = "tiny-llama"
tau = 100.0
n_trials = 3

[rules]
rank-one = true
whole-layers = true
skip-early = 1
min-distance = 2

[evaluation]
tasks = ["dse_arc_easy"]
limit = 4
batch_size = 8
data_dir = "{data_dir}"
method = "svd-llm"

[search]
encoding = "combined"
keep_min = 0.5
seed = 0
paper_seeds = 1

[calibration]
sequences = 2
length = 32

[workload]
prefill_tokens = 8
decode_tokens = 2
warmup = 0
repeats = 1
"""


def test_a_combined_study_stores_what_its_parameters_decode_to(tmp_path: Path, data_dir: Path) -> None:
    from dse.study.api import load_study
    from dse.study.lifecycle import search_space_for

    path = tmp_path / "tiny-combined.toml"
    path.write_text(COMBINED_TOML.format(data_dir=data_dir))
    storage = f"sqlite:///{tmp_path / 'c.db'}"
    args = ["study", "run", str(path), "--storage", storage, "--no-plots", "--json", "--quiet"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"]["complete"] == 3
    handle = load_study("tiny-combined", storage=storage)
    spec = load_spec("tiny-llama")
    encoding = make_encoding("combined", search_space_for(spec, handle.definition))
    trials = [t for t in handle.study.trials if t.state.name == "COMPLETE"]
    reductions = {row["number"]: row["param_reduction_pct"] for row in handle.trials()}
    assert len(trials) == 3
    for trial in trials:
        gamma = encoding.decode(trial.params)
        assert trial.user_attrs["gamma"] == gamma.canonical(spec)
        assert reductions[trial.number] == pytest.approx(parameter_report(spec, gamma).param_reduction_pct)
    seed = trials[0]
    assert seed.user_attrs["paper_seed"].startswith("Table IV")
    assert seed.user_attrs["gamma"]["rank"] == 1 and seed.user_attrs["gamma"]["method"] == "svd-llm"


def test_shipped_combined_study_passes_its_checks_and_seeds_table_iv() -> None:
    from dse.study.definition import load_definition
    from dse.study.lifecycle import check_definition

    definition = load_definition(Path(__file__).resolve().parents[2] / "studies" / "smollm2-combined.toml")
    _, space, encoding = check_definition(definition)
    assert encoding.name == "combined" and space.mixes_deletions and space.layers == tuple(range(2, 30))
    assert space.ranks == (1,) and space.keep_min == 0.5 and space.methods == ("svd-llm",)
    taken, _ = paper_configs(encoding, limit=definition.search.paper_seeds)
    assert [c.gamma.layers for c in taken] == [(2, 27), (2, 16, 29)]
