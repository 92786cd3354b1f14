"""Presets and spec loading: the shapes the design space is built on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from space.errors import UnknownNameError
from space.presets import PRESETS, load_spec
from space.spec import ModelSpec


def test_smollm2_preset(preset: Callable[[str], ModelSpec]) -> None:
    spec = preset("smollm2-135m")
    assert (spec.n_layers, spec.hidden_size, spec.vocab_size) == (30, 576, 49152)
    shapes = {t.name: t.shape for t in spec.tensors}
    assert shapes == {"q": (576, 576), "k": (192, 576), "v": (192, 576), "o": (576, 576),
                      "gate": (1536, 576), "up": (1536, 576), "down": (576, 1536)}
    assert spec.total_params == 134_515_008  # tied embeddings counted once
    assert spec.module_path(3, "gate") == "model.layers.3.mlp.gate_proj"


def test_bert_preset(preset: Callable[[str], ModelSpec]) -> None:
    spec = preset("bert-base")
    assert spec.tensor_names == ("q", "k", "v", "attn_out", "intermediate", "output")
    assert spec.n_layers == 12 and spec.total_params == 109_482_240
    assert spec.tensor("intermediate").rank == 768


def test_every_preset_loads(preset: Callable[[str], ModelSpec]) -> None:
    layers = {name: preset(name).n_layers for name in PRESETS.names()}
    assert layers == {"bert-base": 12, "bert-large": 24, "llama2-13b": 40, "llama2-70b": 80,
                      "llama2-7b": 32, "smollm2-135m": 30, "tiny-llama": 4,
                      # one real configuration per family (tests/families checks their counts)
                      "gemma-2b": 18, "gemma2-2b": 26, "gemma3-1b": 26, "phi3-mini": 32, "phi4": 40,
                      "gpt2": 12, "pythia-160m": 12, "opt-125m": 12, "olmo2-7b": 32,
                      "granite3-2b": 40, "starcoder2-3b": 30, "mixtral-8x7b": 32,
                      "qwen1.5-moe-a2.7b": 24, "qwen3-30b-a3b": 48}


def test_local_config_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    config = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 48,
              "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
              "vocab_size": 100}
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    spec = load_spec(str(tmp_path / "model"))
    assert spec.n_layers == 3 and spec.tensor("k").shape == (16, 32)
    assert list((tmp_path / "cache" / "specs").glob("*.json"))  # cached as JSON


def test_unknown_model() -> None:
    with pytest.raises(UnknownNameError, match="llama2-7b"):
        load_spec("no-such-model-anywhere")
