"""Saving a decomposed model and loading it back: identical logits, no re-decomposition."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import dse
from dse import saving, surgery
from dse.models import LoadedModel
from space.config import DecompositionConfig
from space.errors import DataError, InvalidConfigError, StorageError

TOKENS = torch.tensor([[1, 504, 3458, 282, 4649, 314, 253, 1789, 30, 2]])
GAMMA = DecompositionConfig(layers=(1, 3), tensors=("q", "o", "down"), rank=3)


def logits(loaded: LoadedModel) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(input_ids=TOKENS).logits


@pytest.fixture
def tiny(tiny_llama: LoadedModel) -> Iterator[LoadedModel]:
    surgery.undo(tiny_llama)
    yield tiny_llama
    surgery.undo(tiny_llama)


@pytest.fixture
def saved(tiny: LoadedModel, tmp_path: Path) -> tuple[Path, torch.Tensor, surgery.SurgeryReport]:
    report = surgery.apply(tiny, GAMMA)
    expected = logits(tiny)
    out = saving.save_decomposed(tiny, report, tmp_path / "out")
    surgery.undo(tiny)
    return out, expected, report


def test_round_trip_gives_identical_logits_without_decomposing(
    saved: tuple[Path, torch.Tensor, surgery.SurgeryReport], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, expected, report = saved
    names = {p.name for p in out.iterdir()}
    # The factors and manifest, and beside them a Hugging Face model with remote code.
    assert {"decomposed.json", "factors.safetensors", "config.json", "model.safetensors",
            "modeling_lowrank_dse.py"} <= names
    assert not any(".tmp" in n for n in names)

    def no_decomposition(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_decomposed must not decompose")

    monkeypatch.setattr("dse.decompose.decompose", no_decomposition)
    loaded = dse.load_decomposed(out)
    assert torch.equal(logits(loaded), expected)
    restored = surgery.current(loaded)
    assert restored is not None
    assert restored.gamma_hash == report.gamma_hash
    assert restored.params_after == report.params_after
    assert [t.rel_error for t in restored.per_tensor] == [t.rel_error for t in report.per_tensor]
    surgery.undo(loaded)
    assert not torch.equal(logits(loaded), expected)


def test_manifest_names_the_base_model(saved: tuple[Path, torch.Tensor, surgery.SurgeryReport],
                                       tiny: LoadedModel) -> None:
    out, _, report = saved
    manifest = json.loads((out / "decomposed.json").read_text())
    assert manifest["base"] == {"name": "tiny-llama", "fingerprint": tiny.fingerprint, "dtype": "float32"}
    assert manifest["gamma"] == GAMMA.canonical(tiny.spec)
    assert manifest["report"]["params_after"] == report.params_after
    from safetensors.torch import load_file

    factors = load_file(str(out / "factors.safetensors"))
    assert len(factors) == 3 * 6
    assert tuple(factors["1.down.u1"].shape) == (64, 3)
    assert tuple(factors["1.down.core"].shape) == (3, 3)
    assert tuple(factors["1.down.u2"].shape) == (176, 3)


def test_saving_a_gamma_applies_it_only_for_the_save(tiny: LoadedModel, tmp_path: Path) -> None:
    expected = logits(tiny)
    out = saving.save_decomposed(tiny, GAMMA, tmp_path / "g")
    assert surgery.current(tiny) is None
    assert torch.equal(logits(tiny), expected)
    assert saving.read_manifest(out).gamma_hash == GAMMA.hash(tiny.spec)


def test_saving_a_report_of_another_gamma_is_refused(tiny: LoadedModel, tmp_path: Path) -> None:
    report = surgery.apply(tiny, GAMMA)
    surgery.apply(tiny, DecompositionConfig(layers=(2,), rank=1))
    with pytest.raises(InvalidConfigError, match="apply it first"):
        saving.save_decomposed(tiny, report, tmp_path / "x")
    with pytest.raises(InvalidConfigError, match="undo it first"):
        saving.save_decomposed(tiny, GAMMA, tmp_path / "x")


def test_identity_gamma_is_not_saved(tiny: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="nothing to save"):
        saving.save_decomposed(tiny, DecompositionConfig(), tmp_path / "id")
    assert not (tmp_path / "id").exists()


def test_unwritable_out_is_one_storage_error(tiny: LoadedModel, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="cannot write the decomposed model"):
        saving.save_decomposed(tiny, GAMMA, blocker / "out")
    assert surgery.current(tiny) is None


def test_fingerprint_mismatch_is_refused(saved: tuple[Path, torch.Tensor, surgery.SurgeryReport]) -> None:
    out = saved[0]
    manifest = json.loads((out / "decomposed.json").read_text())
    manifest["base"]["fingerprint"] = "0" * 16
    (out / "decomposed.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="fingerprint 0000000000000000"):
        saving.load_decomposed(out)


def test_damaged_directories_are_reported(saved: tuple[Path, torch.Tensor, surgery.SurgeryReport],
                                          tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a decomposed model directory"):
        saving.load_decomposed(tmp_path / "nothing-here")
    out = saved[0]
    data = (out / "factors.safetensors").read_bytes()
    (out / "factors.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="missing or damaged"):
        saving.load_decomposed(out)
    (out / "decomposed.json").write_text("{not json")
    with pytest.raises(DataError, match="damaged"):
        saving.load_decomposed(out)


def test_folded_round_trip(tiny: LoadedModel, tmp_path: Path) -> None:
    report = surgery.apply(tiny, GAMMA, fold=True)
    expected = logits(tiny)
    out = saving.save_decomposed(tiny, report, tmp_path / "folded")
    surgery.undo(tiny)
    loaded = saving.load_decomposed(out)
    restored = surgery.current(loaded)
    assert restored is not None and restored.fold
    assert restored.params_after == report.params_after
    assert torch.equal(logits(loaded), expected)
