r"""Perplexity on WikiText-2 (test) with a sliding window: a cheap, smooth fidelity measure.

The text is Hugging Face's ``wikitext-2-raw-v1`` test split as the usual recipe uses it
(``"\n\n".join(dataset["text"])``), rebuilt from the two files in
``<data dir>/wikitext2``: ``wiki.test.raw`` holds the raw text of the 2,891 non-empty
lines, and ``test.txt`` (the tokenised release, 4,358 lines) says where the blank lines
were. Without ``test.txt`` the raw lines are joined with blank lines between them (the
same text but for the missing runs of blank lines, so a slightly different figure).

The window recipe is the standard one (transformers' "Perplexity of fixed-length
models"): windows of ``max_length`` tokens start every ``stride`` tokens, each scores
only the tokens the previous window did not, with the rest of the window as context;
every token but the first is scored exactly once and the perplexity is
``exp(total NLL / scored tokens)``, i.e. weighted by token count.
"""

from __future__ import annotations

import math
import os
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from objectives.base import EvalTarget, Measurement, Objective
from space.env import resolve_data_dir
from space.errors import DataError, InvalidConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["PerplexityMeasurement", "PerplexityObjective", "wikitext2_test_text"]

RAW_FILE = "wikitext2/wiki.test.raw"
LAYOUT_FILE = "wikitext2/test.txt"
# Cap for the default window: the model's full context (8192 for SmolLM2) would cost
# logits of 8192 x vocab floats per window on a CPU.
DEFAULT_MAX_LENGTH_CAP = 1024
# tokenizer -> {data dir: token ids of the whole text}: tokenising the 1.3 MB text takes
# a second or more, and every objective with the same tokenizer and data reuses it.
_TOKENS: weakref.WeakKeyDictionary[Any, dict[str, torch.Tensor]] = weakref.WeakKeyDictionary()


class PerplexityMeasurement(Measurement):
    """WikiText-2 test perplexity over ``tokens`` scored tokens."""

    objective: Literal["perplexity"] = "perplexity"
    perplexity: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int
    stride: int
    max_length: int
    seconds: float


def wikitext2_test_text(data_dir: Path) -> str:
    r"""The test split as ``"\n\n".join(hf_dataset["text"])`` (see the module docstring).

    Raises:
        DataError: ``wiki.test.raw`` is missing, or ``test.txt`` does not match it.
    """
    raw_path = data_dir / RAW_FILE
    if not raw_path.is_file():
        raise DataError(f"WikiText-2 file {RAW_FILE!r} is missing from the data directory {data_dir}")
    raw = raw_path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    layout_path = data_dir / LAYOUT_FILE
    if not layout_path.is_file():
        return "\n\n".join(f"{line}\n" for line in raw)
    layout = layout_path.read_text(encoding="utf-8").split("\n")
    if layout and layout[-1] == "":
        layout.pop()
    filled = sum(1 for line in layout if line.strip())
    if filled != len(raw):
        raise DataError(
            f"{LAYOUT_FILE} has {filled} non-empty lines but {RAW_FILE} has {len(raw)}; they must match"
        )
    lines = iter(raw)
    # The HF builder yields "" for a blank line and the line with its "\n" otherwise.
    return "\n\n".join(f"{next(lines)}\n" if line.strip() else "" for line in layout)


class PerplexityObjective(Objective):
    """Sliding-window perplexity on WikiText-2 test; never modifies the model.

    Args:
        data_dir: the benchmark data directory (``--data-dir``); else ``$DSE_DATA_DIR``,
            else ``../shared/data`` beside the checkout.
        max_length: tokens per window; None for the model's context length, at most 1024.
        stride: tokens between window starts (and tokens scored per window after the
            first); ``stride == max_length`` gives disjoint windows.
        max_tokens: use only the first ``max_tokens`` tokens of the text (a quick,
            deterministic prefix); None for all.

    Raises:
        InvalidConfigError: a length below its minimum, or ``stride > max_length``.
        DataError: no data directory, or the WikiText-2 file is missing.
    """

    name = "perplexity"

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        max_length: int | None = None,
        stride: int = 512,
        max_tokens: int | None = None,
    ) -> None:
        _check_int("stride", stride, minimum=1)
        if max_length is not None:
            _check_int("max_length", max_length, minimum=2)
            if stride > max_length:
                raise InvalidConfigError(
                    f"stride must be at most max_length, got stride={stride}, max_length={max_length}"
                )
        if max_tokens is not None:
            _check_int("max_tokens", max_tokens, minimum=2)
        resolved = resolve_data_dir(data_dir)
        if resolved is None:
            raise DataError(
                "perplexity needs the benchmark data directory: pass --data-dir, set DSE_DATA_DIR, "
                "or place the data in ../shared/data beside the checkout"
            )
        if not (resolved / RAW_FILE).is_file():
            raise DataError(f"WikiText-2 file {RAW_FILE!r} is missing from the data directory {resolved}")
        self.data_dir = resolved
        self.max_length = max_length
        self.stride = stride
        self.max_tokens = max_tokens

    def measure(self, target: EvalTarget) -> PerplexityMeasurement:
        """Score the text with the model under ``torch.no_grad()``; restores its training mode."""
        import torch

        started = time.perf_counter()
        ids = self._token_ids(target.tokenizer)
        max_length = self.max_length or _default_max_length(target.model)
        stride = min(self.stride, max_length)
        model = target.model
        modes = [(module, module.training) for module in model.modules()]
        model.eval()
        total_nll = 0.0
        scored = 0
        try:
            with torch.no_grad():
                previous_end = 0
                for begin in range(0, len(ids), stride):
                    end = min(begin + max_length, len(ids))
                    new = end - previous_end
                    window = ids[begin:end].unsqueeze(0).to(target.device)
                    labels = window.clone()
                    labels[:, :-new] = -100
                    # The model shifts labels by one: count the positions its mean loss covers.
                    counted = int((labels[:, 1:] != -100).sum())
                    if counted:
                        loss = model(input_ids=window, labels=labels).loss
                        total_nll += float(loss) * counted
                        scored += counted
                    previous_end = end
                    if end == len(ids):
                        break
        finally:
            for module, training in modes:
                module.training = training
        if scored == 0:
            raise DataError("the WikiText-2 text gave fewer than two tokens; nothing to score")
        nll = total_nll / scored
        return PerplexityMeasurement(
            perplexity=math.exp(nll),
            nll=nll,
            tokens=scored,
            stride=stride,
            max_length=max_length,
            seconds=time.perf_counter() - started,
        )

    def _token_ids(self, tokenizer: Any) -> torch.Tensor:
        per_dir = _TOKENS.setdefault(tokenizer, {})
        key = str(self.data_dir.resolve())
        if key not in per_dir:
            per_dir[key] = tokenizer(wikitext2_test_text(self.data_dir), return_tensors="pt").input_ids[0]
        ids = per_dir[key]
        return ids if self.max_tokens is None else ids[: self.max_tokens]


def _default_max_length(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return min(int(context), DEFAULT_MAX_LENGTH_CAP) if context else DEFAULT_MAX_LENGTH_CAP


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
