#!/usr/bin/env bash
# One command for the day a CUDA GPU is at hand (CI never has one), under 8 minutes:
#   1. the GPU tests (pytest -m gpu: CUDA-event timing, NVML energy, factorized layers, memory, paired ratios);
#   2. a 3-trial study of SmolLM2-135M on the GPU (latency from CUDA events, energy from NVML's counter,
#      ratios from paired ABBA runs with intervals), printing what it measured.
# Without CUDA it says so in one line and exits 0.
#
# Usage: benchmarks/gpu_check.sh            (PYTHON=... to choose the interpreter; KEEP=1 keeps the database)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: skipped, no CUDA device visible to torch on this machine (nothing to check)"
    exit 0
fi
started=$(date +%s)
work="$(mktemp -d)"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
"$PY" - <<'PY'
import torch
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

echo "== 1/2 GPU tests (pytest -m gpu)"
timeout 180 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs

echo "== 2/2 a 3-trial study on cuda (SmolLM2-135M, 2 tasks x 40 documents)"
storage="sqlite:///$work/gpu-check.db"
timeout 270 "$PY" -m dse.cli study run --name gpu-check --model smollm2-135m --device cuda \
    --tasks dse_arc_easy,dse_piqa --limit 40 --n-trials 3 --tau 4 --objective edp \
    --storage "$storage" --no-plots --quiet --json > "$work/run.json"
"$PY" -m dse.cli study export gpu-check --storage "$storage" --format json > "$work/trials.json"
"$PY" - "$work/run.json" "$work/trials.json" <<'PY'
import json, sys

run = json.load(open(sys.argv[1]))
trials = [t for t in json.load(open(sys.argv[2])) if t["state"] == "COMPLETE" and not t["rejected"]]

def ci(row, key):
    interval = row.get(f"{key}_ci")
    value = row.get(key)
    if value is None:
        return "—"
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")

print(f"measured {len(trials)} trial(s); counts {run['counts']}")
for t in trials:
    hw = t.get("hardware") or {}
    print(f"  #{t['number']} {t['gamma_label']}: drop {t['accuracy_drop_pp']:.2f} pp "
          f"[{t['drop_ci_low_pp']:.2f}, {t['drop_ci_high_pp']:.2f}], feasible {t['feasible']}; "
          f"latency ratio {ci(t, 'latency_ratio')} ({t.get('latency_method')}), "
          f"energy ratio {ci(t, 'energy_ratio')} ({t.get('energy_method')}, estimated {t.get('energy_estimated')}), "
          f"EDP ratio {ci(t, 'edp_ratio')}; {t.get('repeats')} ABBA blocks, noisy {t.get('noisy')} "
          f"{t.get('noise') or ''}; {hw.get('processor')}")
bad = [t["number"] for t in trials if t.get("energy_estimated") or not str(t.get("energy_method", "")).startswith("nvml")]
if bad or not trials:
    sys.exit(f"gpu_check: FAILED, trials {bad} were not metered by NVML" if trials else "gpu_check: FAILED, no trial")
PY
echo "gpu_check: passed in $(( $(date +%s) - started )) s"
