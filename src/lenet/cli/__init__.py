"""`lenet` command line: one module per subcommand, each with `add_parser(subparsers)` and `run(args)`.

The CLI only maps flags to library calls. A `LenetError` (bad input) becomes one line on stderr and
exit code 2; anything else is a bug and keeps its traceback. Subcommand modules import torch lazily,
so `lenet --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# Display order; each NAME is implemented by the module `NAME_cmd` in this package.
COMMANDS = ["train", "eval", "summary", "predict", "viz", "export", "bench", "serve"]


def add_model_arguments(parser: argparse.ArgumentParser, checkpoint_help: str = "") -> None:
    """--model / --checkpoint, the same for every command that uses a trained network."""
    parser.add_argument("--model", help="pretrained network shipped with lenet (default seed); with --checkpoint, "
                                        "refuse a checkpoint of another network")
    parser.add_argument("--checkpoint", metavar="DIR",
                        help=checkpoint_help or "a folder written by `lenet train --out`, or its weights")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="lenet",
        description="LeNet-5 done right: train, evaluate, inspect, predict, export and serve.",
        epilog="Run `lenet COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"lenet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if importlib.util.find_spec(f"{__package__}.{name}_cmd") is not None:
            importlib.import_module(f".{name}_cmd", __package__).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from ..errors import LenetError

    try:
        return args.run(args) or 0
    except LenetError as e:
        print(f"lenet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # output piped into a reader that stopped early (`lenet eval ... | head`): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"lenet {args.command}: interrupted", file=sys.stderr)
        return 130
