"""Model surgery: parameter counts as the space predicts, bit-exact undo, cache reuse, BERT."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from dse import surgery
from dse.cache import FactorCache
from dse.decompose import decompose
from dse.layers import FactorizedLinear
from dse.models import LoadedModel, model_fingerprint
from space.config import DecompositionConfig
from space.errors import InvalidConfigError
from space.metrics import parameter_report

TOKENS = torch.tensor([[1, 504, 3458, 282, 4649, 314, 253, 1789, 30, 2]])


def logits(loaded: LoadedModel, tokens: torch.Tensor = TOKENS) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(input_ids=tokens.to(loaded.device)).logits


def module_at(loaded: LoadedModel, layer: int, tensor: str) -> torch.nn.Module:
    return loaded.model.get_submodule(loaded.spec.module_path(layer, tensor))


def all_modules(loaded: LoadedModel) -> dict[tuple[int, str], torch.nn.Module]:
    return {(layer, name): module_at(loaded, layer, name)
            for layer in range(loaded.spec.n_layers) for name in loaded.spec.tensor_names}


@pytest.fixture
def tiny(tiny_llama: LoadedModel) -> Iterator[LoadedModel]:
    """The shared tiny model, always handed back undecomposed."""
    surgery.undo(tiny_llama)
    yield tiny_llama
    surgery.undo(tiny_llama)


def test_parameter_count_matches_the_space(tiny: LoadedModel) -> None:
    gamma = DecompositionConfig(layers=(1, 3), tensors="all", rank=2)
    predicted = parameter_report(tiny.spec, gamma)
    before = surgery.count_parameters(tiny.model)
    report = surgery.apply(tiny, gamma)
    assert report.params_before == before == predicted.params_before
    assert report.params_after == surgery.count_parameters(tiny.model) == predicted.params_after
    assert report.params_before - report.params_after == (
        predicted.decomposed_params_before - predicted.decomposed_params_after
    )
    assert report.param_reduction_pct == pytest.approx(predicted.param_reduction_pct, abs=1e-9)
    assert [(t.layer, t.tensor, t.rank) for t in report.per_tensor] == [
        (p.layer, p.tensor, p.rank) for p in gamma.validate_for(tiny.spec)
    ]
    assert report.gamma_hash == gamma.hash(tiny.spec)
    assert report.cache_hits == 0 and report.cache_misses == 14


def test_only_the_named_modules_are_replaced(tiny: LoadedModel) -> None:
    before = all_modules(tiny)
    surgery.apply(tiny, DecompositionConfig(layers=(2,), tensors=("q", "down"), rank=3))
    after = all_modules(tiny)
    for key, module in after.items():
        if key in {(2, "q"), (2, "down")}:
            assert isinstance(module, FactorizedLinear)
            assert module.rank == 3
            assert module.weight_shape == tuple(before[key].weight.shape)
        else:
            assert module is before[key]


def test_undo_restores_bit_identical_logits_and_the_same_objects(tiny: LoadedModel) -> None:
    originals = all_modules(tiny)
    expected = logits(tiny)
    surgery.apply(tiny, DecompositionConfig(layers=(0, 2), tensors="all", rank=1))
    damaged = logits(tiny)
    assert not torch.equal(damaged, expected)
    assert (damaged - expected).abs().max().item() > 1e-3
    assert surgery.undo(tiny) is True
    assert torch.equal(logits(tiny), expected)
    assert all(module is originals[key] for key, module in all_modules(tiny).items())
    assert surgery.current(tiny) is None and not tiny.originals
    assert surgery.undo(tiny) is False  # nothing left to undo


def test_full_rank_reproduces_the_model(tiny: LoadedModel) -> None:
    expected = logits(tiny)
    full = {name: t.rank for name, t in zip(tiny.spec.tensor_names, tiny.spec.tensors, strict=True)}
    ranks = {f"1:{name}": rank for name, rank in full.items()}
    report = surgery.apply(tiny, DecompositionConfig(layers=(1,), tensors="all", rank=None, ranks=ranks))
    assert report.max_rel_error < 1e-5
    assert torch.allclose(logits(tiny), expected, atol=1e-4, rtol=1e-4)


def test_reported_error_is_the_eckart_young_optimum(tiny: LoadedModel) -> None:
    weight = module_at(tiny, 3, "up").weight.detach().to(torch.float64)
    singular = torch.linalg.svdvals(weight)
    rank = 4
    optimum = (singular[rank:].square().sum().sqrt() / singular.square().sum().sqrt()).item()
    report = surgery.apply(tiny, DecompositionConfig(layers=(3,), tensors=("up",), rank=rank))
    (result,) = report.per_tensor
    assert result.rel_error == pytest.approx(optimum, rel=1e-3)
    assert report.max_rel_error == result.rel_error


def test_second_apply_is_all_cache_hits(tiny: LoadedModel, tmp_path: Any) -> None:
    cache = FactorCache(tmp_path / "factors")
    gamma = DecompositionConfig(layers=(1, 2), tensors="all", rank=2)
    first = surgery.apply(tiny, gamma, cache=cache)
    assert (first.cache_hits, first.cache_misses) == (0, 14)
    decompositions = cache.stats.decompositions
    assert decompositions == 14
    first_logits = logits(tiny)
    second = surgery.apply(tiny, gamma, cache=cache)
    assert (second.cache_hits, second.cache_misses) == (14, 0)
    assert cache.stats.decompositions == decompositions
    assert all(t.cached for t in second.per_tensor)
    assert torch.equal(logits(tiny), first_logits)
    assert second.per_tensor == [t.model_copy(update={"cached": True}) for t in first.per_tensor]


def test_applying_a_second_gamma_undoes_the_first(tiny: LoadedModel) -> None:
    originals = all_modules(tiny)
    expected = logits(tiny)
    surgery.apply(tiny, DecompositionConfig(layers=(0, 1), tensors="all", rank=1))
    report = surgery.apply(tiny, DecompositionConfig(layers=(3,), tensors=("k",), rank=2))
    now = all_modules(tiny)
    assert [key for key in now if now[key] is not originals[key]] == [(3, "k")]
    assert report.params_before == parameter_report(tiny.spec, DecompositionConfig()).params_before
    surgery.undo(tiny)
    assert torch.equal(logits(tiny), expected)


@pytest.mark.parametrize(
    ("gamma", "message"),
    [
        (DecompositionConfig(layers=(4,), rank=1), "layer 4 is out of range"),
        (DecompositionConfig(layers=(1,), tensors=("qq",), rank=1), "unknown tensor 'qq'"),
        (DecompositionConfig(layers=(1,), tensors=("k",), rank=65), "rank 65 of tensor 'k'"),
    ],
)
def test_invalid_gamma_raises_before_touching_the_model(
    tiny: LoadedModel, gamma: DecompositionConfig, message: str
) -> None:
    installed = DecompositionConfig(layers=(2,), tensors=("v",), rank=1)
    surgery.apply(tiny, installed)
    modules = all_modules(tiny)
    with pytest.raises(InvalidConfigError, match=message):
        surgery.apply(tiny, gamma)
    assert all_modules(tiny) == modules  # the installed γ is still in place, untouched
    assert surgery.current(tiny) is not None
    assert surgery.current(tiny).gamma_hash == installed.hash(tiny.spec)  # type: ignore[union-attr]


def test_unknown_method_raises(tiny: LoadedModel) -> None:
    with pytest.raises(InvalidConfigError, match="allowed: activation, asvd, feature, hooi, svd, svd-llm"):
        surgery.apply(tiny, DecompositionConfig(layers=(1,), rank=1), method="qr")
    assert surgery.current(tiny) is None


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_decomposed_context_always_undoes(tiny: LoadedModel, error: type[BaseException]) -> None:
    originals = all_modules(tiny)
    expected = logits(tiny)
    # The error must be raised inside the context manager under test, after its checks.
    with pytest.raises(error), surgery.decomposed(tiny, DecompositionConfig(layers=(1,), rank=1)) as report:  # noqa: PT012
        assert report.params_after < report.params_before
        assert isinstance(module_at(tiny, 1, "q"), FactorizedLinear)
        raise error()
    assert all_modules(tiny) == originals
    assert torch.equal(logits(tiny), expected)


class _InterruptingCache:
    """Serves two tensors, then behaves as if the user pressed Ctrl-C."""

    def __init__(self) -> None:
        self.calls = 0

    def factors(self, fingerprint: str, layer: int, tensor: str, weight: torch.Tensor, rank: int,
                method: str = "svd", **kwargs: Any) -> tuple[Any, bool]:
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return decompose(weight, rank, method=method), False


def test_interrupted_apply_leaves_the_original_model(tiny: LoadedModel) -> None:
    originals = all_modules(tiny)
    cache = _InterruptingCache()
    with pytest.raises(KeyboardInterrupt):
        surgery.apply(tiny, DecompositionConfig(layers=(1,), rank=1), cache=cache)  # type: ignore[arg-type]
    assert cache.calls == 3
    assert all_modules(tiny) == originals
    assert surgery.current(tiny) is None


def test_folded_layers_count_two_factors(tiny: LoadedModel) -> None:
    gamma = DecompositionConfig(layers=(2,), tensors="all", rank=3)
    plain = surgery.apply(tiny, gamma)
    plain_logits = logits(tiny)
    folded = surgery.apply(tiny, gamma, fold=True)
    saved_by_fold = sum(t.rank**2 for t in plain.per_tensor)
    assert folded.fold and not plain.fold
    assert folded.params_after == plain.params_after - saved_by_fold
    assert torch.allclose(logits(tiny), plain_logits, atol=1e-4, rtol=1e-4)


def test_bert_surgery() -> None:
    from transformers import BertConfig, BertModel

    from space.spec import spec_from_config

    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64)
    torch.manual_seed(0)
    model = BertModel(config).eval()
    spec = spec_from_config(config, "tiny-bert")
    loaded = LoadedModel(model=model, tokenizer=None, spec=spec, fingerprint=model_fingerprint(model),
                         name="tiny-bert")
    tokens = torch.tensor([[2, 17, 33, 90, 5, 3]])

    def hidden() -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=tokens).last_hidden_state

    expected = hidden()
    gamma = DecompositionConfig(layers=(1,), tensors="all", rank=2)
    predicted = parameter_report(spec, gamma)
    report = surgery.apply(loaded, gamma)
    assert report.params_before == predicted.params_before
    assert report.params_after == predicted.params_after == surgery.count_parameters(model)
    assert [t.tensor for t in report.per_tensor] == ["q", "k", "v", "attn_out", "intermediate", "output"]
    layer = model.encoder.layer[1]
    assert isinstance(layer.attention.self.query, FactorizedLinear)
    assert isinstance(layer.output.dense, FactorizedLinear)
    assert not torch.equal(hidden(), expected)
    surgery.undo(loaded)
    assert torch.equal(hidden(), expected)


# ---- the real SmolLM2-135M ---------------------------------------------------------------

PROMPT = "The capital of France is"


@pytest.fixture
def smol(smollm2: LoadedModel) -> Iterator[LoadedModel]:
    surgery.undo(smollm2)
    yield smollm2
    surgery.undo(smollm2)


@pytest.mark.slow
def test_smollm2_parameter_count_matches_the_space(smol: LoadedModel) -> None:
    gamma = DecompositionConfig(layers=(2, 17, 29), tensors="all", rank=1)
    predicted = parameter_report(smol.spec, gamma)
    tokens = smol.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    expected = logits(smol, tokens)
    report = surgery.apply(smol, gamma)
    assert report.params_before == predicted.params_before == surgery.count_parameters(smol.model) + (
        predicted.decomposed_params_before - predicted.decomposed_params_after
    )
    assert report.params_after == predicted.params_after
    assert report.param_reduction_pct == pytest.approx(predicted.param_reduction_pct, abs=1e-9)
    assert 0.0 < report.max_rel_error < 1.0
    surgery.undo(smol)
    assert torch.equal(logits(smol, tokens), expected)


@pytest.mark.slow
def test_smollm2_says_paris_and_early_layers_break_it(smol: LoadedModel) -> None:
    original = surgery.greedy_continuation(smol, PROMPT, max_new_tokens=8)
    assert "Paris" in original
    tokens = smol.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    expected = logits(smol, tokens)[0, -1]
    with surgery.decomposed(smol, DecompositionConfig(layers=(0, 1), tensors="all", rank=1)):
        damaged_logits = logits(smol, tokens)[0, -1]
        damaged = surgery.greedy_continuation(smol, PROMPT, max_new_tokens=8)
    change = ((damaged_logits - expected).norm() / expected.norm()).item()
    assert change > 0.3
    assert damaged_logits.argmax() != expected.argmax()
    assert damaged != original
    assert surgery.greedy_continuation(smol, PROMPT, max_new_tokens=8) == original


def test_methods_per_layer_and_tensor_pair(tiny: LoadedModel) -> None:
    # The combined encoding's γ: one layer by one method, another layer by another.
    pairs = {f"{layer}:{name}": 2 for layer in (1, 3) for name in tiny.spec.tensor_names}
    gamma = DecompositionConfig(layers=(1, 3), rank=None, ranks=pairs, method="svd",
                                methods={f"3:{name}": "hooi" for name in tiny.spec.tensor_names}, two_factor=True)
    report = surgery.apply(tiny, gamma)
    assert {(r.layer, r.method) for r in report.per_tensor} == {(1, "svd"), (3, "hooi")}
    assert report.method == "mixed"
