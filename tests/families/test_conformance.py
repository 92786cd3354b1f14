"""One conformance suite for every supported decoder family (as Optuna runs one suite per storage).

For each family a tiny random model is built from a config and saved to a local
directory; the suite then checks, on the model loaded from that directory: the adapter
answers its model type; the spec read on the meta device counts the model's parameters
exactly and its space size agrees with enumeration; every decomposable tensor
decomposes (parameters removed exactly as predicted) and undoes bit-exactly; at full
rank the decomposed forward matches the dense one; factors save and load back; and
``dse space show DIR`` lists the tensors γ can address. The end-to-end CLI checks
(``dse decompose``, ``dse evaluate``, a 2-trial study) run on a representative subset,
``END_TO_END`` in tiny_configs.py, to keep the suite fast.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from tiny_configs import END_TO_END, TINY_CONFIGS

from dse import adapters, surgery
from dse.cli import cli
from dse.models import LoadedModel, load_model
from dse.saving import load_decomposed, save_decomposed
from dse.study.api import load_study
from space.config import DecompositionConfig
from space.counting import space_size
from space.errors import DseError, InvalidConfigError
from space.families import FAMILIES, family_for_model_type
from space.metrics import parameter_report
from space.presets import load_spec

FAMILY_NAMES = sorted(TINY_CONFIGS)
_LOADED: dict[str, LoadedModel] = {}


def loaded_model(family_dirs: dict[str, Path], family: str) -> LoadedModel:
    """The family's model loaded from its saved directory (once), handed back undecomposed."""
    if family not in _LOADED:
        _LOADED[family] = load_model(str(family_dirs[family]))
    surgery.undo(_LOADED[family])
    return _LOADED[family]


def logits(loaded: LoadedModel) -> torch.Tensor:
    tokens = torch.tensor([[1, 504, 3458, 282, 4649, 314, 253, 1789, 30, 2, 17, 99]])
    with torch.no_grad():
        return loaded.model(input_ids=tokens).logits


def state(loaded: LoadedModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}


@pytest.mark.parametrize("family", FAMILY_NAMES)
class TestFamilyConformance:
    def test_adapter_answers_its_model_type(self, family: str) -> None:
        model_type = TINY_CONFIGS[family]["model_type"]
        assert family in FAMILIES
        assert family_for_model_type(model_type).name == family

    def test_spec_counts_the_model_exactly(self, family_dirs: dict[str, Path], family: str) -> None:
        loaded = loaded_model(family_dirs, family)
        spec = loaded.spec  # read on the meta device from the directory's config.json
        assert spec.family == family
        assert spec.total_params == surgery.count_parameters(loaded.model)
        blocks = loaded.model.get_submodule(spec.layer_path)
        assert spec.n_layers == len(blocks) == TINY_CONFIGS[family].get("num_hidden_layers", 2)
        for layer in range(spec.n_layers):
            for tensor in spec.tensors:
                module = blocks[layer].get_submodule(tensor.module)
                weight = adapters.dense_weight(module, tensor, tensor.module)
                expected = (tensor.experts, *tensor.shape) if tensor.kind == "experts" else tensor.shape
                assert tuple(weight.shape) == expected
                assert weight.numel() == tensor.params
        routers = FAMILIES.get(family).routers
        assert not any(t.module in routers for t in spec.tensors)  # never decomposable

    def test_space_size_agrees_with_enumeration(self, family_dirs: dict[str, Path], family: str) -> None:
        spec = loaded_model(family_dirs, family).spec
        top = max(t.rank for t in spec.tensors)
        rank = min(top, 9)
        pairs = 0
        for size in range(1, spec.n_tensors + 1):
            for names in combinations(spec.tensor_names, size):
                for r in range(1, rank + 1):
                    gamma = DecompositionConfig(layers=(0,), tensors=names, rank=r)
                    try:
                        gamma.validate_for(spec)
                    except DseError:
                        continue
                    pairs += 1
        assert space_size(spec, rank=rank) == (2**spec.n_layers - 1) * pairs + 1

    def test_every_tensor_decomposes_and_undoes_bit_exactly(
        self, family_dirs: dict[str, Path], family: str
    ) -> None:
        loaded = loaded_model(family_dirs, family)
        spec = loaded.spec
        before_logits, before_state = logits(loaded), state(loaded)
        gamma = DecompositionConfig(layers=tuple(range(spec.n_layers)), tensors="all", rank=2)
        predicted = parameter_report(spec, gamma)
        report = surgery.apply(loaded, gamma)
        assert len(report.per_tensor) == spec.n_layers * spec.n_tensors
        assert report.params_before == predicted.params_before == spec.total_params
        assert report.params_after == predicted.params_after == surgery.count_parameters(loaded.model)
        assert report.params_after < report.params_before
        assert not torch.equal(logits(loaded), before_logits)
        assert surgery.undo(loaded)
        after_state = state(loaded)
        assert after_state.keys() == before_state.keys()
        assert all(torch.equal(after_state[k], before_state[k]) for k in before_state)
        assert torch.equal(logits(loaded), before_logits)

    def test_keep_ratio_two_factor_form_counts_exactly(
        self, family_dirs: dict[str, Path], family: str
    ) -> None:
        loaded = loaded_model(family_dirs, family)
        gamma = DecompositionConfig(layers=(0,), tensors="all", rank=None, keep=0.5)
        predicted = parameter_report(loaded.spec, gamma)
        with surgery.decomposed(loaded, gamma) as report:
            assert report.params_after == predicted.params_after == surgery.count_parameters(loaded.model)

    def test_full_rank_matches_the_dense_forward(self, family_dirs: dict[str, Path], family: str) -> None:
        loaded = loaded_model(family_dirs, family)
        spec = loaded.spec
        dense = logits(loaded)
        layers = tuple(range(spec.n_layers))
        ranks = {f"{layer}:{t.name}": t.rank for layer in layers for t in spec.tensors}
        full = DecompositionConfig(layers=layers, tensors="all", ranks=ranks)
        with surgery.decomposed(loaded, full) as report:
            assert report.max_rel_error < 1e-5
            factored = logits(loaded)
        scale = float(dense.abs().max())
        assert float((factored - dense).abs().max()) <= 1e-4 * max(scale, 1.0)

    def test_factors_save_and_load_back(
        self, family_dirs: dict[str, Path], family: str, tmp_path: Path
    ) -> None:
        loaded = loaded_model(family_dirs, family)
        gamma = DecompositionConfig(layers=(1,), tensors="all", rank=1)
        with surgery.decomposed(loaded, gamma) as report:
            expected = logits(loaded)
            save_decomposed(loaded, report, tmp_path / "saved")
        again = load_decomposed(tmp_path / "saved")
        assert again.applied.params_after == report.params_after
        assert torch.equal(logits(again), expected)

    def test_space_show_lists_the_tensors(self, family_dirs: dict[str, Path], family: str) -> None:
        result = CliRunner().invoke(cli, ["space", "show", str(family_dirs[family]), "--json"])
        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)
        spec = load_spec(str(family_dirs[family]))
        assert shown["family"] == family
        assert [t["name"] for t in shown["tensors"]] == list(spec.tensor_names)
        assert all(t["handling"] for t in shown["tensors"])
        text = CliRunner().invoke(cli, ["space", "show", str(family_dirs[family])])
        assert f"--tensors {','.join(spec.tensor_names)} (or all)" in text.stdout


