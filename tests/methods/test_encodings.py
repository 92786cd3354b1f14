"""Keep ratios in γ, parameter counts of the installed form, keep-ratio encodings, the budget goal."""

from __future__ import annotations

from pathlib import Path

import pytest

from dse.study.definition import StudyDefinition, load_definition
from dse.study.encoding import check_gamma, make_encoding
from dse.study.goals import GOALS
from dse.study.runner import search_space_for
from space.config import DecompositionConfig, rank_for_keep
from space.errors import InvalidConfigError
from space.metrics import parameter_report
from space.presets import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec("smollm2-135m")
ALL = tuple(range(SPEC.n_layers))


def test_keep_ratio_rank_and_two_factor_counts() -> None:
    assert rank_for_keep(576, 576, 0.9) == 259  # ⌊0.9·576·576/1152⌋
    assert rank_for_keep(1536, 576, 0.8) == 335
    report = parameter_report(SPEC, DecompositionConfig(layers=ALL, keep=0.9))
    for tensor in report.per_tensor:
        assert tensor.params_after == tensor.rank * (tensor.H + tensor.W)  # no r² core
        assert tensor.params_after <= 0.9 * tensor.params_before
    # 10 % of the 106 M decomposable parameters of 134.5 M: about 7.9 % of the model.
    assert report.param_reduction_pct == pytest.approx(7.93, abs=0.01)
    paper = parameter_report(SPEC, DecompositionConfig(layers=(2,), rank=4))
    assert all(t.params_after == 4 * (t.H + t.W) + 16 for t in paper.per_tensor)
    activation = parameter_report(SPEC, DecompositionConfig(layers=(2,), rank=4, method="activation"))
    assert activation.param_reduction_pct == 0.0  # the weight stays whole


def test_keep_is_validated_and_exclusive_with_rank() -> None:
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"keep must be in \(0, 1\]"):
            DecompositionConfig(layers=(1,), keep=bad)
    with pytest.raises(ValueError, match="either keep"):
        DecompositionConfig(layers=(1,), keep=0.5, rank=3)
    with pytest.raises(ValueError, match="unknown method"):
        DecompositionConfig(layers=(1,), rank=3, method="qr")


def test_old_gamma_hashes_are_unchanged_and_new_fields_round_trip() -> None:
    plain = DecompositionConfig(layers=(2, 17), rank=1)
    assert plain.canonical(SPEC) == {"layers": [2, 17], "tensors": list(SPEC.tensor_names), "rank": 1}
    mixed = DecompositionConfig(layers=(3,), keep=0.7, methods={"q": "asvd", "down": "svd-llm"})
    form = mixed.canonical(SPEC)
    assert form["keep"] == 0.7 and form["two_factor"] is True
    assert DecompositionConfig.from_canonical(form).hash(SPEC) == mixed.hash(SPEC)
    assert mixed.method_for("q") == "asvd" and mixed.method_for("k") == "svd"
    assert mixed.hash(SPEC) != DecompositionConfig(layers=(3,), keep=0.7, method="asvd").hash(SPEC)


def budget_definition(**extra: object) -> StudyDefinition:
    return load_definition(ROOT / "studies" / "smollm2-budget.toml").with_overrides(**extra)


def test_ratios_encoding_reaches_per_tensor_ranks_and_the_budget_rejects_unmeasured() -> None:
    definition = budget_definition()
    space = search_space_for(SPEC, definition)
    encoding = make_encoding("ratios", space)
    assert [p.name for p in encoding.params()][-1] == "method"
    params = {f"keep_{t}": 0.8 for t in SPEC.tensor_names} | {"keep_down": 0.6, "keep_k": 1.0,
                                                                "method": "asvd"}
    gamma = encoding.decode(params)
    assert gamma.method == "asvd" and gamma.is_two_factor()
    assert gamma.tensor_names(SPEC) == ("q", "v", "o", "gate", "up", "down")  # k untouched
    pairs = {(p.layer, p.tensor): p.rank for p in gamma.validate_for(SPEC)}
    assert pairs[(5, "down")] == rank_for_keep(576, 1536, 0.6)
    assert check_gamma(space, gamma) is None
    mild = encoding.decode({f"keep_{t}": 0.95 for t in SPEC.tensor_names} | {"method": "svd-llm"})
    assert "below the budget of 15 %" in (check_gamma(space, mild) or "")
    uniform = DecompositionConfig(layers=ALL, keep=0.8, method="svd-llm")
    assert encoding.decode(encoding.encode(uniform) or {}).validate_for(SPEC) == uniform.validate_for(SPEC)


