"""`lenet` command line: one module per subcommand, each with `add_parser(subparsers)` and `run(args)`.

The CLI only maps flags to library calls. A `LenetError` (bad input) becomes one line on stderr and
exit code 2; anything else is a bug and keeps its traceback. Building the parser imports no torch (the
subcommand modules import the library inside their `run` functions; flags and choices come from the
torch-free `lenet.registry`, `lenet.models` and `lenet.trainer.config`), so `lenet --help` and
`lenet COMMAND --help` answer at once; tests/test_cli.py checks that torch stays unloaded.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import signal
import sys

from .._version import __version__

# Display order; each NAME is implemented by the module `NAME_cmd` in this package.
COMMANDS = ["train", "eval", "summary", "predict", "viz", "export", "bench", "serve", "sweep", "committee",
            "speedrun"]


def add_model_arguments(parser: argparse.ArgumentParser, checkpoint_help: str = "") -> None:
    """--model / --checkpoint, the same for every command that uses a trained network."""
    parser.add_argument("--model", help="pretrained network shipped with lenet (default seed); with --checkpoint, "
                                        "refuse a checkpoint of another network")
    parser.add_argument("--checkpoint", metavar="DIR",
                        help=checkpoint_help or "a folder written by `lenet train --out`, or its weights")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lenet",
        description="LeNet-5 done right: train, evaluate, inspect, predict, export and serve.",
        epilog="Run `lenet COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"lenet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name}_cmd", __package__).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["lenet", *argv])  # recorded by commands that write a run folder
    if args.command is None:
        parser.print_help()
        return 2
    from ..errors import LenetError, Terminated

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.run(args) or 0
    except Terminated as e:
        print(f"lenet {args.command}: terminated (SIGTERM){e.detail}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except LenetError as e:
        # one line, whatever the message holds (a path may contain a newline)
        message = str(e).replace("\n", "\\n").replace("\r", "\\r")
        print(f"lenet {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # output piped into a reader that stopped early (`lenet eval ... | head`): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"lenet {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, _frame) -> None:
    # An exception, not an exit: `finally` blocks run, so no file is left half-written.
    from ..errors import Terminated

    raise Terminated()
