"""Save a decomposed model as its factors, and load it back onto its base model.

A decomposed model is its base model plus a few small factors, so a directory holds
only those: ``factors.safetensors`` (U1, Γ, U2 of every decomposed tensor) and
``decomposed.json`` (γ, the method, the surgery report, and the base model's name,
fingerprint and dtype). The same directory is also a Hugging Face model with remote
code (:mod:`dse.export.hf`): ``AutoModelForCausalLM.from_pretrained(DIR,
trust_remote_code=True)`` and lm-eval's ``hf`` model load it without lowrank-dse.
Loading here reloads the base model through
:func:`dse.models.load_model`, checks that its fingerprint is the one the factors were
computed from, and installs the factors without decomposing anything.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from space.config import DecompositionConfig
from space.errors import DataError, InvalidConfigError, StorageError

if TYPE_CHECKING:
    from dse.cache import FactorCache
    from dse.decompose import TuckerFactors
    from dse.models import LoadedModel
    from dse.surgery import SurgeryReport

__all__ = ["BaseModelRef", "DecomposedManifest", "save_decomposed", "load_decomposed", "is_decomposed_dir",
           "read_manifest", "check_writable"]

MANIFEST = "decomposed.json"
FACTORS = "factors.safetensors"
FORMAT = "lowrank-dse/decomposed"
FORMAT_VERSION = 1


class BaseModelRef(BaseModel):
    """Which weights the factors belong to: reloadable by name, verified by fingerprint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    fingerprint: str
    dtype: str


class DecomposedManifest(BaseModel):
    """The contents of ``decomposed.json``."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    version: int = FORMAT_VERSION
    base: BaseModelRef
    gamma: dict[str, Any]
    gamma_hash: str
    method: str
    fold: bool
    report: dict[str, Any]

    def config(self) -> DecompositionConfig:
        """The saved γ."""
        from dse.surgery import gamma_from_canonical

        return gamma_from_canonical(self.gamma)


def is_decomposed_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a directory written by :func:`save_decomposed`."""
    return (Path(path).expanduser() / MANIFEST).is_file()


def _base_name(name: str) -> str:
    """A local model directory is stored as an absolute path, so it reloads from anywhere."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def check_writable(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir`` and prove it writable, so a bad --out fails before any work."""
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StorageError(f"cannot write the decomposed model to {str(out)!r}: {reason}") from None
    return out


def _factor_key(layer: int, tensor: str, part: str) -> str:
    return f"{layer}.{tensor}.{part}"


def save_decomposed(
    loaded: LoadedModel,
    report_or_gamma: SurgeryReport | DecompositionConfig,
    out_dir: str | os.PathLike[str],
    *,
    cache: FactorCache | None = None,
    method: str = "svd",
) -> Path:
    """Write the factors of a γ, γ itself and the base model reference to ``out_dir``.

    Args:
        loaded: the base model, either decomposed by this γ already or original.
        report_or_gamma: the report of the installed γ, or a γ. A γ not installed is
            applied for the save and undone afterwards (with ``cache`` and ``method``).
        out_dir: created if needed; existing files of an earlier save are replaced.
        cache: factor cache for a γ that has to be applied first.
        method: decomposition method for a γ that has to be applied first.

    Returns:
        The directory written.

    Raises:
        StorageError: ``out_dir`` cannot be written.
        InvalidConfigError: the report belongs to another model or γ than the installed one.
    """
    from dse import surgery

    gamma_form = report_or_gamma.canonical(loaded.spec) if isinstance(
        report_or_gamma, DecompositionConfig) else report_or_gamma.gamma
    if not gamma_form.get("layers"):
        raise InvalidConfigError("γ decomposes no layer: there is nothing to save beside the base model")
    out = check_writable(out_dir)
    installed = surgery.current(loaded)
    if isinstance(report_or_gamma, DecompositionConfig):
        wanted_hash = report_or_gamma.hash(loaded.spec)
        if installed is not None and installed.gamma_hash == wanted_hash:
            return _write(loaded, installed, out)
        if installed is not None:
            raise InvalidConfigError(
                f"{loaded.name} is decomposed by {installed.description}, not by "
                f"{report_or_gamma.describe(loaded.spec)}; undo it first"
            )
        with surgery.decomposed(loaded, report_or_gamma, cache=cache, method=method) as report:
            return _write(loaded, report, out)
    report = report_or_gamma
    if installed is None or installed.gamma_hash != report.gamma_hash \
            or report.fingerprint != loaded.fingerprint:
        raise InvalidConfigError(
            f"the report ({report.description} of {report.model}) is not the γ installed on "
            f"{loaded.name}; apply it first"
        )
    return _write(loaded, installed, out)


