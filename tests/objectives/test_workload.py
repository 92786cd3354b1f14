"""The fixed workload: validation, the seeded prompt, and the greedy KV-cache decode."""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from objectives.base import EvalTarget
from objectives.workload import Workload, check_device, greedy_decode, run_workload, workload_input_ids
from space.errors import DseError, InvalidConfigError


def test_defaults_are_the_issue_workload() -> None:
    w = Workload()
    assert (w.prefill_tokens, w.decode_tokens, w.batch_size, w.warmup, w.repeats) == (128, 32, 1, 1, 3)
    assert w.total_tokens == 160
    assert w.forward_passes == 33


@pytest.mark.parametrize(
    ("field", "value"),
    [("prefill_tokens", 0), ("decode_tokens", 0), ("batch_size", 0), ("warmup", -1), ("repeats", 0), ("seed", -2)],
)
def test_invalid_values_raise_one_line(field: str, value: int) -> None:
    with pytest.raises(InvalidConfigError) as info:
        Workload(**{field: value})
    message = str(info.value)
    assert "\n" not in message
    assert field in message and str(value) in message


def test_warmup_zero_is_allowed() -> None:
    assert Workload(warmup=0).warmup == 0


def test_unknown_field_is_refused() -> None:
    with pytest.raises(InvalidConfigError, match="decode_steps"):
        Workload(decode_steps=4)


def test_workload_is_frozen() -> None:
    w = Workload()
    with pytest.raises(Exception, match="frozen"):
        w.repeats = 5  # type: ignore[misc]


def test_input_ids_are_seeded_and_within_the_vocabulary(tiny_target: EvalTarget) -> None:
    w = Workload(prefill_tokens=40, batch_size=3)
    first = workload_input_ids(tiny_target, w)
    assert first.shape == (3, 40)
    assert first.equal(workload_input_ids(tiny_target, w))
    assert not first.equal(workload_input_ids(tiny_target, Workload(prefill_tokens=40, batch_size=3, seed=1)))
    assert int(first.min()) >= 0 and int(first.max()) < len(tiny_target.tokenizer)


def test_input_ids_respect_a_smaller_tokenizer(tiny_target: EvalTarget) -> None:
    class SmallTokenizer:
        def __len__(self) -> int:
            return 7

    target = EvalTarget(model=tiny_target.model, tokenizer=SmallTokenizer())
    ids = workload_input_ids(target, Workload(prefill_tokens=200, batch_size=2))
    assert int(ids.max()) < 7


def test_sequence_longer_than_the_positions_is_refused(tiny_target: EvalTarget) -> None:
    limit = tiny_target.model.config.max_position_embeddings
    with pytest.raises(InvalidConfigError, match=f"{limit} positions"):
        workload_input_ids(tiny_target, Workload(prefill_tokens=limit, decode_tokens=1))


def test_greedy_decode_matches_generate(tiny_target: EvalTarget) -> None:
    w = Workload(prefill_tokens=10, decode_tokens=5, batch_size=2)
    ids = workload_input_ids(tiny_target, w)
    with warnings.catch_warnings():  # the current cache API: no deprecated past_key_values
        warnings.simplefilter("error", FutureWarning)
        mine = greedy_decode(tiny_target, w, input_ids=ids)
    assert mine.shape == (2, w.decode_tokens + 1)
    reference = tiny_target.model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=w.decode_tokens + 1,
        min_new_tokens=w.decode_tokens + 1,
        do_sample=False,
        pad_token_id=0,
    )
    assert mine.equal(reference[:, ids.shape[1] :])


class _NoCache(torch.nn.Module):
    """A causal LM that returns logits but no KV cache, and counts its forward calls."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.calls = 0

    def forward(self, input_ids: torch.Tensor, **_: Any) -> SimpleNamespace:
        self.calls += 1
        return SimpleNamespace(logits=self.inner(input_ids=input_ids, use_cache=False).logits, past_key_values=None)


def test_a_model_without_cache_is_decoded_on_the_whole_sequence(tiny_target: EvalTarget) -> None:
    w = Workload(prefill_tokens=8, decode_tokens=3)
    ids = workload_input_ids(tiny_target, w)
    wrapped = _NoCache(tiny_target.model)
    target = EvalTarget(model=wrapped, tokenizer=tiny_target.tokenizer)
    assert greedy_decode(target, w, input_ids=ids).equal(greedy_decode(tiny_target, w, input_ids=ids))
    assert wrapped.calls == w.forward_passes
    run_workload(target, w, input_ids=ids)
    assert wrapped.calls == 2 * w.forward_passes


def test_check_device() -> None:
    check_device("cpu")
    for bad in ("tpu", "cuda:x", "cpu:1"):
        with pytest.raises(InvalidConfigError, match="unknown device"):
            check_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_cuda_without_a_gpu_is_one_clear_error() -> None:
    with pytest.raises(DseError, match="no CUDA device is available: use --device cpu"):
        check_device("cuda")


def test_after_prefill_runs_once_between_prefill_and_decode(tiny_llama: Any) -> None:
    target = tiny_llama.target()
    w = Workload(prefill_tokens=6, decode_tokens=3, warmup=0, repeats=1)
    ids = workload_input_ids(target, w)
    calls: list[int] = []
    with_hook = greedy_decode(target, w, input_ids=ids, after_prefill=lambda: calls.append(1))
    assert calls == [1]
    assert torch.equal(with_hook, greedy_decode(target, w, input_ids=ids))
