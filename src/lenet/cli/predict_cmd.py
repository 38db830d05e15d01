"""`lenet predict`: the digit in your own images (files, folders, globs), MNIST-style preprocessing."""

from __future__ import annotations

import argparse
import json
import sys

from . import add_model_arguments


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="predict the digit in your own images",
        description="Predict the digit in image files (PNG, JPEG, BMP, GIF, WebP; any size; dark ink on light "
                    "or light on dark). Each image is preprocessed the way MNIST was made: grey, polarity "
                    "detected, background noise removed, cropped to the ink, longest side scaled to 20 px, "
                    "centred by mass in 28x28. Exit code 0 if every image was predicted, 1 if some could not be.",
        epilog="examples:\n  lenet predict my-digit.png\n  lenet predict scans/ 'photos/*.jpg' --top-k 3\n"
               "  lenet predict digits/ --json --save-preprocessed seen/\n"
               "  lenet predict seven.png --checkpoint runs/paper",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    add_model_arguments(p)
    p.add_argument("--top-k", type=int, default=1, metavar="K", help="show the K most likely digits (default 1)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per image: {"path", "prediction", "probabilities"} or {"path", "error"}')
    p.add_argument("--save-preprocessed", metavar="DIR", help="write the 28x28 image the network saw, as PNG")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, mps")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lenet.errors import ConfigError
    from lenet.inference import pick_device
    from lenet.predict import predict_files, save_preprocessed
    from lenet.weights import load_network, source_from_options

    if not 1 <= args.top_k <= 10:
        raise ConfigError(f"--top-k must be between 1 and 10, got {args.top_k}")
    source, expected = source_from_options(args.model, args.checkpoint)
    model = load_network(source, device=pick_device(args.device), expected_model=expected)
    results = predict_files(model, args.images)
    if args.save_preprocessed:
        save_preprocessed(results, args.save_preprocessed)
    for result in results:
        if args.json:
            print(json.dumps(result.to_dict()), flush=True)
        elif result.error is not None:
            print(f"lenet predict: error: {result.error}", file=sys.stderr)
        else:
            top = result.top(args.top_k)
            guesses = "  ".join(f"{digit} ({p * 100:.1f}%)" for digit, p in top)
            print(f"{result.path}: {guesses}")
    return 1 if any(r.error is not None for r in results) else 0
