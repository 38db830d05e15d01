"""`lenet summary`: the layer table of a network, as the paper tabulates LeNet-5."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "summary", help="print a network's layer table (output shapes, parameters, connections)",
        description="Print a network's layers with output shape, trainable parameters and connections "
                    "(multiply-adds, counted as the 1998 paper does).",
        epilog="examples:\n  lenet summary seed\n  lenet summary --list",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="seed", metavar="MODEL", help="registered network (default seed)")
    p.add_argument("--list", action="store_true", help="list the registered networks and exit")
    p.set_defaults(run=run_summary)


def run_summary(args: argparse.Namespace) -> int:
    from lenet.models import format_table, get_model, list_models, model_info

    if args.list:
        for name in list_models():
            print(f"{name:<10} {model_info(name).description}")
        return 0
    info = model_info(args.model)
    model = get_model(args.model)
    print(format_table(model, title=f"{info.name}: {info.description}"))
    if hasattr(model, "summary_extra"):
        print()
        print(model.summary_extra())
    return 0
