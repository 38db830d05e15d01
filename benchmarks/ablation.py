"""Ablation of the engine's tricks: training images/s of `lenet.trainer.fit` (the loop `lenet train` runs) for
each setting, side by side in one process, plus the tutorial's pipeline as the baseline.

    python benchmarks/ablation.py [--threads N] [--epochs 2] [--json benchmarks/results/ablation.json]

Each row: one warm-up epoch (left out; it holds the compile when compiling), then --epochs timed epochs on
the full 60,000 images; the median per-epoch images/s is reported. Rows share the process, so their ratios
hold on a busy machine even when the absolute numbers do not."""

import argparse
import json
import statistics
import time

import torch

from lenet.bench import bench_lenet, bench_tutorial
from lenet.cli.flags import add_train_arguments

ROWS = [  # (label, TrainConfig overrides)
    ("lenet, batch 64, fp32 (= `lenet train` defaults)", {"batch_size": 64}),
    ("lenet, batch 64, fp32, matmul kernels", {"batch_size": 64, "kernels": "matmul"}),
    ("lenet, batch 64, bf16, conv kernels", {"batch_size": 64, "precision": "bf16", "kernels": "conv"}),
    ("lenet, batch 64, bf16, matmul kernels", {"batch_size": 64, "precision": "bf16", "kernels": "matmul"}),
    ("lenet, batch 256, fp32", {"batch_size": 256}),
    ("lenet, batch 256, bf16, conv kernels", {"batch_size": 256, "precision": "bf16", "kernels": "conv"}),
    ("lenet, batch 256, bf16, matmul kernels (= recipe fast)",
     {"batch_size": 256, "precision": "bf16", "kernels": "matmul"}),
    ("lenet, batch 512, fp32", {"batch_size": 512}),
    ("lenet, batch 512, bf16, conv kernels", {"batch_size": 512, "precision": "bf16", "kernels": "conv"}),
    ("lenet, batch 512, bf16, matmul kernels", {"batch_size": 512, "precision": "bf16", "kernels": "matmul"}),
    ("lenet, batch 1024, bf16, conv kernels", {"batch_size": 1024, "precision": "bf16", "kernels": "conv"}),
    ("lenet, batch 1024, bf16, matmul kernels (= `lenet bench`)",
     {"batch_size": 1024, "precision": "bf16", "kernels": "matmul"}),
    ("lenet, batch 2048, bf16, matmul kernels", {"batch_size": 2048, "precision": "bf16", "kernels": "matmul"}),
    ("lenet, batch 1024, bf16, conv kernels, torch.compile",
     {"batch_size": 1024, "precision": "bf16", "compile": True}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(ap, ["threads"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row (cold compile: 20-60 s)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    tutorial = statistics.median(bench_tutorial(200, 3))
    rows.append({"setting": "tutorial pipeline (torchvision + DataLoader, batch 64, fp32)", "images_per_s": tutorial,
                 "first_epoch_s": None})
    print(f"{rows[-1]['setting']:<55} {tutorial:>9,.0f} images/s", flush=True)
    for label, options in ROWS:
        if args.no_compile and options.get("compile"):
            continue
        t0 = time.perf_counter()
        samples, first = bench_lenet(args.epochs, None, threads=args.threads, **options)
        ips = statistics.median(samples)
        rows.append({"setting": label, "options": options, "images_per_s": ips, "vs_tutorial": ips / tutorial,
                     "first_epoch_s": first, "row_seconds": time.perf_counter() - t0})
        print(f"{label:<55} {ips:>9,.0f} images/s  {ips / tutorial:4.1f}x  (first epoch {first:.1f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "threads":
                       torch.get_num_threads(), "torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
