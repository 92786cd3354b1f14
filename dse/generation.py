"""Greedy text continuation of a loaded model, original or decomposed (``dse generate``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from space.errors import InvalidConfigError

if TYPE_CHECKING:
    import torch

    from dse.models import LoadedModel

__all__ = ["greedy_continuation"]


def greedy_continuation(loaded: LoadedModel, prompt: str, *, max_new_tokens: int = 16) -> str:
    """Greedy-decode ``prompt`` as plain text and return only the new text.

    Deterministic (no sampling), so the original and a decomposed model can be compared
    token for token.

    Raises:
        InvalidConfigError: ``max_new_tokens`` is not positive, or the model cannot generate.
    """
    import torch

    if max_new_tokens < 1:
        raise InvalidConfigError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    model = loaded.model
    if not hasattr(model, "generate") or not getattr(model, "can_generate", lambda: False)():
        raise InvalidConfigError(
            f"{loaded.name} is a {type(model).__name__}, which cannot generate text; "
            f"use a causal language model"
        )
    tokenizer = loaded.tokenizer
    inputs = tokenizer(prompt, return_tensors="pt").to(loaded.device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            # hasattr above: every generating model has ``generate`` (nn.Module's typing cannot say so).
            generate = cast("Callable[..., torch.Tensor]", model.generate)
            output = generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                pad_token_id=pad, temperature=None, top_p=None, top_k=None,
            )
    finally:
        model.train(was_training)
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    return str(tokenizer.decode(new_tokens, skip_special_tokens=True))
