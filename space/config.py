"""γ = (PR, DecompLayers, DecompTensors): one decomposition configuration (Def. 2–4).

Layer indices are 0-based everywhere (the paper's tables are 1-based: its layer 3 is
our layer 2).
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal, NamedTuple, TypedDict

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from space.errors import InvalidConfigError
from space.spec import ModelSpec

__all__ = ["DecompositionConfig", "ResolvedPair", "parse_int_list", "parse_tensor_list"]


class ResolvedPair(NamedTuple):
    """One decomposed (layer, tensor) with its pruned rank: an element (l, k, p) of PR."""

    layer: int
    tensor: str
    rank: int


def _pair_key(layer: int, tensor: str) -> str:
    return f"{layer}:{tensor}"


class CanonicalForm(TypedDict):
    """γ's unique JSON form: sorted layers, tensors in spec order, one rank or a rank per pair."""

    layers: list[int]
    tensors: list[str]
    rank: int | dict[str, int] | None


class DecompositionConfig(BaseModel):
    """A decomposition configuration γ.

    Either one ``rank`` for every decomposed (layer, tensor), or ``ranks``: one rank per
    pair, keyed ``"layer:tensor"`` (e.g. ``"2:q"``). No layers means the original model.

    Notes:
        Validity (Prop. 1) asks that the pruned ranks cover every decomposed pair
        exactly once: ``{(l, k) : (l, k, p) ∈ PR} = DecompLayers × DecompTensors``,
        so ``|PR| = |DL|·|DT|``. The paper prints this count as
        ``(|DL| − 1)(|DT| − 1) + 1``, which disagrees with its own Def. 2–3: for
        |DL| = 2, |DT| = 7 it gives 7 where 14 pairs are decomposed, and it lets a PR
        that misses pairs pass. We therefore check exact coverage of the Cartesian
        product (no missing pair, no extra pair), which is what Def. 3 and Theorem 1
        assume.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: tuple[int, ...] = ()
    tensors: tuple[str, ...] | Literal["all"] = "all"
    rank: int | None = 1
    ranks: dict[str, int] | None = None

    @field_validator("layers")
    @classmethod
    def _layers_unique(cls, layers: tuple[int, ...]) -> tuple[int, ...]:
        seen: set[int] = set()
        for layer in layers:
            if layer < 0:
                raise ValueError(f"layer indices are 0-based and non-negative, got {layer}")
            if layer in seen:
                raise ValueError(f"layer {layer} is listed twice")
            seen.add(layer)
        return tuple(sorted(layers))

    @field_validator("tensors")
    @classmethod
    def _tensors_unique(cls, tensors: tuple[str, ...] | str) -> tuple[str, ...] | str:
        if isinstance(tensors, str):
            return tensors
        if len(set(tensors)) != len(tensors):
            raise ValueError(f"a tensor is listed twice in {list(tensors)}")
        if "all" in tensors:
            raise ValueError("'all' cannot be combined with other tensor names")
        return tensors

    @model_validator(mode="after")
    def _one_rank_form(self) -> DecompositionConfig:
        if self.ranks is not None:
            if self.rank not in (None, 1) and self.rank is not None:
                raise ValueError("give either rank (one for all) or ranks (per pair), not both")
            object.__setattr__(self, "rank", None)
            for key, value in self.ranks.items():
                if value < 1:
                    raise ValueError(f"rank of {key} must be at least 1, got {value}")
        elif self.rank is None:
            raise ValueError("a rank is required (one for all, or ranks per layer:tensor)")
        elif self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")
        if self.layers and self.tensors != "all" and not self.tensors:
            raise ValueError("decomposed layers need at least one tensor")
        return self

    # ---- against a spec -------------------------------------------------------------

    def tensor_names(self, spec: ModelSpec) -> tuple[str, ...]:
        """Decomposed tensors in the spec's order ('all' expanded)."""
        if self.tensors == "all":
            return spec.tensor_names
        for name in self.tensors:
            spec.tensor(name)  # raises with the allowed names
        return tuple(n for n in spec.tensor_names if n in self.tensors)

    @property
    def is_identity(self) -> bool:
        """True for the original, undecomposed model (Def. 2 with empty sets)."""
        return not self.layers

    def validate_for(self, spec: ModelSpec) -> list[ResolvedPair]:
        """Check Def. 2, Def. 3 and Prop. 1 against ``spec``; return PR as (l, k, p) triples.

        Raises:
            InvalidConfigError: naming the offending layer, tensor or rank and the allowed range.
        """
        for layer in self.layers:
            if layer >= spec.n_layers:
                raise InvalidConfigError(
                    f"layer {layer} is out of range: {spec.name} has {spec.n_layers} layers, "
                    f"allowed 0..{spec.n_layers - 1} (0-based)"
                )
        names = self.tensor_names(spec)
        wanted = [(layer, name) for layer in self.layers for name in names]
        if self.ranks is not None:
            keys = {_pair_key(layer, name) for layer, name in wanted}
            missing = [k for k in (_pair_key(*p) for p in wanted) if k not in self.ranks]
            extra = sorted(set(self.ranks) - keys)
            if missing or extra:
                parts = []
                if missing:
                    parts.append(f"missing ranks for {', '.join(missing[:6])}")
                if extra:
                    parts.append(f"ranks given for undecomposed pairs {', '.join(extra[:6])}")
                raise InvalidConfigError(
                    "ranks must cover exactly the decomposed (layer, tensor) pairs (Prop. 1): "
                    + "; ".join(parts)
                )
        pairs = []
        for layer, name in wanted:
            rank = self.ranks[_pair_key(layer, name)] if self.ranks is not None else self.rank
            assert rank is not None
            limit = spec.tensor(name).rank
            if not 1 <= rank <= limit:
                raise InvalidConfigError(
                    f"rank {rank} of tensor {name!r} (layer {layer}) is out of range: "
                    f"allowed 1..{limit} = min(H, W) of its {spec.tensor(name).out_features}"
                    f"x{spec.tensor(name).in_features} weight"
                )
            pairs.append(ResolvedPair(layer, name, rank))
        return pairs

    def canonical(self, spec: ModelSpec) -> CanonicalForm:
        """A unique form: sorted layers, explicit tensors in spec order, collapsed ranks."""
        pairs = self.validate_for(spec)
        if not pairs:
            return {"layers": [], "tensors": [], "rank": None}
        ranks = {p.rank for p in pairs}
        rank: int | dict[str, int]
        rank = ranks.pop() if len(ranks) == 1 else {_pair_key(p.layer, p.tensor): p.rank for p in pairs}
        return {"layers": list(self.layers), "tensors": list(self.tensor_names(spec)), "rank": rank}

    def canonicalize(self, spec: ModelSpec) -> DecompositionConfig:
        """The equivalent γ in canonical form (a new object)."""
        form = self.canonical(spec)
        layers, tensors, rank = tuple(form["layers"]), tuple(form["tensors"]), form["rank"]
        if isinstance(rank, dict):
            return DecompositionConfig(layers=layers, tensors=tensors, rank=None, ranks=rank)
        if not layers or rank is None:
            return DecompositionConfig()
        return DecompositionConfig(layers=layers, tensors=tensors, rank=rank)

    def hash(self, spec: ModelSpec) -> str:
        """A stable 16-hex-digit hash: the same γ written two ways hashes the same."""
        payload = json.dumps(self.canonical(spec), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def describe(self, spec: ModelSpec) -> str:
        """A short human label, e.g. ``L[2,17,29] all r=1``."""
        form = self.canonical(spec)
        if not form["layers"]:
            return "original"
        tensors = form["tensors"]
        tensor_label = "all" if list(tensors) == list(spec.tensor_names) else ",".join(tensors)
        rank = form["rank"]
        rank_label = f"r={rank}" if isinstance(rank, int) else "r=mixed"
        layers = ",".join(str(x) for x in form["layers"])
        return f"L[{layers}] {tensor_label} {rank_label}"


def parse_int_list(text: str, what: str = "layers") -> tuple[int, ...]:
    """Parse ``"2,17,29"`` or ranges ``"2-5,9"``; empty text gives ``()``."""
    text = text.strip()
    if not text or text.lower() == "none":
        return ()
    values: list[int] = []
    for raw_part in text.split(","):
        part = raw_part.strip()
        try:
            if "-" in part[1:]:
                start, end = part.split("-", 1) if not part.startswith("-") else ("", "")
                low, high = int(start), int(end)
                if high < low:
                    raise ValueError
                values.extend(range(low, high + 1))
            else:
                values.append(int(part))
        except ValueError:
            raise InvalidConfigError(
                f"malformed {what} list {text!r}: expected comma-separated integers or "
                f"ranges like 2,17,29 or 2-5,9"
            ) from None
    return tuple(values)


def parse_tensor_list(text: str) -> tuple[str, ...] | Literal["all"]:
    """Parse ``"all"`` or ``"q,k,v"``."""
    text = text.strip()
    if text.lower() == "all":
        return "all"
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise InvalidConfigError("empty tensor list: give names like q,k,v or all")
    return names
