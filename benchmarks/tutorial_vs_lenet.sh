#!/usr/bin/env bash
# Issue 2's timing claim: `lenet train` with defaults vs the tutorial's script, back to back on the same
# machine in the same sitting. Records both wall times, accuracies and commands in
# benchmarks/results/tutorial_vs_lenet.json (appended: one entry per sitting). Usage: benchmarks/tutorial_vs_lenet.sh [SEED]
# Run it on a quiet machine: both sides use every core, so other jobs inflate both (not equally).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
LENET=${LENET:-lenet}
SEED=${1:-0}
OUT=benchmarks/results
mkdir -p "$OUT"
LOG=$(mktemp -d)

TUTORIAL_CMD="$PY benchmarks/tutorial.py"
LENET_CMD="$LENET train --seed $SEED --no-progress"
if [ -n "${THREADS:-}" ]; then
  # Same thread count on both sides (e.g. THREADS=1 on a shared machine, where 2 OpenMP threads collapse).
  export OMP_NUM_THREADS=$THREADS
  LENET_CMD="$LENET_CMD --threads $THREADS"
fi

t0=$(date +%s.%N); $TUTORIAL_CMD > "$LOG/tutorial.log"; t1=$(date +%s.%N)
$LENET_CMD > "$LOG/lenet.log"; t2=$(date +%s.%N)

tutorial_acc=$(grep -o 'Test Accuracy: [0-9.]*' "$LOG/tutorial.log" | grep -o '[0-9.]*$')
lenet_acc=$(grep -o 'Test Accuracy: [0-9.]*' "$LOG/lenet.log" | grep -o '[0-9.]*$')
$PY - "$OUT/tutorial_vs_lenet.json" <<PYEOF
import json, os, sys, time
import torch
from lenet.hardware import detect_cpu
t, l = float("$t1") - float("$t0"), float("$t2") - float("$t1")
result = {
    "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "machine": detect_cpu().model, "amx": "amx_tile" in open("/proc/cpuinfo").read(), "cpus": os.cpu_count(), "torch": torch.__version__,
    "load_average_at_end": os.getloadavg(),
    "tutorial": {"command": "$TUTORIAL_CMD", "wall_s": round(t, 2), "test_accuracy": float("$tutorial_acc")},
    "lenet": {"command": "$LENET_CMD", "wall_s": round(l, 2), "test_accuracy": float("$lenet_acc")},
    "lenet_fraction_of_tutorial": round(l / t, 3),
    "threads": os.environ.get("THREADS") or "default (tutorial: torch default; lenet: one per idle core)",
    "target": "lenet_fraction_of_tutorial <= 0.40",
}
# every sitting is kept: the tutorial's own time varies a lot between sittings, so one ratio is not enough
try:
    sittings = json.load(open(sys.argv[1])).get("sittings", [])
except (OSError, ValueError):
    sittings = []
json.dump({"sittings": sittings + [result]}, open(sys.argv[1], "w"), indent=2)
print(json.dumps(result, indent=2))
PYEOF