def test_profile_encoding_slopes_across_depth() -> None:
    space = search_space_for(SPEC, budget_definition(encoding="profile"))
    encoding = make_encoding("profile", space)
    gamma = encoding.decode({"keep": 0.8, "slope": 0.3, "method": "svd-llm"})
    ranks = {(p.layer, p.tensor): p.rank for p in gamma.validate_for(SPEC)}
    assert ranks[(0, "q")] < ranks[(15, "q")] < ranks[(29, "q")]
    assert ranks[(0, "q")] == rank_for_keep(576, 576, 0.65)
    uniform = DecompositionConfig(layers=ALL, keep=0.8, method="svd-llm")
    assert encoding.encode(uniform) == {"keep": 0.8, "slope": 0.0, "method": "svd-llm"}
    assert encoding.decode(encoding.encode(uniform) or {}).validate_for(SPEC) == uniform.validate_for(SPEC)
    assert encoding.encode(DecompositionConfig(layers=(0, 1), keep=0.8, method="svd-llm")) is None  # not every layer


def test_budget_goal_needs_its_budget_and_stored_studies_keep_their_identity() -> None:
    assert GOALS.get("budget").metrics == ("accuracy_drop_pp",)
    with pytest.raises(ValueError, match="needs min_param_reduction_pct"):
        StudyDefinition(objective="budget")
    quick = load_definition(ROOT / "studies" / "smollm2-quick.toml")
    identity = quick.identity()
    assert "calibration" not in identity and "min_param_reduction_pct" not in identity
    assert "methods" not in identity["search"] and "keep_min" not in identity["search"]
    assert quick.calibration_settings is None
    assert budget_definition().calibration_settings is not None


def test_encoding_and_bad_keep_in_cli_are_one_line_errors() -> None:
    from dse.cli._methods import gamma_for

    with pytest.raises(InvalidConfigError, match="exclusive"):
        gamma_for("all", "all", 3, 0.5, n_layers=30)
    assert gamma_for("all", "all", None, 0.5, n_layers=30).layers == ALL


def test_spectrum_allocation_meets_the_budget_and_loses_less_than_uniform() -> None:
    from dse.study.spectra import allocate_ranks

    shapes = {(0, "a"): (64, 64), (0, "b"): (32, 96), (1, "a"): (64, 64)}
    decays = {(0, "a"): 0.5, (0, "b"): 0.9, (1, "a"): 0.97}  # fast to slow spectral decay
    shares = {}
    for pair, (h, w) in shapes.items():
        energy = [decays[pair] ** j for j in range(min(h, w))]
        shares[pair] = [e / sum(energy) for e in energy]
    keep = 0.6
    ranks = allocate_ranks(shapes, shares, keep)
    budget = keep * sum(h * w for h, w in shapes.values())
    cost = sum(r * sum(shapes[p]) for p, r in ranks.items())
    assert budget - max(h + w for h, w in shapes.values()) < cost <= budget
    assert ranks[(0, "a")] < ranks[(1, "a")]  # the flat spectrum gets the larger rank

    def loss(allocation: dict) -> float:  # type: ignore[type-arg]
        return sum(sum(shares[p][r:]) for p, r in allocation.items())

    uniform = {p: rank_for_keep(h, w, keep) for p, (h, w) in shapes.items()}
    assert loss(ranks) < loss(uniform)


