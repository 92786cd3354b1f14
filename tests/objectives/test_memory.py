"""Memory: unique parameters and buffers, and the peak of a workload pass."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from objectives import memory as memory_module
from objectives.base import EvalTarget
from objectives.memory import MemoryMeasurement, MemoryObjective, model_memory
from objectives.workload import Workload


def test_memory_of_tiny_llama(
    tiny_target: EvalTarget, small_workload: Workload, unchanged: Callable[[], None]
) -> None:
    model = tiny_target.model
    model.train()
    result = MemoryObjective(small_workload).measure(tiny_target)
    assert model.training
    model.eval()
    unchanged()
    unique = {id(p): p for p in model.parameters()}
    assert result.params == sum(p.numel() for p in unique.values())
    # tiny-llama ties its LM head to the embedding: counted once, not as the state dict lists it.
    assert result.params < sum(t.numel() for t in model.state_dict().values())
    assert result.param_bytes == result.params * 4  # float32
    assert result.buffer_bytes == sum(b.numel() * b.element_size() for b in model.buffers())
    assert result.model_bytes == result.param_bytes + result.buffer_bytes
    assert result.objective == "memory"
    assert result.device == "cpu"
    assert result.method in ("vmhwm-reset", "rss-sampling")
    assert result.peak_bytes > result.model_bytes  # the process's RSS holds the model and more
    assert 0 <= result.peak_growth_bytes <= result.peak_bytes
    # The prefill's logits (batch x tokens x vocab floats) are alive during the pass.
    logits_bytes = small_workload.batch_size * small_workload.prefill_tokens * model.config.vocab_size * 4
    assert result.peak_growth_bytes >= logits_bytes
    assert "malloc_trim" in result.detail
    assert MemoryMeasurement.model_validate(result.model_dump()) == result


def test_model_memory_counts_a_shared_tensor_once() -> None:
    shared = torch.nn.Linear(8, 4, bias=False)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), torch.nn.Linear(4, 8), shared)
    model.register_buffer("scale", torch.zeros(3, dtype=torch.float16))
    params, param_bytes, buffer_bytes = model_memory(model)
    assert params == 8 * 4 + (4 * 8 + 8)
    assert param_bytes == params * 4
    assert buffer_bytes == 3 * 2


def test_rss_sampling_when_peak_cannot_be_reset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_target: EvalTarget, small_workload: Workload
) -> None:
    (tmp_path / "clear_refs").mkdir()  # not writable as a file
    monkeypatch.setattr(memory_module, "_CLEAR_REFS", tmp_path / "clear_refs")
    result = MemoryObjective(small_workload).measure(tiny_target)
    assert result.method == "rss-sampling"
    assert "sampled every 1 ms" in result.detail
    assert result.peak_bytes > result.model_bytes
    assert result.peak_growth_bytes >= 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_peak_allocated_on_gpu(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    model = copy.deepcopy(tiny_llama.model).to("cuda")
    target = EvalTarget(model=model, tokenizer=tiny_llama.tokenizer, device="cuda")
    result = MemoryObjective(Workload(prefill_tokens=64, decode_tokens=8, batch_size=4)).measure(target)
    assert result.method == "cuda-max-allocated"
    assert result.peak_bytes >= result.model_bytes  # the weights are allocated tensors too
    assert result.peak_growth_bytes > 0  # activations and the KV cache
