"""Screenshot optuna-dashboard, served by ``dse study dashboard``, on a real tiny-llama study.

Runs a small study (tiny-llama, 2 tasks × 10 documents, 10 trials) into a temporary
database with τ set to the median positive drop a first probe study (τ = 100) measured, so that
some trials are feasible and some are not (the memo answers γ the probe measured). It
serves the database with :func:`dse.study.dashboard.dashboard_app` on 127.0.0.1 and
captures pages with headless Chromium (``apt-get install chromium``).

    python benchmarks/dashboard_screenshot.py --out docs/figures
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna

from dse.study.api import run_study
from dse.study.dashboard import dashboard_app

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
    common = {"model": "tiny-llama", "tasks": "dse_arc_easy,dse_piqa", "limit": 10, "n_trials": args.trials,
              "storage": url, "seed": 0, "progress": False, "plots": False}
    probe = run_study(None, tau=100.0, name="probe", **common)
    drops = sorted(r["accuracy_drop_pp"] for r in probe.trials() if r.get("accuracy_drop_pp") is not None)
    # tiny-llama is random: drops are noise around 0. The median positive drop splits the trials.
    positive = [d for d in drops if d > 0]
    tau = positive[len(positive) // 2] if positive else 0.5
    print(f"probe drops {drops}; τ = {tau:g} pp")
    study = run_study(None, tau=tau, name="tiny-dashboard", **common)
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
