"""γ = (PR, DecompLayers, DecompTensors): one decomposition configuration (Def. 2–4).

Layer indices are 0-based everywhere (the paper's tables are 1-based: its layer 3 is
our layer 2).

One module because it is one thing: γ, its validation (Def. 2–4, Prop. 1), its canonical
form and hash, and the parsing of its CLI spellings.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, TypedDict

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from space.errors import InvalidConfigError
from space.spec import ModelSpec

__all__ = [
    "DecompositionConfig",
    "ResolvedPair",
    "KEEP_CONVENTION",
    "METHOD_NAMES",
    "TWO_FACTOR_METHODS",
    "rank_for_keep",
    "parse_int_list",
    "parse_tensor_list",
]

#: Every decomposition method γ may name (the engine registers their algorithms).
METHOD_NAMES = ("svd", "hooi", "asvd", "svd-llm", "feature", "activation")
#: Methods whose factors are two matrices (U_kΣ_k, V_kᵀ): a Tucker core would be the identity.
TWO_FACTOR_METHODS = frozenset({"asvd", "svd-llm", "feature"})
#: How a keep ratio becomes a rank; printed wherever a keep ratio is shown.
KEEP_CONVENTION = "kept-parameter ratio: rank = floor(keep*H*W/(H+W)), not a fraction of singular values"


def rank_for_keep(height: int, width: int, keep: float) -> int:
    """The rank at which two factors (H·r + r·W) keep ``keep`` of an H×W weight's parameters.

    The convention of SVD-LLM and ASVD: r = ⌊keep·H·W/(H+W)⌋, at least 1.
    """
    if not 0.0 < keep <= 1.0:
        raise InvalidConfigError(f"keep must be in (0, 1] (a {KEEP_CONVENTION}), got {keep}")
    return max(1, math.floor(keep * height * width / (height + width) + 1e-9))


class ResolvedPair(NamedTuple):
    """One decomposed (layer, tensor) with its pruned rank: an element (l, k, p) of PR."""

    layer: int
    tensor: str
    rank: int


def _pair_key(layer: int, tensor: str) -> str:
    return f"{layer}:{tensor}"


class _CanonicalCore(TypedDict):
    """γ's unique JSON form: sorted layers, tensors in spec order, one rank or a rank per pair."""

    layers: list[int]
    tensors: list[str]
    rank: int | dict[str, int] | None


