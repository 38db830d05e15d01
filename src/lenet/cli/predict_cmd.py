"""`lenet predict`: the digit in your own images (files, folders, globs), MNIST-style preprocessing; with
`--number`, every digit of a number written in a row."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from . import add_model_arguments

if TYPE_CHECKING:  # the parser must not import torch (tests/test_cli.py)
    from lenet.predict import NumberReading


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="predict the digit in your own images, or the number written in a photo",
        description="Predict the digit in image files (PNG, JPEG, BMP, GIF, WebP; any size; dark ink on light "
                    "or light on dark; scans, drawings and phone photos of a notebook page). Each image is "
                    "preprocessed the way MNIST was made: the page's uneven light divided out, ruled or squared "
                    "lines, the page's edge and specks removed, cropped to the ink, longest side scaled to "
                    "20 px, centred by mass in 28x28. With --number, each digit of a number written in a row is "
                    "read on its own, left to right. Files over 161 MB (4 bytes a pixel at the 40-megapixel limit) and "
                    "images over 40 megapixels are refused unread; FIFOs and devices are refused. Exit code 0 if "
                    "every image was read, 1 if some could not be, 2 for a bad option or input.",
        epilog="examples:\n  lenet predict my-digit.png\n  lenet predict scans/ 'photos/*.jpg' --top-k 3\n"
               "  lenet predict notebook.jpg --number\n"
               "  lenet predict photos/ --number --json --save-preprocessed seen/\n"
               "  lenet predict seven.png --checkpoint runs/paper",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    add_model_arguments(p)
    p.add_argument("--number", action="store_true",
                   help="read a number written in a row (2026, 132865): print it and each digit's probabilities")
    p.add_argument("--top-k", type=int, default=1, metavar="K",
                   help="show the K most likely digits (default 1; --number shows all ten)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per image: {"path", "prediction", "probabilities"}; with --number '
                        '{"path", "number", "digits": [{"prediction", "probabilities", "box": [x, y, w, h]}]}; '
                        'or {"path", "error"}')
    p.add_argument("--save-preprocessed", metavar="DIR",
                   help="write the 28x28 image the network saw (STEM.png; --number: STEM.1.png, ...) and a "
                        "debug sheet STEM.debug.png (the mask, the strokes kept, the boxes), as PNG")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, mps")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="what runs the network: onnxruntime runs a shipped network's ONNX graph on the CPU without "
                        "loading torch (a second or more sooner; needs pip install 'lenet[export]'), torch runs "
                        "any network, run folders and committees included; auto (default): onnxruntime wherever "
                        "it can")
    p.set_defaults(run=run)


RUNTIMES = ["auto", "onnxruntime", "torch"]


def run(args: argparse.Namespace) -> int:
    from lenet._paths import check_output_folder
    from lenet.errors import ConfigError
    from lenet.predict import predict_files, save_preprocessed

    if not 1 <= args.top_k <= 10:
        raise ConfigError(f"--top-k must be between 1 and 10, got {args.top_k}")
    check_inputs(args.images)
    if args.save_preprocessed:
        check_output_folder(args.save_preprocessed, "--save-preprocessed")
    model = load_reader(args)
    results = predict_files(model, args.images, number=args.number)
    if args.save_preprocessed:
        save_preprocessed(results, args.save_preprocessed)
    for result in results:
        if args.json:
            print(json.dumps(result.to_dict()), flush=True)
        elif result.error is not None:
            one_line = result.error.replace("\n", "\\n").replace("\r", "\\r")  # whatever the file's name holds
            print(f"lenet predict: error: {one_line}", file=sys.stderr)
        elif result.reading is not None:
            print(number_table(result.path, result.reading))
        else:
            top = result.top(args.top_k)
            guesses = "  ".join(f"{digit} ({p * 100:.1f}%)" for digit, p in top)
            print(f"{result.path}: {guesses}")
    return 1 if any(r.error is not None for r in results) else 0


def load_reader(args: argparse.Namespace):
    """The network that reads: the shipped graph through onnxruntime where `--runtime` allows it and it can
    (no torch import), else the torch network `--model` / `--checkpoint` names."""
    from lenet import shipped_onnx
    from lenet.errors import ConfigError

    name = args.model or shipped_onnx.DEFAULT_NETWORK
    why_not = _why_not_onnxruntime(args, name)
    if args.runtime == "onnxruntime" and why_not:
        raise ConfigError(f"--runtime onnxruntime cannot run this: {why_not}; use --runtime torch")
    if args.runtime != "torch" and not why_not:
        return shipped_onnx.load(name)
    from lenet.inference import pick_device
    from lenet.weights import load_network, source_from_options

    source, expected = source_from_options(args.model, args.checkpoint)
    return load_network(source, device=pick_device(args.device), expected_model=expected)


def _why_not_onnxruntime(args: argparse.Namespace, name: str) -> str:
    """Why the shipped graph of `name` cannot read for these options ("" when it can)."""
    import importlib.util

    from lenet import shipped_onnx
    from lenet.models import list_models

    if args.checkpoint is not None:
        return "it runs the networks shipped with lenet, not a --checkpoint"
    if args.device != "cpu":
        return f"it runs on the CPU, not --device {args.device}"
    if name not in list_models():
        return f"no ONNX graph is shipped for {name!r} (only for the networks {', '.join(list_models())})"
    if not shipped_onnx.graph_path(name).is_file():
        return f"no ONNX graph is shipped for {name!r} ({shipped_onnx.graph_path(name)} is missing)"
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install 'lenet[export]')"
    return ""


def check_inputs(images: list[str]) -> None:
    """Refuse, before any work, an input named on the command line that is neither a folder nor a regular file:
    a FIFO would block the reader forever, a device such as /dev/zero never ends. (Missing files and files that
    are not images are reported one by one, in their place in the output.)"""
    import os
    import stat

    from lenet._paths import kind_of
    from lenet.errors import ConfigError

    for image in images:
        try:
            mode = os.stat(image).st_mode
        except (OSError, ValueError):
            continue  # missing (or a glob pattern): reported in its place
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise ConfigError(f"{image} is {kind_of(mode)}, not an image file or a folder: lenet reads only "
                              "regular files")


def number_table(path: str, reading: NumberReading) -> str:
    """`PATH: NUMBER`, then one row per digit: the digit read, its box (x, y, width, height in the image's
    pixels) and the probability of each of 0-9, in percent."""
    lines = [f"{path}: {reading.number}",
             "  digit  box (x, y, w, h)      " + "".join(f"{c:>6}" for c in range(10))]
    for digit in reading.digits:
        box = ", ".join(str(v) for v in digit.box.to_list())
        lines.append(f"  {digit.prediction:>5}  {box:<22}" + "".join(f"{p * 100:6.1f}" for p in digit.probabilities))
    return "\n".join(lines)
