"""Calibration on tiny-llama: one pass per settings across processes, shared inputs, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dse import surgery
from dse.cache import FactorCache
from dse.calibration import CalibrationSettings
from dse.calibration_store import load_or_collect
from space.config import DecompositionConfig
from space.errors import CalibrationError

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"sequences": 3, "length": 32}


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "valid.txt"
    path.write_text(" ".join(f"The {i}th line of held-out text, with words." for i in range(200)))
    return path


def settings_for(path: Path, **extra: object) -> CalibrationSettings:
    return CalibrationSettings(source=str(path), **{**SETTINGS, **extra})  # type: ignore[arg-type]


def test_inputs_read_by_several_linears_share_one_statistic(tiny_llama, text_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    calibration, collected = load_or_collect(tiny_llama, settings_for(text_file), cache_dir=tmp_path,
                                             progress=False)
    assert collected and calibration.tokens == 3 * 32
    layers = tiny_llama.spec.n_layers
    assert len(calibration.groups) == 7 * layers
    assert calibration.shared == 4 * layers  # (q, k, v), o, (gate, up), down
    for layer in range(layers):
        assert calibration.groups[(layer, "k")] == calibration.groups[(layer, "q")] == (layer, "q")
        assert calibration.groups[(layer, "up")] == (layer, "gate")
        assert calibration.groups[(layer, "o")] == (layer, "o")
    stats = calibration.stats(1, "down")
    assert stats.gram.dtype == torch.float64 and stats.tokens == 96
    assert torch.allclose(stats.gram, stats.gram.T)
    again, collected_again = load_or_collect(tiny_llama, settings_for(text_file), cache_dir=tmp_path,
                                             progress=False)
    assert not collected_again
    assert torch.equal(again.stats(1, "down").gram, stats.gram)  # read back from disk


def test_one_pass_per_settings_across_processes(text_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = (
        "import json, sys\n"
        "from dse.models import load_model\n"
        "from dse.calibration import CalibrationSettings\n"
        "from dse.calibration_store import load_or_collect\n"
        f"s = CalibrationSettings(source={str(text_file)!r}, sequences=3, length=32)\n"
        "loaded = load_model('tiny-llama')\n"
        f"c, collected = load_or_collect(loaded, s, cache_dir={str(tmp_path)!r}, progress=False)\n"
        "print(json.dumps({'collected': collected, 'key': c.key}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env=env, cwd=ROOT) for _ in range(3)]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(r["collected"] for r in results) == 1  # the pass ran once for three processes
    assert len({r["key"] for r in results}) == 1


def test_bad_calibration_inputs_are_one_line_errors(tiny_llama, text_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CalibrationError, match="does not exist"):
        load_or_collect(tiny_llama, CalibrationSettings(source=str(tmp_path / "nope.txt")),
                        cache_dir=tmp_path, progress=False)
    with pytest.raises(CalibrationError, match="too short"):
        load_or_collect(tiny_llama, settings_for(text_file, sequences=500), cache_dir=tmp_path,
                        progress=False)
    with pytest.raises(ValueError, match="test split"):
        CalibrationSettings(source="../shared/data/wikitext2/test.txt")
    with pytest.raises(CalibrationError, match="needs calibration"):
        surgery.apply(tiny_llama, DecompositionConfig(layers=(0,), keep=0.5), method="svd-llm")


def test_the_cache_never_answers_one_method_with_another(tiny_llama, text_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    calibration, _ = load_or_collect(tiny_llama, settings_for(text_file), cache_dir=tmp_path,
                                     progress=False)
    other, _ = load_or_collect(tiny_llama, settings_for(text_file, seed=1), cache_dir=tmp_path,
                               progress=False)
    assert other.key != calibration.key
    gamma = DecompositionConfig(layers=(1,), tensors=("q", "down"), keep=0.5)
    seen = {}
    with FactorCache(tmp_path / "factors") as cache:
        for method, calib in [("svd", None), ("asvd", calibration), ("svd-llm", calibration),
                              ("feature", calibration), ("svd-llm", other)]:
            before = cache.stats.snapshot()
            with surgery.decomposed(tiny_llama, gamma, cache=cache, method=method,
                                    calibration=calib) as report:
                assert report.cache_misses == 2, method  # never served from another's entry
                assert report.fold and {t.method for t in report.per_tensor} == {method}
                factors = surgery.installed_factors(tiny_llama)[(1, "q")]
                seen[(method, calib.key if calib else "")] = factors.reconstruct()
            assert (cache.stats - before).decompositions == 2
    keys = list(seen)
    for i, first in enumerate(keys):
        for second in keys[i + 1:]:
            if {first, second} == {("svd-llm", calibration.key), ("feature", calibration.key)}:
                # Both are the optimal rank-k map in output space when XᵀX is nonsingular
                # (up to the recorded jitter), so they agree although computed apart.
                assert torch.allclose(seen[first], seen[second], atol=1e-5)
            else:
                assert not torch.allclose(seen[first], seen[second], atol=1e-4), (first, second)
    # A new process-like cache reads each method's own entry back from disk.
    with FactorCache(tmp_path / "factors") as fresh, surgery.decomposed(
            tiny_llama, gamma, cache=fresh, method="svd-llm", calibration=calibration) as report:
            assert report.cache_hits == 2
            assert torch.equal(surgery.installed_factors(tiny_llama)[(1, "q")].reconstruct(),
                               seen[("svd-llm", calibration.key)])


@pytest.mark.parametrize("method", ["svd", "hooi", "asvd", "svd-llm", "feature", "activation"])
def test_every_method_at_full_rank_reproduces_the_model(tiny_llama, text_file, tmp_path,
                                                         method: str) -> None:  # type: ignore[no-untyped-def]
    calibration, _ = load_or_collect(tiny_llama, settings_for(text_file), cache_dir=tmp_path,
                                     progress=False)
    tokens = torch.arange(5, 45)[None]
    with torch.no_grad():
        expected = tiny_llama.model(tokens).logits
    ranks = {f"{layer}:{t.name}": t.rank for layer in (0, 2) for t in tiny_llama.spec.tensors}
    gamma = DecompositionConfig(layers=(0, 2), rank=None, ranks=ranks, method=method)
    with surgery.decomposed(tiny_llama, gamma, calibration=calibration) as report:
        with torch.no_grad():
            got = tiny_llama.model(tokens).logits
        assert report.method == method
    assert torch.allclose(got, expected, atol=2e-4), float((got - expected).abs().max())


def test_a_study_evaluator_carries_its_calibration(text_file, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from dse.study.definition import StudyDefinition
    from dse.study.runner import default_evaluator_factory, measurement_settings

    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path))
    definition = StudyDefinition(
        model="tiny-llama", objective="params", evaluation={"method": "svd-llm", "limit": 2},
        calibration={"source": str(text_file), **SETTINGS})
    evaluator = default_evaluator_factory(definition, progress=False)
    assert evaluator.loaded.calibration is not None
    assert evaluator.loaded.calibration.tokens == 96
    plain = StudyDefinition(model="tiny-llama", objective="params", evaluation={"limit": 2})
    assert measurement_settings(plain).calibration is None
    assert measurement_settings(definition).calibration is not None
    other = definition.model_copy(update={"calibration": CalibrationSettings(
        source=str(text_file), sequences=3, length=32, seed=5)})
    assert measurement_settings(other).key() != measurement_settings(definition).key()  # memo apart


def test_a_model_whose_linears_cannot_be_hooked_is_one_error(tiny_llama, text_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = surgery.decomposable_paths(tiny_llama)[(2, "up")]
    original = tiny_llama.model.get_submodule(path)
    surgery.set_module(tiny_llama.model, path, torch.nn.Identity())
    try:
        with pytest.raises(CalibrationError, match=r"not an nn.Linear; its inputs cannot be hooked"):
            load_or_collect(tiny_llama, settings_for(text_file, seed=9), cache_dir=tmp_path,
                            progress=False)
    finally:
        surgery.set_module(tiny_llama.model, path, original)


def test_a_task_source_calibrates_on_its_held_out_split_only(tiny_llama, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from space.env import resolve_data_dir

    data = resolve_data_dir()
    if data is None or not (data / "arc_easy" / "ARC-Easy-Dev.jsonl").is_file():
        pytest.skip("ARC-Easy data not found (../shared/data or $DSE_DATA_DIR)")
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path))
    settings = CalibrationSettings(source="task:dse_arc_easy", **SETTINGS)  # type: ignore[arg-type]
    text = settings.source_path().read_text(encoding="utf-8")
    dev = [json.loads(line) for line in (data / "arc_easy" / "ARC-Easy-Dev.jsonl").open(encoding="utf-8")]
    first = dev[0]["question"]
    answer = next(c["text"] for c in first["choices"] if c["label"] == dev[0]["answerKey"])
    assert f"Question: {first['stem']}\nAnswer: {answer}" in text
    assert text.count("Question: ") == len(dev)
    evaluated = [json.loads(line)["question"]["stem"]
                 for line in (data / "arc_easy" / "ARC-Easy-Test.jsonl").open(encoding="utf-8")]
    dev_stems = {d["question"]["stem"] for d in dev}
    assert not any(stem in text for stem in evaluated[:200] if stem not in dev_stems)
    calibration, _ = load_or_collect(tiny_llama, settings, cache_dir=tmp_path, progress=False)
    assert calibration.tokens == SETTINGS["sequences"] * SETTINGS["length"]
    mmlu = CalibrationSettings(source="task:dse_mmlu", **SETTINGS)  # type: ignore[arg-type]
    assert mmlu.stats_key("f") != settings.stats_key("f")
    with pytest.raises(CalibrationError, match=r"no held-out split of dse_piqa.*allowed: task:dse_arc_easy"):
        CalibrationSettings(source="task:dse_piqa").source_path()


def test_a_higher_keep_is_sliced_from_the_first_calibrated_entry(tiny_llama, text_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A keep-ratio study climbing in keep decomposes each tensor once, with the same factors as a direct run."""
    calibration, _ = load_or_collect(tiny_llama, settings_for(text_file), cache_dir=tmp_path, progress=False)
    low = DecompositionConfig(layers=(1,), tensors=("q", "down"), keep=0.3)
    high = DecompositionConfig(layers=(1,), tensors=("q", "down"), keep=1.0)
    with FactorCache(tmp_path / "factors") as cache:
        with surgery.decomposed(tiny_llama, low, cache=cache, method="svd-llm", calibration=calibration) as report:
            assert report.cache_misses == 2
        before = cache.stats.snapshot()
        with surgery.decomposed(tiny_llama, high, cache=cache, method="svd-llm", calibration=calibration) as report:
            assert report.cache_hits == 2
            sliced = surgery.installed_factors(tiny_llama)[(1, "down")].reconstruct()
        assert (cache.stats - before).decompositions == 0
    with FactorCache(tmp_path / "direct") as direct, surgery.decomposed(
            tiny_llama, high, cache=direct, method="svd-llm", calibration=calibration):
        assert torch.allclose(surgery.installed_factors(tiny_llama)[(1, "down")].reconstruct(), sliced, atol=1e-6)
