#!/usr/bin/env bash
# `lenet speedrun`: time to >= 99.0 % MNIST test accuracy from process start, the mean over 10 seeds, each
# trained by a fresh process (lenet/speedrun.py). Saves the JSON result as
# benchmarks/results/speedrun-<cpu>.json, <cpu> being lenet.hardware's model name made file-safe (one file per
# CPU kind, replaced by the next sitting on that kind). Run it on a quiet machine: other processes slow the
# children down and the timings then say nothing about the recipe.
# Usage: benchmarks/speedrun.sh [lenet speedrun flags...]   e.g. benchmarks/speedrun.sh --threads 1 --runs 5
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
LENET=${LENET:-lenet}
OUT=benchmarks/results
mkdir -p "$OUT"
CPU=$($PY -c 'import re; from lenet.hardware import detect_cpu
print(re.sub(r"[^a-z0-9]+", "-", re.sub(r"\((r|tm)\)", "", detect_cpu().model.lower())).strip("-") or "unknown-cpu")')
RESULT="$OUT/speedrun-$CPU.json"
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
# the per-run lines go to stderr (the terminal); stdout is the one JSON object
$LENET speedrun --json "$@" > "$TMP"
$PY -m json.tool "$TMP" > "$RESULT"
$PY - "$RESULT" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
a, w = r["accuracy"], r["wall"]
std = lambda s: "" if s["std"] is None else f" ± {s['std']:.2f}"
print(f"{sys.argv[1]}: {a['mean']:.2f}{std(a)} % over {len(r['runs'])} seeds, wall {w['mean']:.2f}{std(w)} s "
      f"from process start: {'counts' if r['counts'] else 'does not count'} (target {r['target']} %)")
PYEOF
