"""Screenshot optuna-dashboard, served by ``dse study dashboard``, on a study of tiny-llama.

The study (10 trials, τ = 4 pp) is measured by the deterministic fake evaluator of the
tests (``tests/study/study_fakes.py``: a γ's drop grows with the layers it decomposes,
earlier layers hurting more), so that some trials are feasible and some are not; a
random tiny model's drops are noise. Everything the dashboard shows is written by the
real engine. The database is served with :func:`dse.study.dashboard.dashboard_app` on
127.0.0.1 and captured with headless Chromium (``apt-get install chromium``).

    python benchmarks/dashboard_screenshot.py --out docs/figures
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna

from dse.study.api import run_study
from dse.study.dashboard import dashboard_app
from dse.study.definition import StudyDefinition

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=15000",
]


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    """Run the study, serve it, and write the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    work = Path(tempfile.mkdtemp(prefix="dse-dashboard-"))
    url = f"sqlite:///{work / 'study.db'}"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "study"))
    from study_fakes import FakeEvaluator  # type: ignore[import-not-found]

    definition = StudyDefinition.model_validate({
        "name": "tiny-dashboard", "model": "tiny-llama", "storage": url, "n_trials": args.trials, "tau": 4.0,
        "rules": {"rank-one": True, "whole-layers": True, "skip-early": 1, "min-distance": 1},
        "evaluation": {"tasks": ["dse_arc_easy", "dse_piqa"], "limit": 5},
        "search": {"sampler": "tpe", "seed": 1, "paper_seeds": 2},
    })
    study = run_study(definition, evaluator_factory=FakeEvaluator, progress=False, plots=False)
    study_id = optuna.storages.RDBStorage(url).get_study_id_from_name(study.name)
    server = make_server("127.0.0.1", 0, dashboard_app(optuna.storages.RDBStorage(url)), handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    args.out.mkdir(parents=True, exist_ok=True)
    pages = {"dashboard.png": f"/dashboard/studies/{study_id}",
             "dashboard-trials.png": f"/dashboard/studies/{study_id}/trials"}
    try:
        for name, page in pages.items():
            profile = tempfile.mkdtemp(prefix="chromium-")
            subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1700",
                            f"--screenshot={args.out / name}", f"http://127.0.0.1:{port}{page}"],
                           check=True, capture_output=True, timeout=120)
            shutil.rmtree(profile, ignore_errors=True)
            print(args.out / name)
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
