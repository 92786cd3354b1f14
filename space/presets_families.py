"""Architecture-only presets of one published model per supported family (no weights).

The fields are the published ``config.json`` values of each model (written from the
model cards' configs, nothing downloaded); fields left out take the transformers
defaults of the family, which are those models' values. They give the design space of a
real configuration of every family (``dse space show gpt2``, ``dse space size
mixtral-8x7b``), counted on the meta device.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FAMILY_PRESETS"]

# name -> (description, config fields)
FAMILY_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "gemma-2b": ("Gemma-2B (architecture only)", {
        "model_type": "gemma", "hidden_size": 2048, "intermediate_size": 16384,
        "num_hidden_layers": 18, "num_attention_heads": 8, "num_key_value_heads": 1,
        "head_dim": 256, "vocab_size": 256000, "max_position_embeddings": 8192}),
    "gemma2-2b": ("Gemma-2-2B (architecture only)", {
        "model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216,
        "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 256, "vocab_size": 256000, "max_position_embeddings": 8192,
        "sliding_window": 4096, "query_pre_attn_scalar": 256}),
    "gemma3-1b": ("Gemma-3-1B, text (architecture only)", {
        "model_type": "gemma3_text", "hidden_size": 1152, "intermediate_size": 6912,
        "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1,
        "head_dim": 256, "vocab_size": 262144, "max_position_embeddings": 32768,
        "sliding_window": 512, "query_pre_attn_scalar": 256}),
    "phi3-mini": ("Phi-3-mini-4k (architecture only)", {
        "model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "vocab_size": 32064, "max_position_embeddings": 4096, "pad_token_id": 32000}),
    "phi4": ("Phi-4, 14B (architecture only; its model_type is phi3)", {
        "model_type": "phi3", "hidden_size": 5120, "intermediate_size": 17920,
        "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 10,
        "vocab_size": 100352, "max_position_embeddings": 16384, "pad_token_id": 100349}),
    "gpt2": ("GPT-2 small, 124M (architecture only)", {
        "model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257,
        "n_positions": 1024}),
    "pythia-160m": ("Pythia-160M, GPT-NeoX (architecture only)", {
        "model_type": "gpt_neox", "hidden_size": 768, "intermediate_size": 3072,
        "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 50304,
        "max_position_embeddings": 2048, "rotary_pct": 0.25, "tie_word_embeddings": False}),
    "opt-125m": ("OPT-125M (architecture only)", {
        "model_type": "opt", "hidden_size": 768, "ffn_dim": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12, "vocab_size": 50272, "max_position_embeddings": 2048,
        "word_embed_proj_dim": 768}),
    "olmo2-7b": ("OLMo-2-1124-7B (architecture only)", {
        "model_type": "olmo2", "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "vocab_size": 100352, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False}),
    "granite3-2b": ("Granite-3.0-2B (architecture only)", {
        "model_type": "granite", "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 49155, "max_position_embeddings": 4096, "tie_word_embeddings": True}),
    "starcoder2-3b": ("StarCoder2-3B (architecture only)", {
        "model_type": "starcoder2", "hidden_size": 3072, "intermediate_size": 12288,
        "num_hidden_layers": 30, "num_attention_heads": 24, "num_key_value_heads": 2,
        "vocab_size": 49152, "max_position_embeddings": 16384, "sliding_window": 4096,
        "use_bias": True, "tie_word_embeddings": True}),
    "mixtral-8x7b": ("Mixtral-8x7B (architecture only; 8 experts, 2 per token)", {
        "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 32000, "max_position_embeddings": 32768, "num_local_experts": 8,
        "num_experts_per_tok": 2, "tie_word_embeddings": False}),
    "qwen1.5-moe-a2.7b": ("Qwen1.5-MoE-A2.7B (architecture only; 60 experts, 4 per token)", {
        "model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632,
        "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
        "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
        "num_experts": 60, "num_experts_per_tok": 4, "decoder_sparse_step": 1,
        "vocab_size": 151936, "max_position_embeddings": 8192, "tie_word_embeddings": False}),
    "qwen3-30b-a3b": ("Qwen3-30B-A3B (architecture only; 128 experts, 8 per token)", {
        "model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
        "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
        "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
        "decoder_sparse_step": 1, "vocab_size": 151936, "max_position_embeddings": 40960,
        "tie_word_embeddings": False}),
}
