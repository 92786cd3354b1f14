"""Optuna samplers by name: TPE, NSGA-II, GP, and Random (for tests and baselines).

All of them read the accuracy-drop constraint that each trial sets with
``trial.set_constraint`` (Optuna 5; the samplers' ``constraints_func`` is deprecated
there), so infeasible trials steer the search without being dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from space.registry import Registry

if TYPE_CHECKING:
    import optuna

__all__ = ["SAMPLERS", "SamplerFactory", "make_sampler"]


class SamplerFactory(Protocol):
    """Builds an Optuna sampler for a study's size and number of objectives."""

    def __call__(self, *, seed: int | None, n_trials: int, n_startup_trials: int | None,
                 multi_objective: bool) -> optuna.samplers.BaseSampler: ...


def _startup(n_trials: int, n_startup_trials: int | None) -> int:
    # A 10-trial study would be all random with Optuna's default of 10 start-up trials.
    if n_startup_trials is not None:
        return n_startup_trials
    return max(2, min(10, n_trials // 3))


def _tpe(*, seed: int | None, n_trials: int, n_startup_trials: int | None,
         multi_objective: bool) -> optuna.samplers.BaseSampler:
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar keeps parallel workers from proposing the same γ at once.
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=_startup(n_trials, n_startup_trials),
            multivariate=True, constant_liar=True,
        )


def _nsga2(*, seed: int | None, n_trials: int, n_startup_trials: int | None,
           multi_objective: bool) -> optuna.samplers.BaseSampler:
    import optuna

    population = max(4, min(50, n_trials // 3))
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)


def _gp(*, seed: int | None, n_trials: int, n_startup_trials: int | None,
        multi_objective: bool) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=_startup(n_trials, n_startup_trials), warn_independent_sampling=False
    )


def _random(*, seed: int | None, n_trials: int, n_startup_trials: int | None,
            multi_objective: bool) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: Registry[SamplerFactory] = Registry("sampler")
SAMPLERS.register("tpe", _tpe)
SAMPLERS.register("nsga2", _nsga2)
SAMPLERS.register("gp", _gp)
SAMPLERS.register("random", _random)


def make_sampler(name: str, **kwargs: Any) -> optuna.samplers.BaseSampler:
    """Build the sampler registered as ``name`` (unknown names list the known ones)."""
    return SAMPLERS.get(name)(**kwargs)
