"""What a study is: a pydantic model, loadable from TOML and overridable from CLI flags.

A definition says which model to compress, how a trial is measured (tasks, limit, the
latency/energy workload), what is optimized under which accuracy-drop tolerance τ, which
heuristic rules prune the space and how γ is encoded for the sampler. The *budget* of a
run (``n_trials``, ``timeout``, ``workers``), where it is stored (``storage``) and the
liveness settings (``heartbeat_interval``, ``grace_period``) are not part of what a study
*is*: resuming with another budget or from another machine is allowed, while a changed
definition is refused (see :func:`definition_diff`).

Every section refuses unknown keys and wrong types (``extra="forbid"``), so a typo in a
study file is one error line naming the key, never a silently ignored setting.

One module because the definition's sections and their validators are one schema
(docs/study.md documents it field by field).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dse.calibration import CalibrationSettings
from objectives.workload import Workload
from space.errors import DataError, InvalidConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "EvaluationSection",
    "SearchSection",
    "StudyDefinition",
    "BUDGET_FIELDS",
    "definition_diff",
    "load_definition",
    "default_study_name",
]

# Fields that may differ between runs of one study without changing what it measures.
BUDGET_FIELDS: frozenset[str] = frozenset(
    {"name", "n_trials", "timeout", "workers", "storage", "heartbeat_interval", "grace_period", "plots_dir",
     "screen"}  # screen: how trials are spent, not what a trial measures; toggling it resumes
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class EvaluationSection(BaseModel):
    """How one trial is measured; together with the model it keys the memo and the baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: tuple[str, ...] = Field(
        default=("dse_arc_easy", "dse_piqa", "dse_hellaswag"), min_length=1,
        description="lm-eval task names; local ones are dse_<benchmark>.",
    )
    limit: int | None = Field(default=None, ge=1, description="Documents per task (None: all).")
    batch_size: int = Field(default=16, ge=1)
    data_dir: str | None = Field(default=None, description="Benchmark data; default $DSE_DATA_DIR or ../shared/data.")
    aggregate: Literal["mean", "max", "weighted"] = "mean"
    method: Literal["svd", "hooi", "asvd", "svd-llm", "feature", "activation"] = "svd"
    chunk_size: int | None = Field(
        default=None, ge=1,
        description="Documents per task per chunk for the early stop of hopeless trials; None disables it.",
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    feasibility: Literal["point", "confident", "adaptive"] = Field(
        default="point",
        description="point: drop below τ (the paper's Def. 1); confident: the interval's upper bound below τ; "
                    "adaptive: confident, evaluating more documents (up to max_limit) while the interval straddles τ.",
    )
    max_limit: int | None = Field(default=None, ge=1, description="Documents per task adaptive may go up to.")
    document_order: Literal["seeded", "file"] = Field(
        default="seeded", description="seeded: a random order fixed by document_seed (same for baseline and trials).",
    )
    document_seed: int = Field(default=0, ge=0)
    threads: int | None = Field(default=None, ge=1, description="Threads of the timed runs (default: usable cores).")
    ratio_width: float = Field(default=0.02, gt=0.0, lt=1.0, description="Target ± of the latency ratio's interval.")
    max_repeats: int = Field(default=8, ge=2, description="ABBA blocks at most for the efficiency ratios.")
    measure_latency: bool = True
    measure_energy: bool = True
    measure_memory: bool = True
    fast: bool = Field(
        default=True,
        description="Score with the engine's fast path (objectives/fast_lm.py: each context once, prefix reuse) "
                    "instead of lm-eval's HFLM; the same per-document outcomes, so not part of the study's identity.",
    )

    @model_validator(mode="after")
    def _limits(self) -> EvaluationSection:
        if self.max_limit is not None and self.limit is not None and self.max_limit < self.limit:
            raise ValueError(f"max_limit ({self.max_limit}) must be at least limit ({self.limit})")
        return self

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_list(cls, value: Any) -> Any:
        from objectives.tasks import task_list

        if isinstance(value, str) or (isinstance(value, (list, tuple)) and all(isinstance(t, str) for t in value)):
            return task_list(value)  # its InvalidConfigError is a ValueError
        return value


def _check_method_names(names: tuple[str, ...]) -> None:
    from space.config import METHOD_NAMES

    for name in names:
        if name not in METHOD_NAMES:
            raise ValueError(f"unknown method {name!r}; allowed: {', '.join(METHOD_NAMES)}")


class SearchSection(BaseModel):
    """How γ is searched: encoding, sampler, bounds on the number of layers and the rank."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoding: str = Field(default="gaps",
                          description="full, gaps, spacing, combined, ratios, profile or spectrum (docs/study.md).")
    sampler: str = Field(default="tpe", description="tpe, nsga2, gp or random.")
    seed: int | None = Field(default=0, ge=0)
    min_layers: int = Field(default=1, ge=1)
    max_layers: int | None = Field(default=None, ge=1)
    max_rank: int | None = Field(
        default=None, ge=1,
        description="Largest uniform rank searched when rank-one is off (default: the largest that still compresses).",
    )
    paper_seeds: int = Field(
        default=3, ge=0,
        description="How many of the paper's Table IV configurations (scaled to the model's depth) to enqueue first.",
    )
    n_startup_trials: int | None = Field(default=None, ge=1, description="Random trials before the sampler models.")
    # The keep-ratio encodings (ratios, profile): what they search.
    methods: tuple[str, ...] | None = Field(
        default=None, description="Methods a keep-ratio encoding chooses among (default: evaluation.method).",
    )
    keep_min: float = Field(default=0.5, gt=0.0, lt=1.0, description="Smallest kept-parameter ratio searched.")
    rank_one_method: str | None = Field(
        default=None, description="combined: the method of the rank-1 layers (default: the study's method).",
    )

    @field_validator("rank_one_method")
    @classmethod
    def _rank_one_method_known(cls, value: str | None) -> str | None:
        _check_method_names((value,) if value is not None else ())
        return value

    @field_validator("methods")
    @classmethod
    def _methods_known(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        _check_method_names(value or ())
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError(f"search.methods must list distinct methods, got {list(value)}")
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding_known(cls, value: str) -> str:
        from dse.study.encoding import ENCODINGS

        if value not in ENCODINGS:
            raise ValueError(ENCODINGS.unknown_message(value))
        return value

    @field_validator("sampler")
    @classmethod
    def _sampler_known(cls, value: str) -> str:
        from dse.study.samplers import SAMPLERS

        if value not in SAMPLERS:
            raise ValueError(SAMPLERS.unknown_message(value))
        return value

    @model_validator(mode="after")
    def _layer_bounds(self) -> SearchSection:
        if self.max_layers is not None and self.max_layers < self.min_layers:
            raise ValueError(
                f"max_layers must be at least min_layers, "
                f"got max_layers={self.max_layers} < min_layers={self.min_layers}"
            )
        return self


class StudyDefinition(BaseModel):
    """A whole study. See ``docs/study.md`` for every key and ``studies/*.toml`` for examples."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, description="Study name in the storage (default: the file's stem).")
    model: str = "smollm2-135m"
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    tau: float = Field(default=4.0, gt=0.0, le=100.0, allow_inf_nan=False,
                       description="Accuracy-drop tolerance in percentage points, in (0, 100].")
    objective: str = Field(default="edp", description="edp, latency, energy, params, edp-drop or reduction-drop.")
    n_trials: int = Field(default=10, ge=1, description="Measured trials the study holds when done.")
    timeout: float | None = Field(default=None, gt=0, description="Seconds a run may take before it stops asking.")
    workers: int = Field(default=1, ge=1, le=64, description="Local worker processes.")
    storage: str = Field(default_factory=lambda: _default_storage(),  # noqa: PLW0108 - defined below
                         description="Database URL (default: $DSE_STORAGE, else sqlite:///dse.db here).")
    plots_dir: str | None = Field(default=None, description="Where `run` writes its plots (default plots/<name>).")
    heartbeat_interval: int = Field(default=10, ge=1, description="Seconds between a running trial's heartbeats.")
    screen: bool = Field(
        default=False,
        description="KL screen (dse/screen.py): record each trial's KL to the baseline and skip the full "
        "evaluation of γ surely above τ (recorded as screened, never feasible).",
    )
    grace_period: int | None = Field(
        default=None, ge=1,
        description="Seconds without heartbeat before a RUNNING trial is failed (default 6x interval).",
    )
    rules: dict[str, bool | int] = Field(
        default_factory=lambda: {"rank-one": True, "skip-early": 2, "min-distance": 2, "whole-layers": True},
        description="Heuristic rules: true = on with its default, an integer = on with that parameter, false = off.",
    )
    evaluation: EvaluationSection = EvaluationSection()
    search: SearchSection = SearchSection()
    workload: Workload = Workload()
    calibration: CalibrationSettings | None = Field(
        default=None, description="Calibration of asvd, svd-llm and feature (default settings when they are used).",
    )
    min_param_reduction_pct: float | None = Field(
        default=None, gt=0.0, lt=100.0,
        description="Parameter budget: γ removing fewer % of the model's parameters are rejected unmeasured.",
    )

    @field_validator("tau", mode="before")
    @classmethod
    def _tau_in_range(cls, value: Any) -> Any:
        """One message for every bad τ (nan, inf, 0, 200): the range it must lie in."""
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            return value  # pydantic says it is not a number
        if not (math.isfinite(number) and 0.0 < number <= 100.0):
            raise ValueError(f"τ must be a finite number in (0, 100] (percentage points), got {value!r}")
        return value

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.fullmatch(value):  # match() would let "name\n" through
            raise ValueError(
                f"study name {value!r} is not allowed: use letters, digits, '.', '_' or '-' "
                f"(at most 128, no leading punctuation)"
            )
        return value

    @field_validator("rules", mode="before")
    @classmethod
    def _rules_known(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        from space.rules import RULES, RuleSet

        for rule_name in value:
            if rule_name not in RULES:
                raise ValueError(RULES.unknown_message(str(rule_name)))
        RuleSet(rules=dict(value))  # names, values and ranges, as `dse space` checks them
        return dict(value)

    @field_validator("objective")
    @classmethod
    def _objective_known(cls, value: str) -> str:
        from dse.study.goals import GOALS

        if value not in GOALS:
            raise ValueError(GOALS.unknown_message(value))
        return value

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        from objectives.devices import check_device_name

        return check_device_name(value)  # its InvalidConfigError is a ValueError

    @model_validator(mode="after")
    def _measured_what_is_optimized(self) -> StudyDefinition:
        from dse.study.goals import GOALS

        goal = GOALS.get(self.objective)
        for flag in goal.needs:
            if not getattr(self.evaluation, flag):
                raise ValueError(f"objective {self.objective!r} needs evaluation.{flag} = true")
        if goal.name == "budget" and self.min_param_reduction_pct is None:
            raise ValueError("objective 'budget' needs min_param_reduction_pct = P (at least P % fewer parameters)")
        return self

    @property
    def methods(self) -> tuple[str, ...]:
        """Every method a trial of this study may use."""
        return tuple(dict.fromkeys((self.evaluation.method, *(self.search.methods or ()))))

    @property
    def calibration_settings(self) -> CalibrationSettings | None:
        """The calibration the study's methods need (None when none needs one)."""
        from space.config import TWO_FACTOR_METHODS

        if not set(self.methods) & TWO_FACTOR_METHODS:
            return None
        return self.calibration or CalibrationSettings()

    # ---- derived ----------------------------------------------------------------------

    @property
    def study_name(self) -> str:
        return self.name or default_study_name(self)

    @property
    def grace_seconds(self) -> int:
        return self.grace_period if self.grace_period is not None else 6 * self.heartbeat_interval

    def identity(self) -> dict[str, Any]:
        """What a study *is*: everything but the run budget, storage and liveness settings."""
        data = self.model_dump(mode="json", exclude=set(BUDGET_FIELDS))
        # Settings added later are left out at their defaults, so a stored study still matches.
        for key in ("calibration", "min_param_reduction_pct"):
            if data.get(key) is None:
                data.pop(key, None)
        # How accuracy is computed, not what: toggling it resumes the study (see EvaluationSection.fast).
        data["evaluation"].pop("fast", None)
        for key, default in (("methods", None), ("keep_min", 0.5), ("rank_one_method", None)):
            if data["search"].get(key) == default:
                data["search"].pop(key, None)
        return data

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def with_overrides(self, **overrides: Any) -> StudyDefinition:
        """A copy with CLI flags applied (``None`` means: not given), validated again.

        Keys are top-level field names or the section fields ``tasks``, ``limit``,
        ``data_dir``, ``batch_size``, ``chunk_size``, ``method`` (evaluation) and
        ``encoding``, ``sampler``, ``seed``, ``max_layers``, ``paper_seeds`` (search).
        """
        data = self.model_dump(mode="python")
        sections = {"evaluation": EvaluationSection.model_fields, "search": SearchSection.model_fields}
        for key, value in overrides.items():
            if value is None:
                continue
            if key in StudyDefinition.model_fields:
                data[key] = value
                continue
            for section, fields in sections.items():
                if key in fields:
                    data[section] = dict(data[section]) | {key: value}
                    break
            else:
                raise InvalidConfigError(f"unknown study setting {key!r}")
        return StudyDefinition.model_validate(data)


def default_study_name(definition: StudyDefinition) -> str:
    """``<model>-<objective>`` with anything outside the allowed characters replaced."""
    base = f"{Path(definition.model).name or definition.model}-{definition.objective}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", base).strip("-._") or "study"


def load_definition(path: str | Path) -> StudyDefinition:
    """Read a study TOML file; its name defaults to the file's stem.

    Raises:
        DataError: the file is missing, unreadable or not TOML.
        pydantic.ValidationError: unknown keys or wrong types (one error per problem).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"study file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read study file {str(path)!r}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"study file {str(path)!r} is not valid TOML: {exc}") from None
    data.setdefault("name", re.sub(r"[^A-Za-z0-9._-]", "-", path.stem))
    return StudyDefinition.model_validate(data)


def definition_diff(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Changes between two ``identity()`` dicts, as ``key: old -> new`` (dotted keys)."""

    def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(obj, Mapping):
            out: dict[str, Any] = {}
            for key in obj:
                out |= flatten(obj[key], f"{prefix}{key}.")
            return out
        return {prefix.rstrip("."): obj}

    old_flat, new_flat = flatten(stored), flatten(new)
    changes = []
    for key in sorted(set(old_flat) | set(new_flat)):
        old, cur = old_flat.get(key, "<unset>"), new_flat.get(key, "<unset>")
        if isinstance(old, tuple):
            old = list(old)
        if isinstance(cur, tuple):
            cur = list(cur)
        if old != cur:
            changes.append(f"{key}: {json.dumps(old)} -> {json.dumps(cur)}")
    return changes


def _default_storage() -> str:
    from dse.study.storage import default_storage

    return default_storage()
