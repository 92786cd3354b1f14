"""WikiText-2 perplexity: the rebuilt text, window arithmetic, errors, SmolLM2's figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from objectives.perplexity import PerplexityMeasurement, PerplexityObjective, wikitext2_test_text
from space.errors import DataError, InvalidConfigError


def write_wikitext(root: Path, raw_lines: list[str], layout: list[str] | None) -> Path:
    (root / "wikitext2").mkdir(parents=True)
    (root / "wikitext2/wiki.test.raw").write_bytes("".join(f"{line}\r\n" for line in raw_lines).encode())
    if layout is not None:
        (root / "wikitext2/test.txt").write_text("".join(f"{line}\n" for line in layout))
    return root


def test_text_rebuilds_the_hf_rows_with_their_blank_lines(tmp_path: Path) -> None:
    root = write_wikitext(
        tmp_path,
        [" = Title = ", " First paragraph with Ünïcode . ", " Second . "],
        [" ", " = <unk> = ", " ", " First paragraph with <unk> . ", " Second . ", " "],
    )
    rows = ["", " = Title = \n", "", " First paragraph with Ünïcode . \n", " Second . \n", ""]
    assert wikitext2_test_text(root) == "\n\n".join(rows)


def test_text_without_the_layout_file_joins_the_lines(tmp_path: Path) -> None:
    root = write_wikitext(tmp_path, [" a ", " b "], None)
    assert wikitext2_test_text(root) == " a \n\n\n b \n"


def test_layout_that_does_not_match_is_a_data_error(tmp_path: Path) -> None:
    root = write_wikitext(tmp_path, [" a ", " b "], [" a ", " "])
    with pytest.raises(DataError, match=r"test.txt has 1 non-empty lines but wikitext2/wiki.test.raw has 2"):
        wikitext2_test_text(root)


def test_real_text_is_the_hf_test_split(data_dir: Path) -> None:
    text = wikitext2_test_text(data_dir)
    assert text.startswith("\n\n = Robert Boulter = \n\n\n\n\n Robert Boulter is an English film , television")
    assert len(text) == 1_294_336
    assert "\r" not in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stride": 0}, "stride must be an integer >= 1, got 0"),
        ({"max_length": 1}, "max_length must be an integer >= 2, got 1"),
        ({"max_length": 64, "stride": 128}, "stride must be at most max_length, got stride=128, max_length=64"),
        ({"max_tokens": 1}, "max_tokens must be an integer >= 2, got 1"),
    ],
)
def test_bad_options_are_config_errors(kwargs: dict[str, Any], message: str, data_dir: Path) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        PerplexityObjective(data_dir=data_dir, **kwargs)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'wikitext2/wiki.test.raw' is missing"):
        PerplexityObjective(data_dir=tmp_path)


@pytest.fixture(scope="module")
def tiny_ids(tiny_llama: Any, data_dir: Path) -> Any:
    return tiny_llama.tokenizer(wikitext2_test_text(data_dir), return_tensors="pt").input_ids[0]


def test_one_window_equals_the_models_own_loss(tiny_llama: Any, data_dir: Path, tiny_ids: Any) -> None:
    import torch

    objective = PerplexityObjective(data_dir=data_dir, max_length=128, stride=128, max_tokens=100)
    result = objective.measure(tiny_llama.target())
    ids = tiny_ids[:100].unsqueeze(0)
    with torch.no_grad():
        loss = float(tiny_llama.model(input_ids=ids, labels=ids).loss)
    assert result.tokens == 99
    assert result.nll == pytest.approx(loss, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(loss), rel=1e-5)


def test_sliding_windows_score_every_token_but_the_first_once(tiny_llama: Any, data_dir: Path) -> None:
    overlapping = PerplexityObjective(data_dir=data_dir, max_length=64, stride=32, max_tokens=150)
    result = overlapping.measure(tiny_llama.target())
    assert isinstance(result, PerplexityMeasurement)
    assert result.tokens == 149 and result.stride == 32 and result.max_length == 64
    assert math.isfinite(result.perplexity) and result.perplexity > 1.0
    assert overlapping.measure(tiny_llama.target()).perplexity == result.perplexity  # deterministic
    # Disjoint windows lose the first token of each window: 150 tokens, 3 windows of 50.
    disjoint = PerplexityObjective(data_dir=data_dir, max_length=50, stride=50, max_tokens=150)
    assert disjoint.measure(tiny_llama.target()).tokens == 147


def test_sliding_window_equals_a_token_by_token_computation(tiny_llama: Any, data_dir: Path, tiny_ids: Any) -> None:
    import torch

    max_length, stride, n = 16, 8, 40
    result = PerplexityObjective(data_dir=data_dir, max_length=max_length, stride=stride, max_tokens=n).measure(
        tiny_llama.target()
    )
    ids = tiny_ids[:n]
    # Token j is scored by the window that first reaches it: the one starting at the
    # largest multiple of the stride with start + max_length > j, context ids[start:j].
    total = 0.0
    with torch.no_grad():
        for j in range(1, n):
            start = max(0, ((j - max_length) // stride + 1) * stride) if j >= max_length else 0
            logits = tiny_llama.model(input_ids=ids[start:j].unsqueeze(0)).logits[0, -1]
            total -= float(torch.log_softmax(logits.double(), dim=-1)[ids[j]])
    assert result.tokens == n - 1
    assert result.nll == pytest.approx(total / (n - 1), rel=1e-4)


def test_measure_leaves_the_model_unchanged(tiny_llama: Any, data_dir: Path, unchanged: Any) -> None:
    PerplexityObjective(data_dir=data_dir, max_length=32, stride=32, max_tokens=64).measure(tiny_llama.target())
    unchanged()


@pytest.mark.slow
def test_smollm2_perplexity_is_finite_and_sane(smollm2: Any, data_dir: Path) -> None:
    # Measured here: 20.2 on the first 4,096 tokens (window 1024, stride 512); this
    # shorter prefix with half-size windows gives a little more.
    objective = PerplexityObjective(data_dir=data_dir, max_length=512, stride=256, max_tokens=1024)
    result = objective.measure(smollm2.target())
    assert result.tokens == 1023
    assert 8.0 < result.perplexity < 40.0