def _invoke_json(args: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("family", END_TO_END)
class TestEndToEnd:
    def test_decompose_cli(self, family_dirs: dict[str, Path], family: str, tmp_path: Path) -> None:
        directory = str(family_dirs[family])
        out = _invoke_json(["decompose", directory, "--layers", "0,1", "--tensors", "all", "--rank", "1",
                            "--cache-dir", str(tmp_path)])
        spec = load_spec(directory)
        predicted = parameter_report(spec, DecompositionConfig(layers=(0, 1), tensors="all", rank=1))
        assert out["params_after"] == predicted.params_after
        assert len(out["per_tensor"]) == 2 * spec.n_tensors

    def test_evaluate_cli(self, family_dirs: dict[str, Path], family: str, tmp_path: Path,
                          data_dir: Path) -> None:
        out = _invoke_json(["evaluate", str(family_dirs[family]), "--layers", "1", "--rank", "1",
                            "--tasks", "dse_arc_easy", "--limit", "4", "--data-dir", str(data_dir),
                            "--cache-dir", str(tmp_path)])
        assert 0.0 <= out["accuracy"] <= 1.0 and 0.0 <= out["baseline_accuracy"] <= 1.0
        assert out["params"] < out["params_before"]

    def test_two_trial_study(self, family_dirs: dict[str, Path], family: str, tmp_path: Path,
                             data_dir: Path) -> None:
        toml = tmp_path / "study.toml"
        toml.write_text(
            f'model = "{family_dirs[family]}"\nname = "family-{family}"\ntau = 100.0\nn_trials = 2\n'
            f'[rules]\nrank-one = true\nwhole-layers = true\nskip-early = 0\n'
            f'[evaluation]\ntasks = ["dse_arc_easy"]\nlimit = 4\nbatch_size = 8\ndata_dir = "{data_dir}"\n'
            f'[search]\nsampler = "random"\nseed = 0\n'
            f'[workload]\nprefill_tokens = 4\ndecode_tokens = 1\nwarmup = 0\nrepeats = 1\n'
        )
        storage = f"sqlite:///{tmp_path / 's.db'}"
        out = _invoke_json(["study", "run", str(toml), "--storage", storage, "--no-plots", "--quiet"])
        assert out["counts"]["complete"] == 2, out
        spec = load_spec(str(family_dirs[family]))
        for trial in load_study(f"family-{family}", storage=storage).study.trials:
            attrs = trial.user_attrs
            gamma = DecompositionConfig(**{k: attrs["gamma"][k] for k in ("layers", "tensors", "rank")})
            assert attrs["params"] == parameter_report(spec, gamma).params_after
            assert attrs["per_task"]["dse_arc_easy"]["n_docs"] == 4


@pytest.mark.parametrize(("family", "tensor"), [("gpt2", "up"), ("mixtral", "down")])
def test_calibrated_methods_refuse_conv1d_and_expert_tensors(
    family_dirs: dict[str, Path], family: str, tensor: str
) -> None:
    loaded = loaded_model(family_dirs, family)
    gamma = DecompositionConfig(layers=(0,), tensors=(tensor,), rank=1, method="svd-llm")
    with pytest.raises(InvalidConfigError, match=f"method svd-llm works on nn.Linear weights only; tensor '{tensor}'"):
        surgery.apply(loaded, gamma)
    assert not loaded.originals
