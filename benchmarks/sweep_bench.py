"""Trials per hour: `lenet sweep` with 1 worker x 2 threads, 2 workers x 1 thread, and a shell loop of
`lenet train`, on the same 20 short trainings (`--recipe fast --epochs 1 --seed 0..19` by default).

Per-trial overhead = everything that is not the training epochs themselves: process start and imports (the
loop pays them every run, a sweep once per worker), MNIST load, network build, evaluation, checkpoints, and
for a sweep the study's round trips (claim: stale check + heartbeat + WAITING->RUNNING; tell: result + state),
which each trial's trial.json records.

    python benchmarks/sweep_bench.py [--trials 20] [--flags "--recipe fast --epochs 1"] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lenet.hardware import detect_cpu

LENET = [sys.executable, "-m", "lenet"]


def cpu_name() -> str:
    return detect_cpu().model


def run_sweep(flags: list[str], trials: int, workers: int, threads: int, folder: Path) -> dict:
    command = [*LENET, "sweep", *flags, "--seed", f"0-{trials - 1}", "--workers", str(workers),
               "--threads", str(threads), "--out", str(folder)]
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    records = [json.loads(p.read_text()) for p in folder.glob("runs/*/trial.json")]
    assert len(records) == trials, f"{len(records)} trials finished, expected {trials}"
    epochs = statistics.fmean(r["epochs_s"] for r in records)
    per_trial = [r["claim_s"] + (r["train_s"] - r["epochs_s"]) + r.get("tell_s", 0.0) for r in records]
    return {"command": shlex.join(command[2:]), "wall_s": wall, "trials_per_hour": trials / wall * 3600,
            "epochs_s_mean": epochs, "epochs_s_median": statistics.median(r["epochs_s"] for r in records),
            # claim + in-process setup/evaluation/checkpoints + tell, per trial (startup not included)
            "trial_overhead_s_median": statistics.median(per_trial),
            # wall time the workers spent per trial beyond its epochs (startup amortised in)
            "overhead_s_per_trial": wall * workers / trials - epochs,
            "in_process_setup_s_mean": statistics.fmean(r["train_s"] - r["epochs_s"] for r in records),
            "claim_s_mean": statistics.fmean(r["claim_s"] for r in records),
            "tell_s_mean": statistics.fmean(r.get("tell_s", 0.0) for r in records),
            "test_accuracy_mean": statistics.fmean(
                json.loads((folder / "runs" / p.parent.name / "model.json").read_text())["metrics"]["test_accuracy"]
                for p in folder.glob("runs/*/trial.json"))}


def run_loop(flags: list[str], trials: int, threads: int, folder: Path) -> dict:
    """`for s in 0..N-1; do lenet train ... --seed $s --out DIR/$s; done`, as one bash loop."""
    train = shlex.join([*LENET, "train", *flags, "--threads", str(threads), "--no-progress"])
    out = shlex.quote(str(folder))
    script = f"for s in $(seq 0 {trials - 1}); do {train} --seed $s --out {out}/$s > {out}/$s.log; done"
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    wall = time.perf_counter() - t0
    epochs = [sum(json.loads(line)["seconds"] for line in (folder / str(s) / "metrics.jsonl").read_text().splitlines())
              for s in range(trials)]
    # each process's own wall time from its start (imports included), as `lenet train` prints it
    walls = [float(re.search(r"Wall time: ([0-9.]+) s", (folder / f"{s}.log").read_text()).group(1))
             for s in range(trials)]
    accuracy = [json.loads((folder / str(s) / "model.json").read_text())["metrics"]["test_accuracy"]
                for s in range(trials)]
    return {"command": f"bash loop: {train} --seed $s --out DIR/$s", "wall_s": wall,
            "trials_per_hour": trials / wall * 3600, "epochs_s_mean": statistics.fmean(epochs),
            "epochs_s_median": statistics.median(epochs),
            "trial_overhead_s_median": statistics.median(w - e for w, e in zip(walls, epochs, strict=True)),
            "overhead_s_per_trial": wall / trials - statistics.fmean(epochs),
            "test_accuracy_mean": statistics.fmean(accuracy)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--flags", default="--recipe fast --epochs 1", help="training flags of every trial")
    parser.add_argument("--json", help="append the results to this file's list of sittings")
    parser.add_argument("--order", default="sweep_1x2,sweep_2x1,loop_train",
                        help="the modes, in the order they run (the machine's load drifts: alternate it)")
    args = parser.parse_args()
    flags = shlex.split(args.flags)
    results = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": cpu_name(),
               "cores": len(os.sched_getaffinity(0)), "trials": args.trials, "flags": args.flags,
               "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        modes = {"sweep_1x2": lambda: run_sweep(flags, args.trials, 1, 2, Path(tmp) / "a"),
                 "sweep_2x1": lambda: run_sweep(flags, args.trials, 2, 1, Path(tmp) / "b"),
                 "loop_train": lambda: run_loop(flags, args.trials, 2, Path(tmp) / "c")}
        for name in args.order.split(","):
            results[name] = {**modes[name](), "load_average_after": os.getloadavg()}
            r = results[name]
            print(f"{name:11} {r['wall_s']:7.1f} s  {r['trials_per_hour']:7.0f} trials/h  epochs "
                  f"{r['epochs_s_mean']:.2f} s (median {r['epochs_s_median']:.2f})  overhead "
                  f"{r['overhead_s_per_trial']:.2f} s/trial (median per trial "
                  f"{r['trial_overhead_s_median']:.2f})  test "
                  f"{r['test_accuracy_mean']:.2f} %", flush=True)
    results["load_average_after"] = os.getloadavg()
    if args.json:
        path = Path(args.json)
        sittings = json.loads(path.read_text()) if path.is_file() else []
        path.write_text(json.dumps([*sittings, results], indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
