"""`lenet bench`: training throughput of the tutorial's pipeline vs lenet's engine, inference speed."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="measure training speed (tutorial pipeline vs lenet) and inference speed",
        description="Train the `seed` network with the tutorial's pipeline (torchvision + DataLoader, batch 64, "
                    "fp32) and with lenet's engine, side by side in this process; print images/s of each, their "
                    "ratio, inference images/s and single-image latency. Medians of several repetitions, warm-up "
                    "excluded.",
        epilog="examples:\n  lenet bench\n  lenet bench --json\n  lenet bench --compile --repeats 7",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="samples per number; the median is reported (default 5)")
    p.add_argument("--tutorial-steps", type=int, default=200, metavar="N",
                   help="tutorial steps (batch 64) per sample (default 200)")
    p.add_argument("--epochs", type=int, metavar="N",
                   help="timed lenet epochs after the warm-up epoch (default: --repeats)")
    p.add_argument("--train-size", type=int, metavar="N", help="train lenet on N images only (quick checks)")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="lenet's batch size (default 1024: the fastest that still trains to 99%%, see "
                        "benchmarks/README.md)")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"], help="lenet's precision (default bf16)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile lenet's network (its compile falls in the warm-up epoch; default off)")
    p.add_argument("--kernels", default="auto", choices=["auto", "conv", "matmul"],
                   help="lenet's training kernels (default auto: seed's matrix-product form on CPU, bf16, "
                        "batch >= 256)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    p.add_argument("--threads", type=int,
                   help="CPU threads for both sides (default: the tutorial torch's default, lenet one per idle core)")
    p.add_argument("--inference-batch", type=int, default=10000, metavar="N", help="default 10000")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    import json

    from ..bench import format_result, run_bench
    from ..errors import ConfigError

    for name in ("repeats", "tutorial_steps", "epochs", "train_size", "batch_size", "threads", "inference_batch"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    result = run_bench(repeats=args.repeats, tutorial_steps=args.tutorial_steps, epochs=args.epochs,
                       train_size=args.train_size, batch_size=args.batch_size, precision=args.precision,
                       compile=args.compile, kernels=args.kernels, device=args.device, threads=args.threads,
                       inference_batch=args.inference_batch)
    print(json.dumps(result.to_dict()) if args.json else format_result(result))
    return 0