class CanonicalForm(_CanonicalCore, total=False):
    """The keys below appear only when set, so every γ of the paper's space keeps its hash."""

    keep: float
    method: str
    methods: dict[str, str]
    two_factor: bool


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
    keep: float | None = None
    method: str | None = None
    methods: dict[str, str] | None = None
    two_factor: bool | None = None

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

    @field_validator("keep")
    @classmethod
    def _keep_range(cls, keep: float | None) -> float | None:
        if keep is not None and not 0.0 < keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1] (a {KEEP_CONVENTION}), got {keep}")
        return keep

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str | None) -> str | None:
        if method is not None and method not in METHOD_NAMES:
            raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHOD_NAMES)}")
        return method

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: dict[str, str] | None) -> dict[str, str] | None:
        for tensor, method in (methods or {}).items():
            if method not in METHOD_NAMES:
                raise ValueError(f"unknown method {method!r} for tensor {tensor!r}; "
                                 f"allowed: {', '.join(METHOD_NAMES)}")
        return methods or None

    @model_validator(mode="after")
    def _one_rank_form(self) -> DecompositionConfig:
        if self.keep is not None:
            if self.ranks is not None or self.rank not in (None, 1):
                raise ValueError("give either keep (a kept-parameter ratio) or a rank, not both")
            object.__setattr__(self, "rank", None)
        elif self.ranks is not None:
            if self.rank not in (None, 1) and self.rank is not None:
                raise ValueError("give either rank (one for all) or ranks (per pair), not both")
            object.__setattr__(self, "rank", None)
            for key, value in self.ranks.items():
                if value < 1:
                    raise ValueError(f"rank of {key} must be at least 1, got {value}")
        elif self.rank is None:
            raise ValueError("a rank or keep ratio is required (one for all, or ranks per layer:tensor)")
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

    def method_for(self, tensor: str, default: str = "svd", layer: int | None = None) -> str:
        """The method that decomposes ``tensor`` (of ``layer``): per pair, per tensor type, γ's, ``default``."""
        if self.methods and layer is not None and _pair_key(layer, tensor) in self.methods:
            return self.methods[_pair_key(layer, tensor)]
        if self.methods and tensor in self.methods:
            return self.methods[tensor]
        return self.method or default

    def is_two_factor(self, default_method: str = "svd") -> bool:
        """Whether factors are installed as two matrices (H·r + r·W parameters).

        Explicit ``two_factor`` wins; otherwise keep ratios and the data-aware methods use
        two factors (their Tucker core would be the identity), and svd/hooi ranks keep the
        paper's three (H·r + r² + r·W).
        """
        if self.two_factor is not None:
            return self.two_factor
        methods = {self.method or default_method, *(self.methods or {}).values()}
        return self.keep is not None or bool(methods & TWO_FACTOR_METHODS)

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
        decomposed = {_pair_key(layer, name) for layer, name in wanted}
        for key in self.methods or {}:
            if ":" not in key:
                spec.tensor(key)  # raises with the allowed names
            elif key not in decomposed:
                raise InvalidConfigError(f"a method is given for {key}, a (layer:tensor) pair γ does not decompose")
        pairs = []
        for layer, name in wanted:
            rank: int | None
            if self.keep is not None:
                shape = spec.tensor(name)
                rank = rank_for_keep(shape.out_features, shape.in_features, self.keep)
            elif self.ranks is not None:
                rank = self.ranks[_pair_key(layer, name)]
            else:
                rank = self.rank
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
        form: CanonicalForm = {"layers": list(self.layers),
                               "tensors": list(self.tensor_names(spec)), "rank": rank}
        # Added only when set, so every γ of the paper's space keeps its hash.
        if self.keep is not None:
            form["keep"] = self.keep
        names = form["tensors"]
        per_pair = {_pair_key(p.layer, p.tensor): self.method_for(p.tensor, "", p.layer) for p in pairs}
        by_tensor = {n: {per_pair[_pair_key(p.layer, n)] for p in pairs if p.tensor == n} for n in names}
        layer_free = all(len(found) == 1 for found in by_tensor.values())
        methods = {n: next(iter(found)) for n, found in by_tensor.items()}
        if any(per_pair.values()):
            distinct = set(per_pair.values())
            if len(distinct) == 1 and "" not in distinct:
                form["method"] = distinct.pop()
            elif layer_free:  # per tensor type: the form (and hash) every such γ always had
                form["methods"] = {n: m for n, m in methods.items() if m}
            else:
                form["methods"] = {k: m for k, m in per_pair.items() if m}
        used = set(per_pair.values()) - {""}
        automatic = self.keep is not None or bool(used & TWO_FACTOR_METHODS)
        two = self.two_factor if self.two_factor is not None else automatic
        if two or automatic:
            form["two_factor"] = two
        return form

    def canonicalize(self, spec: ModelSpec) -> DecompositionConfig:
        """The equivalent γ in canonical form (a new object)."""
        return DecompositionConfig.from_canonical(self.canonical(spec))

    @classmethod
    def from_canonical(cls, form: CanonicalForm | dict[str, object]) -> DecompositionConfig:
        """Rebuild γ from :meth:`canonical` output (e.g. read back from JSON)."""
        layers = tuple(int(x) for x in form.get("layers") or ())  # type: ignore[attr-defined]
        if not layers:
            return cls()
        data: dict[str, Any] = {"layers": layers, "tensors": tuple(form["tensors"]),  # type: ignore[arg-type]
                                "rank": None}
        data |= {key: form[key] for key in ("method", "methods", "two_factor") if key in form}
        rank: Any = form["rank"]
        if form.get("keep") is not None:
            data["keep"] = form["keep"]
        elif isinstance(rank, dict):
            data["ranks"] = {str(k): int(v) for k, v in rank.items()}
        else:
            data["rank"] = int(rank)
        return cls(**data)

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
        rank_label = f"r={rank}" if isinstance(rank, int) else _mixed_rank_label(rank or {}, form["layers"])
        if "keep" in form:
            rank_label = f"keep={form['keep']:g}"
        label = f"L[{_layer_runs(form['layers'])}] {tensor_label} {rank_label}"
        if "method" in form:
            label += f" {form['method']}"
        elif "methods" in form and not any(":" in key for key in form["methods"]):
            label += " " + ",".join(f"{t}:{m}" for t, m in form["methods"].items())
        elif "methods" in form:
            label += " " + _pair_methods_label(form["methods"])
        return label


def _pair_methods_label(methods: dict[str, str]) -> str:
    """Per-pair methods by layer: the most common, then each other one with its layers."""
    by_layer: dict[int, set[str]] = {}
    for key, method in methods.items():
        by_layer.setdefault(int(key.split(":")[0]), set()).add(method)
    labels = {layer: "+".join(sorted(found)) for layer, found in by_layer.items()}
    counts = {label: sum(1 for x in labels.values() if x == label) for label in set(labels.values())}
    common = max(sorted(counts), key=lambda label: counts[label])
    others = sorted(set(labels.values()) - {common})
    rest = [f"{m} on L[{_layer_runs(sorted(n for n, x in labels.items() if x == m))}]" for m in others]
    return ", ".join([*rest, f"{common} elsewhere"]) if rest else common


def _mixed_rank_label(ranks: dict[str, int], layers: Sequence[int]) -> str:
    """``r=lo..hi``; layers whose every tensor is at rank 1 named apart (the combined encoding's)."""
    ones = [layer for layer in layers
            if all(value == 1 for key, value in ranks.items() if key.split(":")[0] == str(layer))]
    others = [value for key, value in ranks.items() if int(key.split(":")[0]) not in ones]  # never empty: ranks differ
    spread = f"r={min(others)}..{max(others)}" if min(others) != max(others) else f"r={others[0]}"
    return f"r=1 on L[{_layer_runs(ones)}], {spread} elsewhere" if ones else spread


def _layer_runs(layers: Sequence[int]) -> str:
    """``2,17,29`` as is; runs of four or more consecutive layers as ``2-29`` (what ``--layers`` parses)."""
    parts: list[str] = []
    start = 0
    values = list(layers)
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[i - 1] + 1:
            run = values[start:i]
            parts += [f"{run[0]}-{run[-1]}"] if len(run) >= 4 else [str(x) for x in run]
            start = i
    return ",".join(parts)


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
    parts = tuple(p.strip() for p in text.split(","))
    if not any(parts):
        raise InvalidConfigError("empty tensor list: give names like q,k,v or all")
    if not all(parts):
        raise InvalidConfigError(f"malformed tensor list {text!r}: an empty name between commas; "
                                 f"give names like q,k,v or all")
    return parts
