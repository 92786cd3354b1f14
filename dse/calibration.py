"""Calibration statistics of every decomposable linear's input, from one hooked pass.

The data-aware methods (``asvd``, ``svd-llm``, ``feature``) need, per linear, XᵀX
(float64), mean |x| and the output covariance over calibration inputs X. One forward
pass with pre-hooks on every decomposable ``nn.Linear`` collects them; linears that
read the very same input tensor (q, k, v; gate, up) share one statistic, recognized by
tensor identity during the pass. The output covariance YᵀY = W XᵀX Wᵀ (+ bias terms)
follows exactly from these and is computed where needed (:mod:`dse.methods.feature`).

The data is the WikiText-2 *validation* split by default (``<data dir>/wikitext2/
valid.txt``), never the test split that perplexity is measured on: ``sequences``
disjoint windows of ``length`` tokens, chosen with ``seed``. The pass runs once per
(model fingerprint, settings) and is stored on disk (:mod:`dse.calibration_store`).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from space.errors import CalibrationError

if TYPE_CHECKING:
    import torch

    from dse.models import LoadedModel

__all__ = [
    "CalibrationSettings",
    "InputStats",
    "Calibration",
    "calibration_tokens",
    "collect",
    "STATS_VERSION",
]

STATS_VERSION = 1
_TEST_SPLIT_NAMES = ("test.txt", "wiki.test.raw", "wiki.test.tokens")


class CalibrationSettings(BaseModel):
    """The ``[calibration]`` section of a study, and the CLI's ``--calibration-*`` options."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A text file, or "task:NAME" (a task's held-out split, dse/calibration_tasks.py);
    # default: <data dir>/wikitext2/valid.txt.
    source: str | None = None
    sequences: int = Field(128, ge=1, le=100_000)  # 128 × 512: svd-llm within 3× at keep 0.9 (performance.md)
    length: int = Field(512, ge=8, le=32_768)
    seed: int = 0
    asvd_alpha: float = Field(0.5, ge=0.0, le=4.0)
    svd_fallback: bool = False  # svd-llm: plain svd for a tensor whose Cholesky fails

    @field_validator("source")
    @classmethod
    def _not_test_split(cls, source: str | None) -> str | None:
        if source is not None and Path(source).name in _TEST_SPLIT_NAMES:
            raise ValueError(f"calibration source {source} is a test split; calibrate on the "
                             f"validation split (wikitext2/valid.txt) or other held-out text")
        return source

    def source_path(self) -> Path:
        """The calibration text file (checked to exist and be non-empty)."""
        from space.env import cache_dir, resolve_data_dir

        if self.source is not None and self.source.startswith("task:"):
            from dse.calibration_tasks import task_calibration_file

            path = task_calibration_file(self.source, resolve_data_dir(), cache_dir())
        elif self.source is not None:
            path = Path(self.source).expanduser()
        else:
            data = resolve_data_dir()
            if data is None:
                raise CalibrationError(
                    "no calibration data: set [calibration] source (or --calibration-source) "
                    "to a text file, or DSE_DATA_DIR to a directory with wikitext2/valid.txt"
                )
            path = data / "wikitext2" / "valid.txt"
        if not path.is_file():
            raise CalibrationError(f"calibration file {path} does not exist; give a text file "
                                   f"(default: <data dir>/wikitext2/valid.txt)")
        return path

    def stats_key(self, fingerprint: str) -> str:
        """16 hex digits naming the statistics: model, data file content, windows, seed."""
        digest = hashlib.sha256(self.source_path().read_bytes()).hexdigest()
        text = f"v{STATS_VERSION}|{fingerprint}|{digest}|{self.sequences}|{self.length}|{self.seed}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class InputStats:
    """Statistics of one input over the calibration tokens (float64, on the CPU)."""

    gram: torch.Tensor  # W×W, XᵀX
    abs_mean: torch.Tensor  # W, mean |x|
    total: torch.Tensor  # W, Σx (for the bias terms of the output covariance)
    tokens: int


@dataclass
class Calibration:
    """Input statistics per (layer, tensor); tensors reading one input share one object."""

    key: str
    fingerprint: str
    tokens: int
    seconds: float
    groups: dict[tuple[int, str], tuple[int, str]]  # (layer, tensor) -> the pair holding it
    loader: object = None  # a callable (layer, tensor) -> InputStats for lazily read files
    settings: CalibrationSettings | None = None  # method options (ASVD alpha, svd fallback)
    _stats: dict[tuple[int, str], InputStats] = field(default_factory=dict)

    def stats(self, layer: int, tensor: str) -> InputStats:
        """The statistics of the input of ``tensor`` in ``layer``."""
        pair = (layer, tensor)
        if pair not in self.groups:
            raise CalibrationError(f"no calibration statistics for layer {layer} tensor "
                                   f"{tensor!r}; the calibration pass did not reach it")
        leader = self.groups[pair]
        if leader not in self._stats:
            if not callable(self.loader):
                raise CalibrationError(f"calibration statistics of {leader} are missing")
            self._stats[leader] = self.loader(*leader)
        return self._stats[leader]

    @property
    def shared(self) -> int:
        """How many distinct statistics serve the hooked linears."""
        return len(set(self.groups.values()))


