"""Shared-context scoring and prefix reuse: the same per-document results as lm-eval's HFLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from objectives.accuracy import AccuracyObjective
from objectives.fast_lm import _batches, _pack, _Row, fast_lm_class, supports
from objectives.fast_lm_prefix import PrefixStore
from objectives.harness import quiet_lm_eval, wrapped_lm
from space.config import DecompositionConfig

TOLERANCE = 1e-4  # the bound on a per-request log-likelihood difference
ULPS = 2  # same arithmetic as HFLM: equal up to the matmuls' thread split (bit for bit with one thread)


def _same_arithmetic(reference: dict, fast: dict) -> None:
    """Within ``ULPS`` float32 units in the last place of the largest log-likelihood, same outcomes."""
    worst, differences = _compare(reference, fast)
    largest = max(abs(resp[0] if isinstance(resp, tuple) else resp)
                  for doc in reference.values() for (resp,) in doc["resps"])
    assert worst <= ULPS * float(np.finfo(np.float32).eps) * max(largest, 1.0), (worst, largest)
    assert differences == []


def _samples(
    target: Any,
    objective: AccuracyObjective,
    *,
    fast: bool,
    store: PrefixStore | None = None,
    leaves: int = 99,
    batch_size: int = 8,
    share_context: bool = True,
) -> dict:
    """Logged lm-eval samples of the objective's documents (in at most ``leaves`` subtasks of a group).

    ``share_context=False`` scores every request in its own forward of its own length: HFLM's
    arithmetic at batch size 1.
    """
    from lm_eval.evaluator import evaluate

    out: dict[tuple[str, int, str], dict[str, Any]] = {}
    budget = None if share_context else 1
    with wrapped_lm(target, batch_size, fast=fast, token_budget=budget, prefix_store=store) as lm:
        if fast:
            lm.share_context = share_context
        for plan in objective._load_plans():
            samples: dict[str, list[int]] = {}
            for leaf, index in plan.order:
                if leaf in samples or len(samples) < leaves:
                    samples.setdefault(leaf, []).append(index)
            task_dict = {"tasks": {leaf: plan.leaves[leaf] for leaf in samples}, "groups": {}}
            with quiet_lm_eval():
                output = evaluate(lm=lm, task_dict=task_dict, samples=samples, bootstrap_iters=0, log_samples=True)
            for leaf, examples in output["samples"].items():
                for example in examples:
                    out[(leaf, example["doc_id"], example["filter"])] = example
    return out


def _compare(reference: dict, fast: dict) -> tuple[float, list[str]]:
    """Largest log-likelihood difference, and every metric or greedy flag that differs."""
    assert reference.keys() == fast.keys()
    worst, differences = 0.0, []
    for key, ref in reference.items():
        ours = fast[key]
        for (ref_resp,), (our_resp,) in zip(ref["resps"], ours["resps"], strict=True):
            ref_ll, ref_greedy = ref_resp if isinstance(ref_resp, tuple) else (ref_resp, None)
            our_ll, our_greedy = our_resp if isinstance(our_resp, tuple) else (our_resp, None)
            worst = max(worst, abs(ref_ll - our_ll))
            if ref_greedy != our_greedy:
                differences.append(f"{key} greedy")
        for metric in ("acc", "acc_norm"):
            if metric not in ref:
                continue
            if ref[metric] in (0, 1):  # a per-document outcome: identical
                same = ours[metric] == ref[metric]
            else:  # TruthfulQA MC2's probability mass: moves by at most half the log-likelihood bound
                same = ours[metric] == pytest.approx(ref[metric], abs=TOLERANCE / 2)
            if not same:
                differences.append(f"{key} {metric}")
    return worst, differences


# --------------------------------------------------------------------------- packing


def test_requests_sharing_a_context_become_one_row_scored_at_hflms_positions() -> None:
    requests = [
        (("q", " a"), [5, 6, 7], [8, 9]),
        (("q", " b"), [5, 6, 7], [10]),
        (("r", " c"), [5, 6], [11, 12, 13]),
    ]
    rows, fallback = _pack(requests, max_length=100)
    assert fallback == []
    first, second = rows
    assert first.tokens == [5, 6, 7, 8] and first.positions == [0, 1, 2, 3] and first.segments == [0, 0, 0, 1]
    # request 0: token 8 from the last context position, token 9 from position 3 (token 8)
    assert first.scored == [(0, [2, 3], [8, 9]), (1, [2], [10])]
    assert second.tokens == [5, 6, 11, 12] and second.positions == [0, 1, 2, 3]
    assert second.scored == [(2, [1, 2, 3], [11, 12, 13])]


def test_requests_hflm_would_truncate_are_left_to_hflm() -> None:
    requests = [(("q", " a"), [1] * 8, [2, 3]), (("q", " b"), [1] * 8, [4])]
    rows, fallback = _pack(requests, max_length=8)  # 8 + 2 > 8 + 1: HFLM truncates it
    assert fallback == [0]
    assert [row.scored for row in rows] == [[(1, [7], [4])]]


def test_batches_go_longest_first_within_the_token_budget() -> None:
    rows = [_Row([1] * n) for n in (3, 9, 5, 5, 2)]
    batches = _batches(rows, token_budget=12)
    assert [[len(r.tokens) for r in batch] for batch in batches] == [[9], [5, 5], [3, 2]]
    assert all(len(b) * len(b[0].tokens) <= 12 for b in batches)
    assert [len(b[0].tokens) for b in _batches(rows, token_budget=1)] == [9, 5, 5, 3, 2]  # one row at least


# --------------------------------------------------------------------------- equality with HFLM


@pytest.fixture(scope="module")
def every_task_type(data_dir: Path) -> AccuracyObjective:
    """Every local task type that the shipped data holds: MC with 2, 4, many choices, LAMBADA, MMLU."""
    tasks = ["dse_arc_easy", "dse_piqa", "dse_hellaswag", "dse_boolq", "dse_lambada", "dse_truthfulqa_mc1",
             "dse_truthfulqa_mc2"]
    return AccuracyObjective(tasks, limit=3, data_dir=data_dir, show_progress=False)


def test_tiny_llama_loglikelihoods_and_outcomes_equal_hflms_on_every_task_type(
    tiny_llama: Any, every_task_type: AccuracyObjective
) -> None:
    target = tiny_llama.target()
    reference = _samples(target, every_task_type, fast=False)
    fast = _samples(target, every_task_type, fast=True)
    worst, differences = _compare(reference, fast)
    assert len(reference) == 21
    assert worst < TOLERANCE
    assert differences == []


def test_tiny_llama_decomposed_scores_hflms_arithmetic_exactly_and_shared_within_the_bound(
    tiny_llama: Any, every_task_type: AccuracyObjective
) -> None:
    """On a decomposed model too: one request per forward is HFLM's batch-size-1 arithmetic (within 2 ulps).

    Sharing the context lengthens the sequence a request is computed in, and PyTorch's CPU
    attention rounds by sequence length (as HFLM's own results move with its batch's
    padding); that, and only that, separates the shared path from HFLM.
    """
    from dse.surgery import decomposed

    with decomposed(tiny_llama, DecompositionConfig(layers=(1, 3), rank=1, tensors="all")):
        target = tiny_llama.target()
        single = _samples(target, every_task_type, fast=False, batch_size=1)
        unshared = _samples(target, every_task_type, fast=True, share_context=False)
        reference = _samples(target, every_task_type, fast=False)
        shared = _samples(target, every_task_type, fast=True)
    _same_arithmetic(single, unshared)
    worst, differences = _compare(reference, shared)
    assert worst < TOLERANCE
    assert differences == []


def test_fast_path_runs_fewer_forwards_than_requests(tiny_llama: Any, data_dir: Path) -> None:
    objective = AccuracyObjective(["dse_hellaswag"], limit=6, data_dir=data_dir, show_progress=False)
    from lm_eval.evaluator import evaluate

    plan = objective._load_plans()[0]
    with wrapped_lm(tiny_llama.target(), 8, fast=True) as lm:
        with quiet_lm_eval():
            evaluate(lm=lm, task_dict={"tasks": plan.leaves, "groups": {}},
                     samples={"dse_hellaswag": list(range(6))}, bootstrap_iters=0)
        assert isinstance(lm, fast_lm_class())
        assert 1 <= lm.forwards < 6  # 24 requests (6 documents × 4 endings) in a few packed forwards


def test_an_unsupported_model_is_scored_by_hflm_itself(
    tiny_llama: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import objectives.fast_lm

    objective = AccuracyObjective(["dse_arc_easy"], limit=3, data_dir=data_dir, show_progress=False)
    target = tiny_llama.target()
    assert supports(target.model)
    reference = _samples(target, objective, fast=False)
    monkeypatch.setattr(objectives.fast_lm, "supports", lambda model: False)
    fallback = _samples(target, objective, fast=True)
    for key, ref in reference.items():
        assert fallback[key]["resps"] == ref["resps"]  # HFLM's own code: bit for bit


def test_eager_attention_gets_an_additive_mask_with_the_same_results(tiny_llama: Any, data_dir: Path) -> None:
    model = tiny_llama.model
    objective = AccuracyObjective(["dse_piqa"], limit=2, data_dir=data_dir, show_progress=False)
    implementation = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        assert supports(model)
        worst, differences = _compare(
            _samples(tiny_llama.target(), objective, fast=False), _samples(tiny_llama.target(), objective, fast=True)
        )
    finally:
        model.config._attn_implementation = implementation
    assert worst < TOLERANCE and differences == []


# --------------------------------------------------------------------------- prefix reuse


def test_prefix_reuse_starts_at_the_first_decomposed_layer_with_identical_results(
    tiny_llama: Any, data_dir: Path
) -> None:
    from dse.surgery import decomposed

    objective = AccuracyObjective(["dse_arc_easy", "dse_piqa"], limit=4, data_dir=data_dir, show_progress=False)
    target = tiny_llama.target()
    store = PrefixStore()
    _samples(target, objective, fast=True, store=store)  # the baseline: the first state, all kept
    assert store.nbytes > 0 and store.hits == 0
    results = {}
    batches = len(store._states) // 3  # baseline batches: states entering layers 1, 2, 3 each
    for layers in ((2, 3), (3,)):
        with decomposed(tiny_llama, DecompositionConfig(layers=layers, rank=1)):
            plain = _samples(tiny_llama.target(), objective, fast=True)
            results[layers] = (plain, _samples(tiny_llama.target(), objective, fast=True, store=store))
    # (2, 3) started at layer 2 on each batch, and (3,) at layer 3
    assert store.hits == 2 * batches and store.layers_skipped == (2 + 3) * batches
    for plain, reused in results.values():
        for key, example in plain.items():
            assert reused[key]["resps"] == example["resps"]  # exactly, not approximately
    baseline_again = _samples(target, objective, fast=True, store=store)
    assert baseline_again.keys() == plain.keys()


def test_hidden_states_from_a_stored_prefix_equal_the_full_forward_bit_for_bit(tiny_llama: Any) -> None:
    import torch

    from dse.surgery import decomposed
    from objectives.fast_lm import _forward_hidden

    model = tiny_llama.model
    rows, _ = _pack([(("a", "b"), [1, 2, 3, 4], [5, 6]), (("a", "c"), [1, 2, 3, 4], [7]),
                     (("d", "e"), [9, 8], [7, 6, 5])], max_length=100)
    store = PrefixStore()

    def forward(with_store: bool) -> Any:
        inner = model.model
        view = store.view("fp", inner.embed_tokens, list(inner.layers)) if with_store else None
        with torch.no_grad():
            return _forward_hidden(model, rows, "cpu", store if with_store else None, view, "fp")

    forward(True)  # baseline: the first model state, every layer's state kept
    with decomposed(tiny_llama, DecompositionConfig(layers=(2,), rank=1)):
        full = forward(False)
        hits = store.hits
        reused = forward(True)
        assert store.hits == hits + 1 and store.layers_skipped == 2
    assert torch.equal(full, reused)


def test_an_in_place_weight_edit_is_not_mistaken_for_the_stored_prefix(tiny_llama: Any) -> None:
    import torch

    store = PrefixStore()
    inner = tiny_llama.model.model
    before = store.view("fp", inner.embed_tokens, list(inner.layers))
    weight = inner.layers[0].mlp.up_proj.weight
    with torch.no_grad():
        weight.mul_(1.0)  # same values, but an edit: the version counter moves
    after = store.view("fp", inner.embed_tokens, list(inner.layers))
    assert before.hashes[0] == after.hashes[0] and before.hashes[1] != after.hashes[1]


def test_the_store_stays_within_its_memory_bound_by_thinning_layers() -> None:
    import torch

    store = PrefixStore(max_bytes=4 * 4 * 10)  # ten float32 states of 4 values
    view = store.view("fp", torch.nn.Identity(), [torch.nn.Identity() for _ in range(8)])
    store._seen = {h: {"a", "b"} for h in view.hashes}  # every prefix recurs
    for batch in range(3):
        for layer in range(1, 8):
            if store.wants(view, layer):
                store.put(f"b{batch}", view, layer, torch.zeros(4))
    # 7 + 4 states overflowed: every batch keeps layers 2, 4, 6 (9 states) instead
    assert store.nbytes <= store.max_bytes and store.stride == 2
    assert sorted((key, layer) for key, layer, _ in store._states) == [
        (f"b{b}", layer) for b in range(3) for layer in (2, 4, 6)
    ]
    assert store.lookup("b2", view)[0] == 6


@pytest.mark.slow
def test_smollm2_loglikelihoods_and_outcomes_equal_hflms_on_every_local_task_type(
    smollm2: Any, data_dir: Path
) -> None:
    tasks = ["dse_arc_easy", "dse_piqa", "dse_hellaswag", "dse_boolq", "dse_lambada", "dse_truthfulqa_mc1",
             "dse_truthfulqa_mc2", "dse_mmlu"]
    objective = AccuracyObjective(tasks, limit=1, data_dir=data_dir, show_progress=False)
    target = smollm2.target()
    reference = _samples(target, objective, fast=False, leaves=4)
    fast = _samples(target, objective, fast=True, leaves=4)
    worst, differences = _compare(reference, fast)
    assert len(reference) == 7 + 4  # one document per task, and of four MMLU subjects
    assert worst < TOLERANCE
    assert differences == []


@pytest.mark.slow
def test_smollm2_decomposed_early_scores_hflms_arithmetic_exactly_and_shared_within_the_bound(
    smollm2: Any, data_dir: Path
) -> None:
    """Rank 1 from layer 2 on (|log-likelihoods| up to ~270): the case that amplifies rounding most."""
    from dse.surgery import decomposed

    tasks = ["dse_arc_easy", "dse_piqa", "dse_hellaswag", "dse_boolq", "dse_lambada", "dse_truthfulqa_mc1",
             "dse_truthfulqa_mc2", "dse_mmlu"]
    objective = AccuracyObjective(tasks, limit=1, data_dir=data_dir, show_progress=False)
    with decomposed(smollm2, DecompositionConfig(layers=(2, 17, 29), rank=1, tensors="all")):
        target = smollm2.target()
        single = _samples(target, objective, fast=False, leaves=4, batch_size=1)
        unshared = _samples(target, objective, fast=True, leaves=4, share_context=False)
        reference = _samples(target, objective, fast=False, leaves=4)
        shared = _samples(target, objective, fast=True, leaves=4)
    _same_arithmetic(single, unshared)
    worst, differences = _compare(reference, shared)
    assert worst < TOLERANCE
    assert differences == []
