"""Write a decomposed model as a Hugging Face directory that loads with its factorized layers.

``transformers`` cannot know :class:`dse.layers.FactorizedLinear`: a plain
``save_pretrained`` of a decomposed model stores ``u1``/``core``/``u2`` under a
config that says "Llama", and reloading it silently initialises the missing dense
weights at random. The directory written here ships the modeling code, as remote-code
models on the Hub do: ``modeling_lowrank_dse.py`` (a copy of
:mod:`dse.export.modeling_lowrank_dse` naming the family's class) subclasses the
family's model and swaps the listed linears for factorized ones on construction, and
``config.json`` maps ``AutoModelForCausalLM`` to it (``auto_map``). So
``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`` and
``lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True`` load exactly
the model lowrank-dse measured, and the parameter count on disk is the decomposed one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from space.errors import DseError, InvalidConfigError, StorageError

if TYPE_CHECKING:
    from dse.models import LoadedModel

__all__ = ["HF_MODELING_FILE", "CONFIG_KEY", "export_hf", "is_hf_export", "not_exportable", "refuse_plain_save"]

HF_MODELING_FILE = "modeling_lowrank_dse.py"
CONFIG_KEY = "lowrank_dse"
_CLASS = "LowRankDseForCausalLM"
_CONFIG_CLASS = "LowRankDseConfig"
_MODEL_TYPE = "lowrank_dse"
_FORMAT_VERSION = 1


def is_hf_export(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a config.json written by :func:`export_hf`."""
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        return CONFIG_KEY in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


def _modeling_source(base_class: str, config_class: str) -> str:
    source = Path(__file__).with_name(HF_MODELING_FILE).read_text()
    for name, value in (("BASE_CLASS", base_class), ("BASE_CONFIG_CLASS", config_class)):
        source, count = re.subn(rf'^{name} = "[A-Za-z0-9_]+"', f'{name} = "{value}"', source, count=1, flags=re.M)
        if count != 1:
            raise RuntimeError(f"{HF_MODELING_FILE} lacks its {name} line")
    return source


def not_exportable(loaded: LoadedModel) -> str | None:
    """Why the installed γ cannot be written as a Hugging Face model, or None when it can.

    The shipped modeling file knows :class:`dse.layers.FactorizedLinear` (three factors,
    or two when folded); a method that installs other modules (``activation``) is refused.
    """
    from dse.layers import FactorizedLinear

    for path in loaded.originals:
        module = loaded.model.get_submodule(path)
        if not isinstance(module, FactorizedLinear):
            return (f"{type(module).__name__} layers cannot be written as a Hugging Face model yet "
                    f"(only factorized linears can)")
    return None


def export_hf(loaded: LoadedModel, out_dir: str | os.PathLike[str]) -> Path:
    """Write the decomposed model installed on ``loaded`` as a remote-code HF directory.

    Writes ``config.json`` (the family's config plus ``auto_map`` and ``lowrank_dse``:
    the factorized layers, γ, base model, parameter counts), the weights with the
    factors (``model.safetensors``), the tokenizer, the generation config and
    ``modeling_lowrank_dse.py``.

    Raises:
        InvalidConfigError: no γ is installed on ``loaded``.
        StorageError: ``out_dir`` cannot be written.
    """
    import transformers

    from dse import surgery
    from dse.layers import FactorizedLinear

    report = surgery.current(loaded)
    if report is None:
        raise InvalidConfigError(f"{loaded.name} is not decomposed: there is nothing to export beside it")
    reason = not_exportable(loaded)
    if reason is not None:
        raise InvalidConfigError(f"method {report.method!r}: {reason}")
    model = loaded.model
    base_class = type(model).__name__
    config_class = type(model.config).__name__
    if not hasattr(transformers, base_class) or not hasattr(transformers, config_class):
        raise InvalidConfigError(f"{base_class} is not a transformers class; it cannot be exported for "
                                 f"AutoModelForCausalLM")
    factorized: dict[str, dict[str, Any]] = {}
    for path, module in model.named_modules():
        if isinstance(module, FactorizedLinear):
            factorized[path] = {"in_features": module.in_features, "out_features": module.out_features,
                                "rank": module.rank, "bias": module.bias is not None, "fold": module.folded}
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        # The class's own save_pretrained: the instance's may be the refusal below.
        type(model).save_pretrained(model, str(out))  # type: ignore[attr-defined]
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(str(out))
        config_path = out / "config.json"
        config = json.loads(config_path.read_text())
        module = HF_MODELING_FILE[:-3]
        base_model_type = config.get("model_type")
        config["architectures"] = [_CLASS]
        config["model_type"] = _MODEL_TYPE
        config["auto_map"] = {"AutoConfig": f"{module}.{_CONFIG_CLASS}",
                              "AutoModelForCausalLM": f"{module}.{_CLASS}"}
        config[CONFIG_KEY] = {
            "format_version": _FORMAT_VERSION,
            "base_class": base_class,
            "base_config_class": config_class,
            "base_model_type": base_model_type,
            "base_model": loaded.name,
            "base_fingerprint": loaded.fingerprint,
            "gamma": report.gamma,
            "gamma_label": report.description,
            "method": report.method,
            "params_before": report.params_before,
            "params_after": report.params_after,
            "param_reduction_pct": report.param_reduction_pct,
            "factorized": factorized,
        }
        tmp = config_path.with_name(f"config.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tmp.replace(config_path)
        (out / HF_MODELING_FILE).write_text(_modeling_source(base_class, config_class))
    except OSError as exc:
        raise StorageError(f"cannot write the Hugging Face model to {str(out)!r}: "
                           f"{exc.strerror or type(exc).__name__}") from None
    return out


def refuse_plain_save(model: Any) -> None:
    """Make ``model.save_pretrained`` (while decomposed) refuse with one line instead of a lossy save.

    A plain save would reload with the factorized weights missing and randomly initialised.
    """

    def save_pretrained(*args: Any, **kwargs: Any) -> None:
        raise DseError(
            "this model is decomposed: a plain save_pretrained would reload with random weights in place "
            "of the factorized layers; use dse.saving.save_decomposed(loaded, report, DIR) or "
            "`dse decompose ... --out DIR`, which write a directory that "
            "AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True) loads"
        )

    model.save_pretrained = save_pretrained


def allow_plain_save(model: Any) -> None:
    """Undo :func:`refuse_plain_save` (the original model saves as usual again)."""
    if "save_pretrained" in vars(model):
        del model.save_pretrained
