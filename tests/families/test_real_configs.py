"""Real configurations of every family, counted on the meta device (no weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dse.cli import cli
from space.config import DecompositionConfig
from space.errors import InvalidConfigError
from space.families import FAMILIES
from space.metrics import parameter_report, workload_cost
from space.presets import load_spec
from space.presets_families import FAMILY_PRESETS

# Parameter counts published for these models (exact figures from their model cards/papers).
PUBLISHED = {
    "gpt2": 124_439_808,
    "opt-125m": 125_239_296,
    "pythia-160m": 162_322_944,
    "mixtral-8x7b": 46_702_792_704,
}


@pytest.mark.parametrize(("preset", "params"), sorted(PUBLISHED.items()))
def test_published_parameter_counts(preset: str, params: int) -> None:
    assert load_spec(preset).total_params == params


def test_every_decoder_family_has_a_real_configuration() -> None:
    covered = {load_spec(name).family for name in FAMILY_PRESETS}
    assert covered == set(FAMILIES.names()) - {"llama", "bert"}


def test_expert_tensors_count_every_expert_and_run_top_k() -> None:
    spec = load_spec("mixtral-8x7b")
    down = spec.tensor("down")
    assert (down.kind, down.experts, down.active, down.shape) == ("experts", 8, 2, (4096, 14336))
    gamma = DecompositionConfig(layers=(3,), tensors=("down",), rank=1)
    report = parameter_report(spec, gamma)
    assert spec.total_params - report.params_after == 8 * (4096 * 14336 - (4096 + 1 + 14336))
    cost = workload_cost(spec, gamma, batch=1, seq_len=1)
    base = workload_cost(spec, DecompositionConfig(), batch=1, seq_len=1)
    assert base.linear_macs - cost.linear_macs == 2 * (4096 * 14336 - (4096 + 1 + 14336))


def test_fused_and_conv1d_tensors_are_named_as_the_model_runs_them() -> None:
    gpt2 = load_spec("gpt2")
    qkv = gpt2.tensor("qkv")
    assert (qkv.kind, qkv.parts, qkv.shape) == ("conv1d", ("q", "k", "v"), (3 * 768, 768))
    phi = load_spec("phi3-mini")
    assert phi.tensor_names == ("qkv", "o", "gate_up", "down")
    assert phi.tensor("gate_up").shape == (2 * 8192, 3072)


def test_unknown_model_type_lists_the_supported_ones(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "falcon", "hidden_size": 64}))
    with pytest.raises(InvalidConfigError) as error:
        load_spec(str(config))
    message = str(error.value)
    assert "'falcon' has no decomposition adapter" in message
    assert all(t in message for t in ("gpt2", "phi3", "mixtral", "qwen3_moe", "gemma3_text"))


def test_space_families_lists_every_family() -> None:
    result = CliRunner().invoke(cli, ["space", "families", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["family"]: r for r in json.loads(result.stdout)["families"]}
    assert set(rows) == set(FAMILIES.names())
    assert rows["qwen2_moe"]["experts"] == ["gate_up", "down"]
    assert "mlp.gate" in rows["mixtral"]["excluded"]
