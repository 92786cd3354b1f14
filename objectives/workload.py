"""The fixed inference workload that latency, energy and memory are measured on.

One pass is what a chat turn costs: a prefill of ``prefill_tokens`` prompt tokens, then
``decode_tokens`` greedy decode steps that reuse the KV cache, at ``batch_size``. The
prompt is seeded random token ids, so every model with the same vocabulary sees the
same input and no tokenizer or data file is needed.

The decode loop calls the model's forward with ``past_key_values`` rather than
``generate``: it works for any module tree (Linear layers replaced by factorized ones
included), never stops early at an end-of-sequence token, and runs exactly
``1 + decode_tokens`` forward passes per pass, which makes measurements comparable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from objectives.devices import check_device
from space.errors import InvalidConfigError

if TYPE_CHECKING:
    import torch

    from objectives.base import EvalTarget

__all__ = [
    "Workload",
    "check_device",
    "eval_mode",
    "greedy_decode",
    "run_workload",
    "synchronize",
    "workload_input_ids",
]


class Workload(BaseModel):
    """Prefill of ``prefill_tokens``, ``decode_tokens`` greedy steps, batch ``batch_size``.

    ``warmup`` passes run before measuring (caches, allocator, lazy kernels) and are not
    counted; ``repeats`` passes are measured. ``seed`` fixes the prompt token ids.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefill_tokens: int = Field(default=128, ge=1)
    decode_tokens: int = Field(default=32, ge=1)
    batch_size: int = Field(default=1, ge=1)
    warmup: int = Field(default=1, ge=0)
    repeats: int = Field(default=3, ge=1)
    seed: int = Field(default=0, ge=0)

    def __init__(self, **data: Any) -> None:
        # Pydantic reports a list of errors; a user gets one line with the rule and the value.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidConfigError(_one_line(exc)) from None

    @property
    def total_tokens(self) -> int:
        """Sequence length at the end of a pass (what the position embeddings must hold)."""
        return self.prefill_tokens + self.decode_tokens

    @property
    def forward_passes(self) -> int:
        """Forward calls in one pass: the prefill plus one per decode step."""
        return 1 + self.decode_tokens


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "workload"
        parts.append(f"workload {where}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so wall-clock and counter readings cover all of it."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Measure in eval mode (no dropout) and give the model back in the mode it had."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _vocab_size(target: EvalTarget) -> int:
    config = getattr(target.model, "config", None)
    sizes = []
    model_vocab = getattr(config, "vocab_size", None)
    if isinstance(model_vocab, int) and model_vocab > 0:
        sizes.append(model_vocab)
    if target.tokenizer is not None:
        with contextlib.suppress(TypeError):
            sizes.append(len(target.tokenizer))
    if not sizes:
        raise InvalidConfigError("cannot tell the vocabulary size: the model has no config.vocab_size and no tokenizer")
    return min(sizes)


def _max_positions(target: EvalTarget) -> int | None:
    config = getattr(target.model, "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def workload_input_ids(target: EvalTarget, workload: Workload) -> torch.Tensor:
    """The seeded prompt: ``batch_size × prefill_tokens`` ids valid for model and tokenizer.

    Raises:
        InvalidConfigError: the workload's sequence is longer than the model's positions.
    """
    import torch

    limit = _max_positions(target)
    if limit is not None and workload.total_tokens > limit:
        raise InvalidConfigError(
            f"workload of {workload.prefill_tokens} prefill + {workload.decode_tokens} decode tokens exceeds "
            f"the model's {limit} positions: lower prefill_tokens or decode_tokens"
        )
    generator = torch.Generator().manual_seed(workload.seed)
    ids = torch.randint(
        0, _vocab_size(target), (workload.batch_size, workload.prefill_tokens), generator=generator
    )
    return ids.to(target.device)


def run_workload(target: EvalTarget, workload: Workload, *, input_ids: torch.Tensor | None = None) -> None:
    """Run one pass: prefill, then ``decode_tokens`` greedy steps on the KV cache.

    Callers that time many passes build ``input_ids`` once with :func:`workload_input_ids`
    so the timed region holds only model work. The caller owns eval mode
    (:func:`eval_mode`); this function only runs forwards under ``inference_mode``.
    """
    greedy_decode(target, workload, input_ids=input_ids)


def greedy_decode(
    target: EvalTarget,
    workload: Workload,
    *,
    input_ids: torch.Tensor | None = None,
    after_prefill: Callable[[], object] | None = None,
) -> torch.Tensor:
    """The pass of :func:`run_workload`, returning the ``decode_tokens + 1`` tokens it chose.

    The prefill's logits choose the first new token and each of the ``decode_tokens``
    steps the next one, so the tokens equal ``generate(max_new_tokens=decode_tokens + 1,
    do_sample=False)`` at the same number of forward passes. A model whose forward
    returns no ``past_key_values`` (caching disabled or not supported) is decoded by
    feeding the whole sequence each step, which is what such a model costs; one that
    returns no ``logits`` (an encoder) runs the prefill only and returns no tokens.
    ``after_prefill`` is called between the prefill and the first decode step (a
    benchmark reads its clock there to time the two phases apart).
    """
    import inspect

    import torch

    ids = workload_input_ids(target, workload) if input_ids is None else input_ids
    model = target.model
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        logits = getattr(out, "logits", None)
        if logits is None:
            return ids[:, :0]
        # transformers ≥ 5.24 names the KV cache ``cache`` (``past_key_values`` is deprecated);
        # a model whose forward predates that (remote code) still takes ``past_key_values``.
        cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        past = getattr(out, cache_arg, None)
        chosen = [logits[:, -1:, :].argmax(dim=-1)]
        if after_prefill is not None:
            after_prefill()
        sequence = ids
        for _ in range(workload.decode_tokens):
            if past is not None:
                out = model(input_ids=chosen[-1], use_cache=True, **{cache_arg: past})
                past = getattr(out, cache_arg)
            else:
                sequence = torch.cat([sequence, chosen[-1]], dim=1)
                out = model(input_ids=sequence, use_cache=False)
            chosen.append(out.logits[:, -1:, :].argmax(dim=-1))
        return torch.cat(chosen, dim=1)
