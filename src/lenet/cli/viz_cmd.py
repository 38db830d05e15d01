"""`lenet viz`: PNG figures of a network: training curves, confusion matrix, misclassified digits,
first-layer kernels, feature maps of every layer."""

from __future__ import annotations

import argparse

from . import add_model_arguments

FIGURES = ["curves", "confusion", "misclassified", "kernels", "features"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "viz", help="draw PNG figures: curves, confusion, misclassified digits, kernels, feature maps",
        description="Draw PNG figures of a network into --out DIR: curves.png (loss and accuracy per epoch, from "
                    "the run's metrics.jsonl), confusion.png and misclassified.png (on the 10,000 MNIST test "
                    "images), kernels.png (the first convolution) and features.png (every layer's activations "
                    "for one image).",
        epilog="examples:\n  lenet viz --out figures\n  lenet viz --checkpoint runs/paper --out figures/paper\n"
               "  lenet viz --only features --image my-digit.png --out figures",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, "a folder written by `lenet train --out` (its metrics.jsonl gives the curves)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files")
    p.add_argument("--only", metavar="LIST", help=f"comma-separated subset of {','.join(FIGURES)}")
    p.add_argument("--image", metavar="FILE", help="image for the feature maps (preprocessed as `lenet predict` "
                                                   "does); default: a test digit")
    p.add_argument("--index", type=int, default=0, metavar="N", help="test digit for the feature maps (default 0)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="most misclassified digits shown (100)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import lenet
    from lenet import viz
    from lenet.errors import ConfigError
    from lenet.pretrained import WEIGHTS_DIR, load_model, metadata

    only = args.only.split(",") if args.only else FIGURES
    unknown = [f for f in only if f not in FIGURES]
    if unknown:
        raise ConfigError(f"unknown figure(s) {', '.join(unknown)} in --only; available: {', '.join(FIGURES)}")
    model = load_model(args.model, args.checkpoint)
    name = model.model_name
    source = str(args.checkpoint) if args.checkpoint else f"pretrained {name}"
    out = Path(args.out)
    test = lenet.load_dataset("mnist").test
    written = []
    evaluated = lenet.evaluate(model, device="cpu") if {"curves", "confusion"} & set(only) else None
    if "curves" in only:
        if args.checkpoint:
            folder = Path(args.checkpoint)
            history = viz.read_history(folder if folder.is_dir() else folder.parent)
        else:
            metadata(name)  # the shipped weights carry their run's history
            history = viz.read_history(WEIGHTS_DIR / f"{name}.json")
        written.append(viz.training_curves(history, out / "curves.png", title=f"{name} training ({source})",
                                           test_accuracy=evaluated.accuracy))
    if "confusion" in only:
        written.append(viz.confusion_matrix(
            evaluated.confusion, out / "confusion.png",
            title=f"{name} on the 10,000 MNIST test digits: {evaluated.accuracy:.2f}% correct"))
    if "misclassified" in only:
        written.append(viz.misclassified(model, test.images, test.labels, out / "misclassified.png", args.limit))
    if "kernels" in only:
        written.append(viz.kernels(model, out / "kernels.png"))
    if "features" in only:
        if args.image:
            from lenet.predict import open_image, preprocess

            image, label = preprocess(open_image(args.image)), Path(args.image).name
        else:
            if not 0 <= args.index < len(test):
                raise ConfigError(f"--index must be between 0 and {len(test) - 1}, got {args.index}")
            image, label = test.images[args.index], f"test digit #{args.index} (a {int(test.labels[args.index])})"
        written.append(viz.feature_maps(model, image, out / "features.png",
                                        title=f"{name}: activations of every layer for {label}"))
    for path in written:
        print(path)
    return 0
