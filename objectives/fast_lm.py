"""Shared-context scoring: lm-eval's ``HFLM`` with each document's context computed once.

lm-eval scores a multiple-choice document as one request per choice, each a full forward
of context + continuation. :class:`SharedContextLM` keeps ``HFLM``'s tokenization (its
``loglikelihood`` and ``_encode_pair`` run unchanged, BOS handling included) and replaces
only the scoring of the token lists, ``_loglikelihood_tokens``:

- Requests with the same context tokens become one packed row: the context once, then
  every continuation but its last token, each continuation placed at the positions it
  would have after the context and seeing only the context and itself (a block
  attention mask). Logits come from the same positions as in ``HFLM``'s separate
  sequences, so each request's log-likelihood and greedy flag are ``HFLM``'s up to
  float rounding.
- Only the positions that score a continuation go through the LM head and the
  log-softmax (``HFLM`` runs them for every context token too).
- Rows are batched by a token budget (rows × longest row), longest first.
- With a :class:`~objectives.fast_lm_prefix.PrefixStore`, a forward starts at the
  deepest layer whose incoming hidden states are stored for this batch and this model
  prefix (the undecomposed layers of a γ).

Anything this path does not cover goes to ``HFLM``'s own code: models other than the
Llama family with ``sdpa``/``eager`` attention, seq2seq models, requests ``HFLM`` would
left-truncate, and ``loglikelihood_rolling`` (perplexity).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from objectives.fast_lm_prefix import PrefixStore, PrefixView

__all__ = ["DEFAULT_TOKEN_BUDGET", "SUPPORTED_MODEL_TYPES", "fast_lm_class", "supports"]

# Tokens (rows × padded row length) per forward. On this project's 2-core CPU with SmolLM2-135M,
# `benchmarks/bench_trial.py --limit 10 --threads 1 --budgets 512,1024` took 8.5 and 10.2 CPU
# seconds: smaller batches stay in cache. Larger budgets were not measured (docs/performance.md).
DEFAULT_TOKEN_BUDGET = 512
SUPPORTED_MODEL_TYPES = frozenset({"llama"})
_ATTENTION = frozenset({"sdpa", "eager"})
# CPU float32 matrix products with fewer rows than this take another kernel, whose sums round
# differently (up to 5e-5 on SmolLM2's LM head, measured with torch 2.13); from 4 rows on a row's
# result does not depend on how many rows there are, which HFLM's head (a whole sequence) relies on.
_MIN_GEMM_ROWS = 4

Request = tuple[tuple[str, str], list[int], list[int]]


def supports(model: Any) -> bool:
    """Whether :class:`SharedContextLM` can run ``model``'s layers itself (else HFLM's path)."""
    config = getattr(model, "config", None)
    inner = getattr(model, "model", None)
    return (
        config is not None
        and getattr(config, "model_type", None) in SUPPORTED_MODEL_TYPES
        and getattr(config, "_attn_implementation", None) in _ATTENTION
        and not getattr(config, "is_encoder_decoder", False)
        and all(hasattr(inner, name) for name in ("embed_tokens", "layers", "norm", "rotary_emb"))
        and hasattr(model, "lm_head")
    )


@dataclass
class _Row:
    """One packed sequence: a context once, then each request's continuation minus its last token."""

    context: list[int]
    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)  # 0 context, k for the k-th request
    scored: list[tuple[int, list[int], list[int]]] = field(default_factory=list)  # (request, logit rows, targets)

    def __post_init__(self) -> None:
        self.tokens = list(self.context)
        self.positions = list(range(len(self.context)))
        self.segments = [0] * len(self.context)

    def add(self, request: int, continuation: list[int]) -> None:
        segment = len(self.scored) + 1
        start = len(self.tokens)
        body = continuation[:-1]
        self.tokens.extend(body)
        self.positions.extend(range(len(self.context), len(self.context) + len(body)))
        self.segments.extend([segment] * len(body))
        logit_rows = [len(self.context) - 1, *range(start, start + len(body))]
        self.scored.append((request, logit_rows, list(continuation)))


def _pack(
    requests: Sequence[Request], max_length: int, share_context: bool = True
) -> tuple[list[_Row], list[int]]:
    """Group requests by context tokens into rows (one row each without sharing); the indices HFLM must score."""
    rows: dict[tuple[int, ...], _Row] = {}
    fallback: list[int] = []
    for index, (_, context, continuation) in enumerate(requests):
        if not context or not continuation or len(context) + len(continuation) > max_length + 1:
            fallback.append(index)  # HFLM left-truncates (or asserts); keep its behaviour
            continue
        key = tuple(context) if share_context else (index,)
        row = rows.setdefault(key, _Row(list(context)))
        row.add(index, continuation)
    return list(rows.values()), fallback


def _batches(rows: list[_Row], token_budget: int) -> list[list[_Row]]:
    """Longest first; each batch's rows × longest row stays within the budget (one row at least)."""
    ordered = sorted(rows, key=lambda r: (-len(r.tokens), r.tokens))
    batches: list[list[_Row]] = []
    for row in ordered:
        if batches and (len(batches[-1]) + 1) * len(batches[-1][0].tokens) <= token_budget:
            batches[-1].append(row)
        else:
            batches.append([row])
    return batches


def _batch_key(batch: list[_Row], fingerprint: str) -> str:
    digest = hashlib.sha1(fingerprint.encode())
    for row in batch:
        digest.update(repr((row.tokens, row.positions, row.segments)).encode())
    return digest.hexdigest()


