"""`lenet bench`: training throughput of the tutorial's pipeline vs lenet's engine, inference speed."""

from __future__ import annotations

import argparse

from .flags import add_train_arguments, train_options

# lenet's side runs at the engine's best settings, not `lenet train`'s defaults: batch 1024 is the fastest
# that still trains to 99% (benchmarks/README.md), and bf16 where the CPU's matrix units (AMX) compute it.
ENGINE_DEFAULTS = {"batch_size": 1024, "precision": "auto", "compile": False, "kernels": "auto", "device": "auto"}
ENGINE_FLAGS = [*ENGINE_DEFAULTS, "threads"]  # `--epochs` is bench's own: timed epochs
# train's text speaks of --deterministic, which bench has not; here the flag also sets the tutorial's threads
ENGINE_HELPS = {"threads": "CPU threads of both sides, pinned; default: the tutorial runs at torch's default "
                           "count, as its script does, and lenet's engine adapts its count during the run by "
                           "timing its steps at 1..cores threads (the output gives both counts)"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="measure training speed (tutorial pipeline vs lenet) and inference speed",
        description="Train the `seed` network with the tutorial's pipeline (torchvision + DataLoader, batch 64, "
                    "fp32) and with lenet's engine, side by side in this process; print images/s of each, their "
                    "ratio, inference images/s and single-image latency. Medians of several repetitions, warm-up "
                    "excluded. Then against the hardware: FLOPs per training image (counted from the network), "
                    "lenet's achieved GFLOP/s and its fraction of the CPU's fp32 peak (cores x clock x FMA units "
                    "x lanes x 2, each detected from /proc/cpuinfo, /sys and the affinity mask; the output says "
                    "how).",
        epilog="examples:\n  lenet bench\n  lenet bench --json\n  lenet bench --compile --repeats 7",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="samples per number; the median is reported (default 5)")
    p.add_argument("--tutorial-steps", type=int, default=200, metavar="N",
                   help="tutorial steps (batch 64) per sample (default 200)")
    p.add_argument("--epochs", type=int, metavar="N",
                   help="timed lenet epochs after the warm-up epoch (default: --repeats)")
    p.add_argument("--train-size", type=int, metavar="N", help="train lenet on N images only (quick checks)")
    engine = p.add_argument_group("lenet's engine (the flags of `lenet train`; --threads applies to both sides)")
    add_train_arguments(engine, ENGINE_FLAGS, defaults=ENGINE_DEFAULTS, helps=ENGINE_HELPS)
    p.add_argument("--inference-batch", type=int, default=10000, metavar="N", help="default 10000")
    cpu = p.add_argument_group("the CPU's peak (detected; these override)")
    cpu.add_argument("--fma-units", type=int, metavar="N",
                     help="FMA units per core (default: a table by CPU vendor/family; env LENET_FMA_UNITS)")
    cpu.add_argument("--cpu-ghz", type=float, metavar="GHZ",
                     help="clock in GHz (default: cpufreq's maximum, else /proc/cpuinfo's 'cpu MHz'; "
                          "env LENET_CPU_GHZ)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    import json

    from ..bench import format_result, run_bench
    from ..trainer.config import check_run, make_config

    _check_counts(args)
    engine = train_options(args, ENGINE_FLAGS)
    check_run(make_config(**engine))  # every bad engine flag in one line, before the minutes of measuring start
    result = run_bench(repeats=args.repeats, tutorial_steps=args.tutorial_steps, epochs=args.epochs,
                       train_size=args.train_size, inference_batch=args.inference_batch,
                       fma_units=args.fma_units, cpu_ghz=args.cpu_ghz, **engine)
    print(json.dumps(result.to_dict()) if args.json else format_result(result))
    return 0


def _check_counts(args: argparse.Namespace) -> None:
    """ConfigError for a count that is not positive, or a --cpu-ghz that is not a finite positive number."""
    import math

    from ..errors import ConfigError

    for name in ("repeats", "tutorial_steps", "epochs", "train_size", "inference_batch", "fma_units"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    # `not ... > 0`, not `<= 0`: NaN fails every comparison and must be refused like 0
    if args.cpu_ghz is not None and not (args.cpu_ghz > 0 and math.isfinite(args.cpu_ghz)):
        raise ConfigError(f"--cpu-ghz must be a finite positive number, got {args.cpu_ghz}")
