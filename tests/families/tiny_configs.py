"""Tiny configs, one per supported decoder family, for the conformance suite.

Two layers of width 32 keep every model at a few million parameters (almost all of it
the 49,152-token embedding, which SmolLM2's tokenizer needs so lm-eval can run them).
Each config keeps what makes its family different: fused qkv / gate_up (phi3, gpt_neox,
gpt2), Conv1D (gpt2), biases (opt, starcoder2, qwen2_moe), extra norms (gemma2/3, olmo2),
grouped-query attention, and experts with a router (mixtral, qwen2_moe, qwen3_moe).
"""

from __future__ import annotations

from typing import Any

VOCAB = 49152  # SmolLM2's tokenizer
_IDS = {"vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
_DECODER = _IDS | {
    "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 1024,
}
_MOE = {"num_experts_per_tok": 2, "moe_intermediate_size": 24, "decoder_sparse_step": 1}

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "gemma": {"model_type": "gemma"} | _DECODER,
    "gemma2": {"model_type": "gemma2"} | _DECODER | {"sliding_window": 16},
    "gemma3": {"model_type": "gemma3_text"} | _DECODER | {"sliding_window": 16},
    "phi3": {"model_type": "phi3"} | _DECODER,
    "olmo2": {"model_type": "olmo2"} | _DECODER,
    "granite": {"model_type": "granite"} | _DECODER,
    "starcoder2": {"model_type": "starcoder2"} | _DECODER,
    "gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 1024}
    | {k: v for k, v in _IDS.items() if k != "pad_token_id"},
    "gpt_neox": {"model_type": "gpt_neox", "hidden_size": 32, "intermediate_size": 48,
                 "num_hidden_layers": 2, "num_attention_heads": 4,
                 "max_position_embeddings": 1024} | _IDS,
    "opt": {"model_type": "opt", "hidden_size": 32, "ffn_dim": 48, "num_hidden_layers": 2,
            "num_attention_heads": 4, "word_embed_proj_dim": 32,
            "max_position_embeddings": 1024} | _IDS,
    "mixtral": {"model_type": "mixtral"} | _DECODER | {"num_local_experts": 4,
                                                         "num_experts_per_tok": 2},
    "qwen2_moe": {"model_type": "qwen2_moe"} | _DECODER | _MOE | {
        "num_experts": 4, "shared_expert_intermediate_size": 40},
    "qwen3_moe": {"model_type": "qwen3_moe"} | _DECODER | _MOE | {"num_experts": 4},
}

# The families the end-to-end CLI checks (decompose, evaluate, a 2-trial study) run on:
# one per storage the adapters distinguish — Conv1D + fused qkv (gpt2), fused Linear
# (phi3), and 3-D experts beside a shared expert (qwen2_moe). The structural checks run
# on every family.
END_TO_END = ("gpt2", "phi3", "qwen2_moe")
