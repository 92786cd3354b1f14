#!/usr/bin/env bash
# The characterization of docs/results.md: every sweep of `dse characterize` on SmolLM2-135M.
# Reruns resume (each sweep is a study; measured points come from the database).
#   LIMIT=30 STORAGE=sqlite:////work/char-data/char.db benchmarks/characterize_smollm2.sh [sweep ...]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
LIMIT="${LIMIT:-30}"
STORAGE="${STORAGE:-sqlite:///characterization.db}"
PLOTS="${PLOTS-docs/figures}"   # PLOTS= (empty) writes no figures
# MMLU is a group: --limit applies to each of its 57 subjects, so it runs as its own pass
# (TASKS=dse_mmlu LIMIT=2 SUFFIX=-mmlu PLOTS=docs/figures/mmlu) at 2 documents per subject.
TASKS="${TASKS:-dse_arc_easy,dse_piqa,dse_hellaswag,dse_boolq,dse_truthfulqa_mc1}"
SUFFIX="${SUFFIX:-}"
SWEEPS=("$@")
[ ${#SWEEPS[@]} -eq 0 ] && SWEEPS=(layers case-study rank tensors distance groups)
for sweep in "${SWEEPS[@]}"; do
  # Latency, energy and memory only where the paper reports them against parameters (Figs. 10-11).
  efficiency=(--no-efficiency)
  [ "$sweep" = case-study ] && efficiency=()
  plots=()
  [ -n "$PLOTS" ] && plots=(--plots "$PLOTS")
  dse characterize smollm2-135m --sweep "$sweep" --tasks "$TASKS" --limit "$LIMIT" --storage "$STORAGE" \
    "${efficiency[@]}" "${plots[@]}" --quiet --json > "${JSON_DIR:-.}/characterize-$sweep$SUFFIX.json"
  echo "$sweep done: ${JSON_DIR:-.}/characterize-$sweep$SUFFIX.json"
done
