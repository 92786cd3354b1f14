"""The family adapters the engine knows, and the lookup from a config's ``model_type``.

Fused weights (Phi-3's ``qkv_proj`` and ``gate_up_proj``, GPT-2's ``c_attn``, GPT-NeoX's
``query_key_value``) are decomposable tensors of their own (``qkv``, ``gate_up``), not
split into views: the model runs them as one matmul, so one factor chain replaces one
matmul and the measured latency is the real one; a split would run three chains and a
concatenation where the dense model runs one product (and GPT-NeoX interleaves q, k, v
per head, so its views would be strided). The counts stay exact: a fused weight is one
H×W matrix with rank bound min(H, W). Mixture-of-experts weights are addressed per type
across all experts of a layer (``down`` is every expert's down projection, each expert
factored on its own at the same rank); routers are never decomposed.
Embeddings and LM heads (tied or not) are outside the blocks and never decomposed.
"""

from __future__ import annotations

from space.errors import InvalidConfigError
from space.family import Family
from space.registry import Registry

__all__ = ["Family", "FAMILIES", "family_for_model_type", "families_table"]

_CAUSAL = "AutoModelForCausalLM"
_BLOCKS = ("model.layers", "layers", "model.model.layers")
_LLAMA_TENSORS = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}
_ATTENTION = {name: _LLAMA_TENSORS[name] for name in ("q", "k", "v", "o")}
_EXPERTS = {"gate_up": "mlp.experts.gate_up_proj", "down": "mlp.experts.down_proj"}
_ROUTER_NOTE = "the router: it picks the experts, and a low-rank router changes which run"


def _llama_like(name: str, model_type: str) -> Family:
    return Family(name=name, model_types=(model_type,), tensors=dict(_LLAMA_TENSORS),
                  layer_containers=_BLOCKS, auto_class=_CAUSAL)


def _moe(name: str, extra: dict[str, str], excluded: dict[str, str]) -> Family:
    return Family(
        name=name, model_types=(name,), tensors=_ATTENTION | _EXPERTS | extra,
        layer_containers=_BLOCKS, auto_class=_CAUSAL,
        fused={"gate_up": ("gate", "up")}, routers=("mlp.gate",),
        top_k_field="num_experts_per_tok", excluded={"mlp.gate": _ROUTER_NOTE} | excluded,
    )


_ALL: tuple[Family, ...] = (
    Family(name="llama", model_types=("llama", "mistral", "qwen2", "qwen3", "smollm3"),
           tensors=dict(_LLAMA_TENSORS), layer_containers=_BLOCKS, auto_class=_CAUSAL),
    Family(
        name="bert",
        model_types=("bert", "roberta"),
        tensors={
            "q": "attention.self.query",
            "k": "attention.self.key",
            "v": "attention.self.value",
            "attn_out": "attention.output.dense",
            "intermediate": "intermediate.dense",
            "output": "output.dense",
        },
        layer_containers=("encoder.layer", "bert.encoder.layer", "roberta.encoder.layer"),
        auto_class="AutoModel",
    ),
    _llama_like("gemma", "gemma"),
    _llama_like("gemma2", "gemma2"),
    _llama_like("gemma3", "gemma3_text"),
    _llama_like("olmo2", "olmo2"),
    _llama_like("granite", "granite"),
    Family(
        name="phi3", model_types=("phi3",),
        tensors={"qkv": "self_attn.qkv_proj", "o": "self_attn.o_proj",
                 "gate_up": "mlp.gate_up_proj", "down": "mlp.down_proj"},
        layer_containers=_BLOCKS, auto_class=_CAUSAL,
        fused={"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")},
    ),
    Family(
        name="gpt2", model_types=("gpt2",),
        tensors={"qkv": "attn.c_attn", "o": "attn.c_proj", "up": "mlp.c_fc", "down": "mlp.c_proj"},
        layer_containers=("transformer.h", "h"), auto_class=_CAUSAL,
        fused={"qkv": ("q", "k", "v")},
    ),
    Family(
        name="gpt_neox", model_types=("gpt_neox",),
        tensors={"qkv": "attention.query_key_value", "o": "attention.dense",
                 "up": "mlp.dense_h_to_4h", "down": "mlp.dense_4h_to_h"},
        layer_containers=("gpt_neox.layers", "layers"), auto_class=_CAUSAL,
        fused={"qkv": ("q", "k", "v")},
    ),
    Family(
        name="opt", model_types=("opt",),
        tensors={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                 "o": "self_attn.out_proj", "up": "fc1", "down": "fc2"},
        layer_containers=("model.decoder.layers", "decoder.layers"), auto_class=_CAUSAL,
    ),
    Family(
        name="starcoder2", model_types=("starcoder2",),
        tensors=_ATTENTION | {"up": "mlp.c_fc", "down": "mlp.c_proj"},
        layer_containers=_BLOCKS, auto_class=_CAUSAL,
    ),
    _moe("mixtral", {}, {}),
    _moe(
        "qwen2_moe",
        {"shared_gate": "mlp.shared_expert.gate_proj", "shared_up": "mlp.shared_expert.up_proj",
         "shared_down": "mlp.shared_expert.down_proj"},
        {"mlp.shared_expert_gate": "the shared expert's 1-row gate (a router; rank 1 already)"},
    ),
    _moe("qwen3_moe", {}, {}),
)

FAMILIES: Registry[Family] = Registry("model family")
for _family in _ALL:
    FAMILIES.register(_family.name, _family)

# The historical module-level names.
LLAMA = FAMILIES.get("llama")
BERT = FAMILIES.get("bert")


def supported_model_types() -> list[str]:
    """Every ``model_type`` some adapter handles, sorted."""
    return sorted(t for n in FAMILIES for t in FAMILIES.get(n).model_types)


def family_for_model_type(model_type: str) -> Family:
    """The family whose adapter handles configs of ``model_type``.

    Raises:
        InvalidConfigError: no adapter handles it; the message lists the supported types.
    """
    for name in FAMILIES:
        family = FAMILIES.get(name)
        if model_type in family.model_types:
            return family
    raise InvalidConfigError(
        f"model type {model_type!r} has no decomposition adapter; supported: "
        f"{', '.join(supported_model_types())}"
    )


def families_table() -> list[dict[str, object]]:
    """One row per family: model types, tensor names, fused weights, routers left out."""
    rows: list[dict[str, object]] = []
    for name in FAMILIES:
        family = FAMILIES.get(name)
        rows.append({
            "family": family.name,
            "model_types": list(family.model_types),
            "tensors": list(family.tensors),
            "fused": {k: list(v) for k, v in family.fused.items()},
            "experts": [k for k, path in family.tensors.items() if ".experts." in f".{path}"],
            "excluded": dict(family.excluded),
        })
    return rows