def calibration_tokens(tokenizer: object, settings: CalibrationSettings) -> torch.Tensor:
    """``sequences`` disjoint windows of ``length`` tokens (sequences × length, int64).

    Raises:
        CalibrationError: the file is missing, or too short for that many windows.
    """
    import torch

    path = settings.source_path()
    text = path.read_text(encoding="utf-8", errors="replace")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]  # type: ignore[operator]
    windows = int(ids.numel()) // settings.length
    if windows < settings.sequences:
        raise CalibrationError(
            f"calibration file {path} is too short: {ids.numel()} tokens give {windows} windows "
            f"of {settings.length}, {settings.sequences} are asked; lower sequences/length or "
            f"give a longer file"
        )
    generator = torch.Generator().manual_seed(settings.seed)
    chosen = torch.randperm(windows, generator=generator)[: settings.sequences].sort().values
    starts = chosen * settings.length
    return torch.stack([ids[s: s + settings.length] for s in starts.tolist()]).long()


def collect(loaded: LoadedModel, settings: CalibrationSettings, key: str, *,
            progress: bool = True) -> Calibration:
    """Run the hooked pass over the calibration windows and return the statistics.

    Raises:
        CalibrationError: a γ is installed, a decomposable module is not an ``nn.Linear``
            (cannot be hooked), or the data is missing or too short.
    """
    import torch

    from dse.surgery import decomposable_paths
    from space.progress import progress_bar as tqdm

    if loaded.originals:
        raise CalibrationError("calibrate the original model: undo the installed γ first")
    paths = decomposable_paths(loaded)
    modules = {}
    for pair, path in paths.items():
        module = loaded.model.get_submodule(path)
        if not isinstance(module, torch.nn.Linear):
            raise CalibrationError(
                f"{loaded.name}: {path} is a {type(module).__name__}, not an nn.Linear; its "
                f"inputs cannot be hooked for calibration (use method svd or hooi)"
            )
        modules[pair] = module
    batch = calibration_tokens(loaded.tokenizer, settings)
    groups: dict[tuple[int, str], tuple[int, str]] = {}
    stats: dict[tuple[int, str], InputStats] = {}
    alive: list[tuple[torch.Tensor, tuple[int, str]]] = []

    def hook_for(pair: tuple[int, str]) -> Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            for seen, leader in alive:  # the same tensor object: share its statistic
                if seen is x:
                    groups.setdefault(pair, leader)
                    return
            alive.append((x, pair))
            groups.setdefault(pair, pair)
            rows = x.detach().reshape(-1, x.shape[-1]).double().cpu()
            entry = stats.get(pair)
            if entry is None:
                width = rows.shape[1]
                entry = stats[pair] = InputStats(
                    torch.zeros(width, width, dtype=torch.float64),
                    torch.zeros(width, dtype=torch.float64),
                    torch.zeros(width, dtype=torch.float64), 0)
            entry.gram.addmm_(rows.T, rows)
            entry.abs_mean.add_(rows.abs().sum(0))  # a sum until the pass ends
            entry.total.add_(rows.sum(0))
            entry.tokens += int(rows.shape[0])
        return hook

    handles = [m.register_forward_pre_hook(hook_for(p)) for p, m in modules.items()]
    start = time.perf_counter()
    model = loaded.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for row in tqdm(batch, desc="calibration", unit="seq", disable=not progress,
                            file=sys.stderr):
                alive.clear()
                model(input_ids=row[None].to(loaded.device), use_cache=False)
    finally:
        alive.clear()
        for handle in handles:
            handle.remove()
        model.train(was_training)
    for entry in stats.values():
        entry.abs_mean.div_(max(entry.tokens, 1))
    seconds = time.perf_counter() - start
    missing = [p for p in modules if p not in groups]
    if missing:
        raise CalibrationError(f"{loaded.name}: the calibration pass never reached "
                               f"{len(missing)} linears (e.g. layer {missing[0][0]} "
                               f"{missing[0][1]!r}); they cannot be calibrated")
    calibration = Calibration(key=key, fingerprint=loaded.fingerprint,
                              tokens=int(batch.numel()), seconds=seconds, groups=groups,
                              settings=settings)
    calibration._stats.update(stats)
    if progress:
        print(f"calibration: {batch.numel()} tokens ({settings.sequences} × {settings.length} "
              f"from {settings.source_path().name}) in {seconds:.1f} s; "
              f"{calibration.shared} statistics for {len(groups)} linears", file=sys.stderr)
    return calibration
