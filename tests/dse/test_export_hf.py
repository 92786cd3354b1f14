"""A saved decomposed model loads in transformers and lm-eval as the model the engine measured."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from dse import saving, surgery
from dse.cli import cli
from dse.models import LoadedModel
from objectives.tasks import DATA_DIR_KEY, TASKS_DIR
from space.config import DecompositionConfig
from space.errors import DseError

TASKS = ["dse_arc_easy", "dse_piqa"]
# Short (3 tokens: the three-product order) and long inputs (the folded orders).
INPUTS = [torch.tensor([[1, 504, 3458]]), torch.randint(0, 4000, (2, 70), generator=torch.Generator().manual_seed(0))]


def _save(loaded: LoadedModel, gamma: DecompositionConfig, out: Path) -> tuple[Path, list[torch.Tensor], Any]:
    with surgery.decomposed(loaded, gamma) as report:
        with torch.no_grad():
            expected = [loaded.model(input_ids=ids).logits for ids in INPUTS]
        saving.save_decomposed(loaded, report, out)
    return out, expected, report


def _check_loads_as_measured(out: Path, expected: list[torch.Tensor], report: Any) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=True)
    assert type(model).__name__ == "LowRankDseForCausalLM"
    factorized = [n for n, m in model.named_modules() if type(m).__name__ == "FactorizedLinear"]
    assert len(factorized) == len(report.per_tensor)
    with torch.no_grad():
        for ids, want in zip(INPUTS, expected, strict=True):
            assert (model(input_ids=ids).logits - want).abs().max().item() <= 1e-5
    # The parameter count on disk is the decomposed one (the tied LM head is stored once).
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        on_disk = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 - safe_open is no dict
    assert on_disk == report.params_after < report.params_before
    config = json.loads((out / "config.json").read_text())
    assert config["lowrank_dse"]["params_after"] == report.params_after
    assert config["lowrank_dse"]["gamma"] == report.gamma


def _lm_eval_accuracy(out: Path, data_dir: Path, limit: int) -> dict[str, float]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                          metadata={DATA_DIR_KEY: str(data_dir)})
    results = simple_evaluate(model="hf", model_args=f"pretrained={out},trust_remote_code=True",
                              tasks=TASKS, task_manager=manager, limit=limit, batch_size=8,
                              bootstrap_iters=0, device="cpu")
    return {task: float(results["results"][task]["acc,none"]) for task in TASKS}


def _dse_evaluate(out: Path, data_dir: Path, limit: int) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["evaluate", str(out), "--tasks", ",".join(TASKS), "--limit", str(limit),
                                      "--data-dir", str(data_dir), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_tiny_export_loads_in_transformers_and_lm_eval_as_measured(tiny_llama: LoadedModel, tmp_path: Path,
                                                                  data_dir: Path) -> None:
    surgery.undo(tiny_llama)
    gamma = DecompositionConfig(layers=(1, 3), tensors=("q", "o", "down"), rank=3)
    out, expected, report = _save(tiny_llama, gamma, tmp_path / "tiny")
    _check_loads_as_measured(out, expected, report)
    evaluated = _dse_evaluate(out, data_dir, limit=8)
    assert evaluated["gamma"] == report.gamma and evaluated["model"] == "tiny-llama"
    lm_eval_acc = _lm_eval_accuracy(out, data_dir, limit=8)
    assert lm_eval_acc == {t: pytest.approx(evaluated["per_task"][t]["accuracy"], abs=1e-12) for t in TASKS}


def test_loading_without_trust_remote_code_refuses_instead_of_random_weights(tiny_llama: LoadedModel,
                                                                            tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    surgery.undo(tiny_llama)
    out, _, _ = _save(tiny_llama, DecompositionConfig(layers=(2,), rank=1), tmp_path / "m")
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=False)


def test_plain_save_pretrained_refuses_while_decomposed(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    surgery.undo(tiny_llama)
    with surgery.decomposed(tiny_llama, DecompositionConfig(layers=(2,), rank=1)):
        with pytest.raises(DseError, match="trust_remote_code") as refused:
            tiny_llama.model.save_pretrained(tmp_path / "plain")
        assert "\n" not in str(refused.value)
        assert not (tmp_path / "plain").exists()
    tiny_llama.model.save_pretrained(tmp_path / "original")  # the original model saves as usual
    assert (tmp_path / "original" / "config.json").is_file()


def test_generate_accepts_the_directory(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    surgery.undo(tiny_llama)
    gamma = DecompositionConfig(layers=(2,), rank=1)
    out, _, _ = _save(tiny_llama, gamma, tmp_path / "g")
    with surgery.decomposed(tiny_llama, gamma):
        want = surgery.greedy_continuation(tiny_llama, "The capital of France is", max_new_tokens=4)
    result = CliRunner().invoke(cli, ["generate", str(out), "--prompt", "The capital of France is",
                                      "--max-new-tokens", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["continuation"] == want


@pytest.mark.slow
def test_smollm2_export_loads_in_transformers_and_lm_eval_as_measured(smollm2: LoadedModel, tmp_path: Path,
                                                                      data_dir: Path) -> None:
    gamma = DecompositionConfig(layers=(17, 29), rank=1)
    out, expected, report = _save(smollm2, gamma, tmp_path / "smol")
    _check_loads_as_measured(out, expected, report)
    evaluated = _dse_evaluate(out, data_dir, limit=6)
    lm_eval_acc = _lm_eval_accuracy(out, data_dir, limit=6)
    assert lm_eval_acc == {t: pytest.approx(evaluated["per_task"][t]["accuracy"], abs=1e-12) for t in TASKS}


def test_layers_the_modeling_file_does_not_know_are_not_exported(tiny_llama: LoadedModel, tmp_path: Path) -> None:
    from dse.export.hf import export_hf, not_exportable

    surgery.undo(tiny_llama)
    with surgery.decomposed(tiny_llama, DecompositionConfig(layers=(2,), rank=1)):
        assert not_exportable(tiny_llama) is None
        path = next(iter(tiny_llama.originals))
        factorized = tiny_llama.model.get_submodule(path)

        class OtherLowRank(torch.nn.Module):  # stands in for e.g. the activation method's module
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x

        surgery.set_module(tiny_llama.model, path, OtherLowRank())
        try:
            assert "OtherLowRank layers cannot be written" in (not_exportable(tiny_llama) or "")
            with pytest.raises(DseError, match="OtherLowRank"):
                export_hf(tiny_llama, tmp_path / "hf")
            assert not (tmp_path / "hf" / "config.json").exists()
        finally:
            surgery.set_module(tiny_llama.model, path, factorized)
