"""Training throughput of two versions of lenet side by side: `fit()` in fresh processes, alternating.

    git worktree add /tmp/before <commit>          # the version to compare against
    python benchmarks/engine_compare.py /tmp/before . [--batch-size 1024] [--threads 2] [--rounds 3]

Each round runs one process per source tree, in turn; each process runs that tree's own `lenet.bench.bench_lenet`
(`seed` on all 60,000 images, bf16, --kernels auto, threads pinned: a warm-up epoch, then --epochs timed ones).
Prints the median images/s per tree over all rounds, and the ratio. Alternating in one sitting is what makes
the ratio honest on a VM whose speed drifts over minutes (benchmarks/README.md)."""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys
from lenet.bench import bench_lenet
batch, threads, epochs = map(int, sys.argv[1:4])
print(json.dumps(bench_lenet(epochs, None, batch_size=batch, precision="bf16", threads=threads)[0]))
"""


def epochs_of(tree: Path, args: argparse.Namespace) -> list[float]:
    """Images/s of each timed epoch of one fresh process importing lenet from `tree`/src."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve() / "src")}
    argv = [sys.executable, "-c", CHILD, str(args.batch_size), str(args.threads), str(args.epochs)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs=2, type=Path, help="two source trees (each holding src/lenet)")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per process, after a warm-up epoch")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for tree in args.trees:
        if not (tree / "src" / "lenet").is_dir():
            ap.error(f"{tree} holds no src/lenet: pass a checkout of lenet (e.g. a git worktree)")
    samples: list[list[float]] = [[] for _ in args.trees]  # by position: the same tree may be passed twice
    for _ in range(args.rounds):
        for tree, kept in zip(args.trees, samples, strict=True):
            kept += epochs_of(tree, args)
    medians = [statistics.median(kept) for kept in samples]
    for tree, kept, median in zip(args.trees, samples, medians, strict=True):
        print(f"{tree}: median {median:,.0f} images/s over {len(kept)} epochs "
              f"(min {min(kept):,.0f}, max {max(kept):,.0f})")
    print(f"batch {args.batch_size}, {args.threads} thread(s): second / first = {medians[1] / medians[0]:.3f}")


if __name__ == "__main__":
    main()
