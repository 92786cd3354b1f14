"""Export a decomposed model in formats other tools load (Hugging Face with remote code)."""

from dse.export.hf import HF_MODELING_FILE, export_hf, is_hf_export, refuse_plain_save

__all__ = ["HF_MODELING_FILE", "export_hf", "is_hf_export", "refuse_plain_save"]
