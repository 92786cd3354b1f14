"""The KL screen on the quick study's space: how many trials it skips, and whether any was feasible.

Replays a study of ``--trials`` γ from a study definition (default
``studies/smollm2-quick.toml``: its model, rules, encoding, τ, tasks, limit and chunked
early stop), with the screen of :mod:`dse.screen` on. The γ: the definition's paper seeds
first, then γ drawn from its encoding by a seeded random sampler. (TPE, the quick study's
sampler, needs each trial's EDP; latency and energy are not measured here, since the
screen is about accuracy, so the sequence is a random one of the same space, not the one
TPE would propose.)

For every γ, in order: its KL to the baseline (1024 WikiText-2 validation tokens), the
screen's decision given the trials evaluated before it (a skipped γ does not enter the
history, as in a study), and then, skipped or not, its full evaluation (engine path, the
study's early stop and point feasibility), so that each skipped γ's feasibility is known.
Reported: trials skipped, skipped ones that were feasible, CPU seconds of the KL and of the
evaluation per trial, and every trial's row.

Usage: .venv/bin/python benchmarks/bench_screen.py [--definition studies/smollm2-quick.toml]
       [--trials 20] [--seed 0] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _gammas(definition: Any, n_trials: int, seed: int) -> list[Any]:
    """The paper seeds, then distinct random γ of the definition's encoding."""
    import optuna

    from dse.study.encoding import make_encoding, paper_configs
    from dse.study.lifecycle import search_space_for
    from space.presets import load_spec

    spec = load_spec(definition.model)
    encoding = make_encoding(definition.search.encoding, search_space_for(spec, definition))
    gammas = [config.gamma for config in paper_configs(encoding, limit=definition.search.paper_seeds)[0]]
    seen = {gamma.hash(spec) for gamma in gammas}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(100 * n_trials):
        if len(gammas) >= n_trials:
            break
        trial = sampler.ask()
        gamma = encoding.suggest(trial)
        sampler.tell(trial, 0.0)
        if gamma.hash(spec) not in seen:
            seen.add(gamma.hash(spec))
            gammas.append(gamma)
    return gammas[:n_trials]


def replay(definition_path: Path, n_trials: int, seed: int) -> dict[str, Any]:
    """Screen, then evaluate anyway, each γ of a replayed study; the rows and the counts."""
    from dse.cache import FactorCache
    from dse.evaluation import Evaluator
    from dse.models import load_model
    from dse.screen import KLScreen, decide
    from dse.study.definition import load_definition
    from dse.study.measuring import measurement_settings
    from dse.surgery import decomposed
    from space.env import default_data_dir

    definition = load_definition(definition_path)
    settings = measurement_settings(definition).model_copy(
        update={"measure_latency": False, "measure_energy": False, "measure_memory": False})
    data_dir = Path(settings.data_dir) if settings.data_dir else default_data_dir()
    if data_dir is None:
        raise SystemExit("bench_screen: the benchmark data directory was not found (../shared/data or $DSE_DATA_DIR)")
    gammas = _gammas(definition, n_trials, seed)
    loaded = load_model(definition.model, device=definition.device, dtype=definition.dtype)
    with tempfile.TemporaryDirectory() as factors:
        evaluator = Evaluator(loaded, settings, cache=FactorCache(Path(factors)), progress=False)
        screen = KLScreen(loaded.model, loaded.tokenizer, data_dir)
        cpu = time.process_time()
        screen.record_baseline()
        baseline_kl_s = time.process_time() - cpu
        baseline = evaluator.baseline()
        history: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        for index, gamma in enumerate(gammas):
            with decomposed(loaded, gamma, cache=evaluator.cache, method=settings.method):
                cpu = time.process_time()  # after the factors: the screen's own cost
                kl = screen.measure()
                kl_s = time.process_time() - cpu
            decision = decide(kl, history, definition.tau)
            cpu = time.process_time()
            record = evaluator.evaluate(gamma, baseline, tau=definition.tau)
            eval_s = time.process_time() - cpu
            if not decision.skip:
                history.append(record.model_dump(mode="json") | {"kl_divergence": kl})
            rows.append({
                "trial": index, "layers": list(gamma.layers), "kl": round(kl, 4), "skipped": decision.skip,
                "feasible": record.feasible, "drop_pp": round(record.accuracy_drop_pp, 2),
                "drop_ci_pp": [round(record.drop_ci_low_pp, 2), round(record.drop_ci_high_pp, 2)],
                "early_stopped": record.early_stopped, "kl_cpu_s": round(kl_s, 2), "eval_cpu_s": round(eval_s, 2),
                "reason": decision.reason,
            })
            print(json.dumps(rows[-1]), flush=True)
    skipped = [row for row in rows if row["skipped"]]
    first = rows[: definition.n_trials]
    return {
        "definition": str(definition_path),
        "trials": len(rows),
        "skipped": len(skipped),
        "skipped_feasible": sum(1 for row in skipped if row["feasible"]),
        "skipped_in_first_n_trials": sum(1 for row in first if row["skipped"]),
        "n_trials_of_definition": definition.n_trials,
        "feasible": sum(1 for row in rows if row["feasible"]),
        "early_stopped": sum(1 for row in rows if row["early_stopped"]),
        "kl_cpu_s_median": statistics.median(row["kl_cpu_s"] for row in rows),
        "eval_cpu_s_median": statistics.median(row["eval_cpu_s"] for row in rows),
        "eval_cpu_s_saved": round(sum(row["eval_cpu_s"] for row in skipped), 2),
        "baseline_kl_cpu_s": round(baseline_kl_s, 2),
        "tau": definition.tau,
        "seed": seed,
        "rows": rows,
    }


def main() -> None:
    """Parse the flags, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--definition", type=Path, default=Path("studies/smollm2-quick.toml"))
    parser.add_argument("--trials", type=int, default=20, help="γ to replay (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random γ after the paper seeds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the results")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error(f"--trials must be a positive number of trials, got {args.trials}")
    if not args.definition.is_file():
        parser.error(f"--definition {str(args.definition)!r} is not a file")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = replay(args.definition, args.trials, args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key != "rows":
                print(f"{key}: {value}")


if __name__ == "__main__":
    main()