def test_spectrum_encoding_on_tiny_llama_interpolates_from_uniform(tiny_llama, tmp_path,  # type: ignore[no-untyped-def]
                                                                   monkeypatch) -> None:
    from dse.study.spectra import register

    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path))

    register(tiny_llama)
    definition = StudyDefinition(model="tiny-llama", objective="params", rules={
        "rank-one": False, "whole-layers": False, "skip-early": False, "min-distance": False},
        evaluation={"method": "svd-llm"}, search={"encoding": "spectrum"})
    spec = tiny_llama.spec
    space = search_space_for(spec, definition)
    encoding = make_encoding("spectrum", space)
    uniform = encoding.decode({"keep": 0.7, "strength": 0.0})
    driven = encoding.decode({"keep": 0.7, "strength": 1.0})
    assert uniform.method == driven.method == "svd-llm"
    same = DecompositionConfig(layers=tuple(range(spec.n_layers)), keep=0.7)
    assert encoding.encode(same.model_copy(update={"method": "svd-llm"}))["strength"] == 0.0  # type: ignore[index]
    assert uniform.validate_for(spec) == same.validate_for(spec)
    before = parameter_report(spec, uniform).params_after
    after = parameter_report(spec, driven).params_after
    assert after <= before * 1.01  # the same budget, distributed by the spectra
    assert uniform.hash(spec) != driven.hash(spec)


def test_budget_profile_study_keeps_layers_0_and_1_whole_and_its_budget_is_reachable() -> None:
    definition = load_definition(ROOT / "studies" / "smollm2-budget-profile.toml")
    assert definition.study_name == "smollm2-budget-profile" and definition.methods == ("svd-llm",)
    space = search_space_for(SPEC, definition)
    assert tuple(space.layers) == tuple(range(2, SPEC.n_layers))
    encoding = make_encoding("profile", space)
    assert [p.name for p in encoding.params()] == ["keep", "slope"]
    # keep 0.8 on layers 2-29 removes less than 15 % of the model: rejected unmeasured
    mild = encoding.decode({"keep": 0.8, "slope": 0.0})
    assert check_gamma(space, mild) is not None and "15" in (check_gamma(space, mild) or "")
    strong = encoding.decode({"keep": 0.78, "slope": 0.0})
    assert check_gamma(space, strong) is None
    assert {p.layer for p in strong.validate_for(SPEC)} == set(range(2, SPEC.n_layers))
    assert parameter_report(SPEC, strong).param_reduction_pct >= 15.0


def test_budget_goal_reports_its_front_against_the_parameter_reduction() -> None:
    from dse.study.api import StudyHandle

    handle = StudyHandle(study=None, definition=budget_definition(), target=None)  # type: ignore[arg-type]
    assert handle.default_front_metrics() == ["param_reduction_pct", "accuracy_drop_pp"]
    quick = StudyHandle(study=None, definition=load_definition(ROOT / "studies" / "smollm2-quick.toml"),
                        target=None)  # type: ignore[arg-type]
    assert quick.default_front_metrics() == ["edp_ratio", "accuracy_drop_pp"]


def test_methods_per_pair_round_trip_and_keep_the_per_tensor_form_when_layer_free() -> None:
    ranks = {f"{layer}:{t}": 4 for layer in (2, 5) for t in SPEC.tensor_names}
    per_pair = DecompositionConfig(layers=(2, 5), rank=None, ranks=ranks, method="svd-llm",
                                   methods={f"2:{t}": "svd" for t in SPEC.tensor_names}, two_factor=True)
    assert per_pair.method_for("q", layer=2) == "svd" and per_pair.method_for("q", layer=5) == "svd-llm"
    form = per_pair.canonical(SPEC)
    assert "method" not in form and form["methods"]["2:up"] == "svd" and form["methods"]["5:up"] == "svd-llm"
    back = DecompositionConfig.from_canonical(form)
    assert back.hash(SPEC) == per_pair.hash(SPEC) and back.method_for("down", layer=2) == "svd"
    assert per_pair.describe(SPEC) == "L[2,5] all r=4 svd-llm on L[5], svd elsewhere"  # a tie: sorted first
    # The same method on every layer of a tensor type: the per-tensor form (and hash) as before.
    layer_free = DecompositionConfig(layers=(2, 5), rank=4, methods={"2:q": "asvd", "5:q": "asvd"})
    assert layer_free.hash(SPEC) == DecompositionConfig(layers=(2, 5), rank=4, methods={"q": "asvd"}).hash(SPEC)
    with pytest.raises(InvalidConfigError, match=r"a method is given for 3:q, a \(layer:tensor\) pair γ does not"):
        DecompositionConfig(layers=(2,), rank=4, methods={"3:q": "svd"}).validate_for(SPEC)
