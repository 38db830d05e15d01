"""`lenet summary`: the layer table of a network, as the paper tabulates LeNet-5. Builds its parser from the
torch-free `lenet.models`; torch is imported only to build the network."""

from __future__ import annotations

import argparse

from ..models import list_models


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "summary", help="print a network's layer table (output shapes, parameters, connections)",
        description="Print a network's layers with output shape, trainable parameters and connections "
                    "(multiply-adds, counted as the 1998 paper does).",
        epilog="examples:\n  lenet summary seed\n  lenet summary --list",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="seed", metavar="MODEL",
                   help=f"registered network: {', '.join(list_models())} (default seed)")
    p.add_argument("--list", action="store_true", help="list the registered networks and exit")
    p.set_defaults(run=run_summary)


def run_summary(args: argparse.Namespace) -> int:
    from ..models import format_table, get_model, model_entry

    if args.list:
        for name in list_models():
            print(f"{name:<10} {model_entry(name).description}")
        return 0
    entry = model_entry(args.model)
    print(format_table(get_model(args.model), title=f"{entry.name}: {entry.description}"))
    return 0