def _tensors(batch: list[_Row], device: Any, mask_dtype: Any) -> tuple[Any, Any, Any]:
    """Padded ids, positions and the block attention mask (True/0.0 where a query may look)."""
    import torch

    length = len(batch[0].tokens)
    ids = torch.zeros((len(batch), length), dtype=torch.long)
    positions = torch.zeros((len(batch), length), dtype=torch.long)
    segments = torch.full((len(batch), length), -1, dtype=torch.long)
    for i, row in enumerate(batch):
        n = len(row.tokens)
        ids[i, :n] = torch.tensor(row.tokens)
        positions[i, :n] = torch.tensor(row.positions)
        segments[i, :n] = torch.tensor(row.segments)
    order = torch.arange(length)
    causal = order[None, :] <= order[:, None]  # [query, key]
    same = (segments[:, None, :] == 0) | (segments[:, None, :] == segments[:, :, None])
    allowed = (causal[None] & same)[:, None]  # [batch, 1, query, key]; padding sees itself
    if mask_dtype is torch.bool:
        mask = allowed
    else:
        mask = torch.zeros(allowed.shape, dtype=mask_dtype)
        mask.masked_fill_(~allowed, torch.finfo(mask_dtype).min)
    return ids.to(device), positions.to(device), mask.to(device)


def _forward_hidden(
    model: Any,
    batch: list[_Row],
    device: Any,
    store: PrefixStore | None,
    view: PrefixView | None,
    fingerprint: str,
) -> Any:
    """Final-norm hidden states of a packed batch, starting at a stored layer where one fits."""
    import torch

    inner = model.model
    layers = list(inner.layers)[: model.config.num_hidden_layers]
    dtype = inner.embed_tokens.weight.dtype
    mask_dtype = torch.bool if model.config._attn_implementation == "sdpa" else dtype
    ids, positions, mask = _tensors(batch, device, mask_dtype)
    key = _batch_key(batch, fingerprint)
    start, hidden = (store.lookup(key, view) if store is not None and view is not None else (0, None))
    if hidden is None:
        hidden = inner.embed_tokens(ids)
    position_embeddings = inner.rotary_emb(hidden, position_ids=positions)
    for index in range(start, len(layers)):
        if index > start and store is not None and view is not None and store.wants(view, index):
            store.put(key, view, index, hidden)
        hidden = layers[index](
            hidden, attention_mask=mask, position_ids=positions, position_embeddings=position_embeddings
        )
    return inner.norm(hidden)


@functools.lru_cache(maxsize=1)
def fast_lm_class() -> type:
    """The LM class: the project's quiet ``HFLM`` with shared-context scoring.

    Built lazily so importing this module does not import lm-eval or torch.
    """
    from objectives.harness import silent_hflm_class

    base = silent_hflm_class()

    class SharedContextLM(base):  # type: ignore[misc, valid-type]
        """``HFLM`` whose log-likelihood requests share each document's context (module docstring)."""

        def __init__(
            self,
            *args: Any,
            token_budget: int = DEFAULT_TOKEN_BUDGET,
            prefix_store: PrefixStore | None = None,
            fingerprint: str = "",
            share_context: bool = True,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self.token_budget = token_budget
            self.share_context = share_context
            self.prefix_store = prefix_store
            self.fingerprint = fingerprint
            self.forwards = 0  # packed forward passes run (for tests and benchmarks)

        def _loglikelihood_tokens(
            self, requests: list[Request], disable_tqdm: bool = False, override_bs: int | None = None
        ) -> list[tuple[float, bool]]:
            if override_bs is not None or self.backend != "causal" or not supports(self.model):
                answers: list[tuple[float, bool]] = super()._loglikelihood_tokens(
                    requests, disable_tqdm=disable_tqdm, override_bs=override_bs
                )
                return answers
            rows, fallback = _pack(requests, self.max_length, self.share_context)
            results: list[tuple[float, bool] | None] = [None] * len(requests)
            if fallback:
                scored = super()._loglikelihood_tokens([requests[i] for i in fallback], disable_tqdm=True)
                for index, answer in zip(fallback, scored, strict=True):
                    results[index] = answer
            if rows:
                self._score_rows(rows, results)
            for index in sorted(set(range(len(requests))) - set(fallback)):  # HFLM noted its own
                if requests[index][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[index][0], results[index])
            return [answer for answer in results if answer is not None]

        def _score_rows(self, rows: list[_Row], results: list[tuple[float, bool] | None]) -> None:
            import torch
            from torch.nn.functional import log_softmax

            model = self.model
            store = self.prefix_store
            view = None
            if store is not None:
                inner = model.model
                view = store.view(self.fingerprint, inner.embed_tokens, list(inner.layers))
            with torch.no_grad():
                for batch in _batches(rows, self.token_budget):
                    hidden = _forward_hidden(model, batch, self.device, store, view, self.fingerprint)
                    self.forwards += 1
                    picks = [(b, at) for b, row in enumerate(batch) for _, where, _ in row.scored for at in where]
                    where_b = torch.tensor([b for b, _ in picks], device=hidden.device)
                    where_t = torch.tensor([t for _, t in picks], device=hidden.device)
                    picked = hidden[where_b, where_t]
                    if len(picks) < _MIN_GEMM_ROWS:  # pad: fewer rows round unlike HFLM's full-sequence head
                        picked = torch.cat([picked, picked[:1].expand(_MIN_GEMM_ROWS - len(picks), -1)])
                    logits = model.lm_head(picked)
                    logprobs = log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
                    greedy = logprobs.argmax(dim=-1)
                    offset = 0
                    for row in batch:
                        for request, rows_, targets in row.scored:
                            span = slice(offset, offset + len(rows_))
                            target = torch.tensor(targets, device=logprobs.device)
                            chosen = logprobs[span].gather(1, target[:, None]).squeeze(1)
                            results[request] = (float(chosen.sum()), bool((greedy[span] == target).all()))
                            offset += len(rows_)

    return SharedContextLM
