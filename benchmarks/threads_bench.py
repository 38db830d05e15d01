"""The thread policy under competing processes, side by side in one sitting (issue 16, "Must show" (a)-(c)).

Each run is `lenet train` in its own process, beside:
    idle    nothing
    burst   (a) 2 busy-loop processes for 2 s, started with lenet
    hold    (b) 1 busy-loop process for the whole run
    mid     (c) 1 busy-loop process started half-way through epoch 2 (when epoch 1 took T s: T/2 after its
            line), so epochs 3.. run beside it
with one of these thread policies:
    adaptive   today's default (trainer/threads.py)
    old        the previous default: a 50-ms /proc/loadavg snapshot at start (OLD below), computed in the
               child process and passed as --threads
    pinned1 / pinned2   --threads 1 / 2

Throughput is the training epochs' own images/s from metrics.jsonl (all epochs: images / epoch seconds);
"from epoch 3" is the same over epochs 3 and later (for (c)).

    python benchmarks/threads_bench.py [--json F] [--only default|classic]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lenet.hardware import detect_cpu

# The child for the "old" policy: the snapshot the old default took after importing torch (lenet's
# auto_threads until 2026-12-04, kept here as the comparator: one thread per core that /proc/loadavg's
# runnable count, five samples 10 ms apart, says is idle), then a run pinned to it.
OLD = """
import sys, time
import torch  # noqa: F401 (the old default took its snapshot after this import)
from lenet.cli import main
from lenet.trainer.config import usable_cores
busy = []
for _ in range(5):
    busy.append(int(open("/proc/loadavg").read().split()[3].split("/")[0]) - 1)
    time.sleep(0.01)
threads = max(1, min(usable_cores(), round(usable_cores() - sum(busy) / len(busy))))
sys.argv = ["lenet", *sys.argv[1:], "--threads", str(threads)]
sys.exit(main())
"""
HOG = "while True: pass"
RECIPES = {
    "default": ["--seed", "1", "--epochs", "4"],
    "classic": ["--model", "classic", "--recipe", "paper", "--seed", "1", "--epochs", "4", "--train-size", "12000"],
}
POLICIES = {"adaptive": [], "pinned1": ["--threads", "1"], "pinned2": ["--threads", "2"], "old": None}
# (scenario, policy) pairs run for each recipe, in this order; pinned2 under a hold is left out (the old
# policy's snapshot sees a hold and picks 1 thread; 2 threads beside it is the known 10x collapse)
PLAN = [("idle", "adaptive"), ("idle", "pinned2"), ("idle", "pinned1"), ("idle", "old"),
        ("burst", "adaptive"), ("burst", "old"),
        ("hold", "adaptive"), ("hold", "pinned1"), ("hold", "old"),
        ("mid", "adaptive"), ("mid", "pinned1"), ("mid", "old")]


def cpu_name() -> str:
    return detect_cpu().model


def hogs(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(n)]


def stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        p.kill()
        p.wait()


def command(policy: str, flags: list[str], out: Path) -> list[str]:
    args = ["train", *flags, "--log-every", "0", "--out", str(out)]
    if POLICIES[policy] is None:
        return [sys.executable, "-c", OLD, *args]
    return [sys.executable, "-m", "lenet", *args, *POLICIES[policy]]


def run(scenario: str, policy: str, flags: list[str], folder: Path) -> dict:
    """One training beside `scenario`'s load: its log lines, per-epoch metrics and wall time."""
    out = folder / f"{scenario}-{policy}"
    load = os.getloadavg()[0]
    started = hogs(2) if scenario == "burst" else hogs(1) if scenario == "hold" else []
    t0 = time.perf_counter()
    proc = subprocess.Popen(command(policy, flags, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if scenario == "burst":
        threading.Timer(2.0, stop, [started]).start()
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if scenario == "mid" and line.startswith("Epoch 1/"):
            first = float(line.rsplit(",", 1)[1].split()[0])  # "Epoch 1/4: ..., 1.9 s"
            threading.Timer(first / 2, lambda: started.extend(hogs(1))).start()
    proc.wait()
    wall = time.perf_counter() - t0
    time.sleep(0.1)  # a mid-run timer that fired late
    stop(started)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {"scenario": scenario, "policy": policy, "wall_s": wall, "rc": proc.returncode, "load_before": load,
            "images_per_s": throughput(rows), "from_epoch3": throughput(rows[2:]),
            "epochs": [{k: r.get(k) for k in ("images_per_s", "seconds", "threads", "thread_switches")} for r in rows],
            "thread_lines": [x for x in lines if x.startswith("threads")]}


def throughput(rows: list[dict]) -> float | None:
    seconds = sum(r["seconds"] for r in rows)
    return sum(r["images_per_s"] * r["seconds"] for r in rows) / seconds if seconds else None


def report(recipe: str, results: list[dict]) -> None:
    print(f"\n{recipe}: {' '.join(RECIPES[recipe])}")
    for r in results:
        epochs = " ".join(f"{e['images_per_s'] / 1000:.1f}k@{e['threads']}" for e in r["epochs"])
        print(f"  {r['scenario']:5} {r['policy']:8} {r['images_per_s']:>8,.0f} images/s  epoch 3+ "
              f"{r['from_epoch3'] or 0:>8,.0f}  wall {r['wall_s']:5.1f} s  load {r['load_before']:.2f}  [{epochs}]")
        for line in r["thread_lines"]:
            print(f"        {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=sorted(RECIPES))
    args = parser.parse_args()
    info = {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)), "loadavg_before": os.getloadavg(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "recipes": {}}
    print(f"{info['cpu']}, {info['cores']} cores, load average before {info['loadavg_before']}")
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in [args.only] if args.only else list(RECIPES):
            results = [run(s, p, RECIPES[recipe], Path(tmp) / recipe) for s, p in PLAN]
            info["recipes"][recipe] = {"flags": RECIPES[recipe], "runs": results}
            report(recipe, results)
    info["loadavg_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
