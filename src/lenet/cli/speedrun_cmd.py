"""`lenet speedrun`: time to >= 99.0 % MNIST test accuracy from process start, mean over N seeds (lenet.speedrun)."""

from __future__ import annotations

import argparse
import sys

# Passed to every child: how it runs (threads), which network, and two for quick checks of the command itself.
# Written here rather than generated (cli/flags.py): their defaults are the recipe's, not TrainConfig's.
PASSED = ["threads", "model", "train_size", "epochs"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "speedrun", help="time to >= 99.0%% test accuracy from process start, mean over seeds",
        description="Train the recipe with N seeds, one after another, each in a fresh `python -m lenet train` "
                    "process (its wall time counts from process start: interpreter, imports and data included). "
                    "Print each run's test accuracy, wall time, start-up (to the first training step; of which "
                    "imports), training time (the sum of its epochs) and evaluation (the rest), then the mean ± "
                    "sample std of each. The speedrun counts when the mean accuracy reaches --target. Run it on a "
                    "quiet machine: other processes slow the children down.",
        epilog="examples:\n  lenet speedrun\n  lenet speedrun --runs 5 --threads 1\n  lenet speedrun --json "
               "> speedrun.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10, metavar="N", help="how many seeds (default 10)")
    p.add_argument("--first-seed", type=int, default=0, metavar="S",
                   help="the first seed; the runs use S, S+1, ..., S+N-1 (default 0)")
    p.add_argument("--recipe", default="speedrun", metavar="NAME", help="the recipe every child trains "
                                                                        "(default speedrun)")
    p.add_argument("--target", type=float, default=99.0, metavar="PERCENT",
                   help="the mean test accuracy the speedrun must reach to count (default 99.0)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (the per-run lines go to stderr)")
    children = p.add_argument_group("passed to every child (default: the recipe's)")
    children.add_argument("--threads", type=int, metavar="N",
                          help="CPU threads, pinned (default: adapted during the run, as `lenet train` does)")
    children.add_argument("--model", metavar="NAME", help="the network (`lenet summary --list`)")
    quick = p.add_argument_group("quick checks of the command: they change the recipe, so what they measure is "
                                 "no speedrun of it")
    quick.add_argument("--train-size", type=int, metavar="N", help="train on the first N training images only")
    quick.add_argument("--epochs", type=int, metavar="N", help="passes over the training images")
    p.set_defaults(run=run_speedrun)


def run_speedrun(args: argparse.Namespace) -> int:
    import json

    from ..speedrun import format_header, format_run, format_summary, make_plan, run_plan

    plan = make_plan(runs=args.runs, first_seed=args.first_seed, recipe=args.recipe, target=args.target,
                     options={name: getattr(args, name) for name in PASSED})
    # with --json, stdout is the one JSON object; the progress goes to stderr
    progress = sys.stderr if args.json else sys.stdout
    print(format_header(plan), file=progress, flush=True)
    result = run_plan(plan, on_run=lambda run: print(format_run(run), file=progress, flush=True))
    print(json.dumps(result.to_dict()) if args.json else format_summary(result))
    return 0