def _write(loaded: LoadedModel, report: SurgeryReport, out: Path) -> Path:
    from safetensors.torch import save_file

    from dse import surgery

    tensors = {}
    for (layer, tensor), factors in surgery.installed_factors(loaded).items():
        for part in ("u1", "core", "u2"):
            value = getattr(factors, part).detach().to("cpu").contiguous()
            tensors[_factor_key(layer, tensor, part)] = value
    manifest = DecomposedManifest(
        base=BaseModelRef(name=_base_name(loaded.name), fingerprint=loaded.fingerprint,
                          dtype=loaded.dtype),
        gamma=report.gamma,
        gamma_hash=report.gamma_hash,
        method=report.method,
        fold=report.fold,
        report=report.model_dump(mode="json"),
    )
    from dse.export.hf import export_hf, not_exportable

    # The Hugging Face files first (AutoModelForCausalLM + trust_remote_code, lm-eval's hf model).
    reason = not_exportable(loaded)
    if reason is None:
        export_hf(loaded, out)
    else:
        logging.getLogger("dse").warning("note: %s; %s holds lowrank-dse's own format only", reason, out)
    pid = os.getpid()
    try:
        tmp_factors = out / f"{FACTORS}.tmp{pid}"
        save_file(tensors, str(tmp_factors), metadata={"format": FORMAT, "gamma_hash": report.gamma_hash})
        tmp_manifest = out / f"{MANIFEST}.tmp{pid}"
        tmp_manifest.write_text(manifest.model_dump_json(indent=2) + "\n")
        # Factors first: a manifest is only ever next to the factors it describes.
        tmp_factors.replace(out / FACTORS)
        tmp_manifest.replace(out / MANIFEST)
    except OSError as exc:
        raise StorageError(f"cannot write the decomposed model to {str(out)!r}: "
                           f"{exc.strerror or type(exc).__name__}") from None
    return out


def read_manifest(directory: str | os.PathLike[str]) -> DecomposedManifest:
    """The manifest of a saved decomposed model.

    Raises:
        DataError: not a directory written by :func:`save_decomposed`, or a damaged one.
    """
    path = Path(directory).expanduser()
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise DataError(
            f"{str(path)!r} is not a decomposed model directory (no {MANIFEST}); "
            f"write one with `dse decompose MODEL ... --out DIR`"
        )
    try:
        manifest = DecomposedManifest.model_validate_json(manifest_file.read_text())
    except (OSError, ValidationError, ValueError) as exc:
        raise DataError(f"{str(manifest_file)!r} is damaged: {str(exc).splitlines()[0]}") from None
    if manifest.format != FORMAT or manifest.version > FORMAT_VERSION:
        raise DataError(
            f"{str(manifest_file)!r} has format {manifest.format} v{manifest.version}; this "
            f"version of lowrank-dse reads {FORMAT} up to v{FORMAT_VERSION}"
        )
    return manifest


def load_decomposed(directory: str | os.PathLike[str], *, device: str = "cpu") -> LoadedModel:
    """Load the base model and install the saved factors (no decomposition happens).

    Args:
        directory: a directory written by :func:`save_decomposed` (``dse decompose --out``).
        device: ``cpu`` or ``cuda``; the dtype is the one the factors were saved with.

    Returns:
        The base model with the saved γ installed; :func:`dse.surgery.undo` gives back the
        original model.

    Raises:
        DataError: not such a directory, damaged files, or the base model's weights are
            not the ones the factors were computed from (fingerprint mismatch).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from dse.decompose import TuckerFactors
    from dse.models import load_model
    from dse.surgery import gamma_from_canonical, install_factors

    path = Path(directory).expanduser()
    manifest = read_manifest(path)
    try:
        tensors = load_file(str(path / FACTORS), device=device)
    except (OSError, SafetensorError) as exc:
        raise DataError(f"factors in {str(path / FACTORS)!r} are missing or damaged: {exc}") from None
    loaded = load_model(manifest.base.name, device=device, dtype=manifest.base.dtype)
    if loaded.fingerprint != manifest.base.fingerprint:
        raise DataError(
            f"the factors in {str(path)!r} were computed from {manifest.base.name} with fingerprint "
            f"{manifest.base.fingerprint}, but the model loaded now has {loaded.fingerprint}; "
            f"decompose it again"
        )
    gamma = gamma_from_canonical(manifest.gamma)
    factors: dict[tuple[int, str], TuckerFactors] = {}
    for pair in gamma.validate_for(loaded.spec):
        try:
            parts = {p: tensors[_factor_key(pair.layer, pair.tensor, p)] for p in ("u1", "core", "u2")}
        except KeyError as exc:
            raise DataError(f"{str(path / FACTORS)!r} lacks factor {exc.args[0]!r}") from None
        factors[(pair.layer, pair.tensor)] = TuckerFactors(**parts)
    rel_errors = {
        (int(t["layer"]), str(t["tensor"])): float(t["rel_error"])
        for t in manifest.report.get("per_tensor", [])
    }
    install_factors(loaded, gamma, factors, method=manifest.method, fold=manifest.fold,
                    rel_errors=rel_errors)
    return loaded
