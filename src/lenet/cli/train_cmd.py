"""`lenet train`: train a network; the defaults are the tutorial's recipe with a cosine decay."""

from __future__ import annotations

import argparse

from .flags import add_train_arguments, train_options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a network on MNIST (defaults: the tutorial's LeNet-5 and recipe)",
        description="Train a network. With no options this is the tutorial's recipe: LeNet-5 'seed', Adam 1e-3, "
                    "batch 64, 10 epochs on MNIST, ending with 'Test Accuracy: xx.xx%'; the learning rate decays "
                    "along a cosine (the tutorial keeps it constant: --recipe tutorial runs it exactly). "
                    "Values come from, later winning: the defaults below < the network's own < --recipe < flags "
                    "(with --resume DIR, from the run in DIR, where only --epochs and how it runs may change).",
        epilog="examples:\n  lenet train\n  lenet train --recipe fast --out runs/fast\n"
               "  lenet train --model classic --recipe paper --out runs/paper\n  lenet train --resume runs/paper\n\n"
               "A run folder belongs to one run: a second writer, or a new run in a folder that holds one, is refused "
               "(exit 2).\nSIGTERM stops the run with exit code 143; its last checkpoint is complete.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run that --out DIR holds (its files are deleted first; without this flag, "
                        "a folder holding a run is refused)")
    p.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    options = train_options(args)
    if options.get("dataset", "mnist") == "mnist" and options.get("data_root") is None:
        from ..idx import start_reading

        start_reading()  # the shipped MNIST, on a second core while torch imports (lenet.idx)
    from ..api import train

    train(**options, overwrite=args.overwrite, command=args.command_line)
    return 0
