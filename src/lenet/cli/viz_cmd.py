"""`lenet viz`: PNG figures of a network: training curves, confusion matrix, misclassified digits,
first-layer kernels, feature maps of every stage, examples of the elastic distortions. Builds its parser
without importing torch."""

from __future__ import annotations

import argparse

from . import add_model_arguments

FIGURES = ["curves", "confusion", "misclassified", "kernels", "features", "elastic"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "viz", help="draw PNG figures: curves, confusion, misclassified digits, kernels, feature maps, "
                    "elastic distortions",
        description="Draw PNG figures of a network into --out DIR: curves.png (loss and accuracy per epoch, from "
                    "the run's metrics.jsonl), confusion.png and misclassified.png (on the 10,000 MNIST test "
                    "images), kernels.png (the first convolution), features.png (every stage's activations "
                    "for one image) and elastic.png (the first six training digits under five elastic "
                    "distortions each, `--augment elastic`, with the field of the first as arrows).",
        epilog="examples:\n  lenet viz --out figures\n  lenet viz --checkpoint runs/paper --out figures/paper\n"
               "  lenet viz --only features --image my-digit.png --out figures\n"
               "  lenet viz --only elastic --out figures",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, "a folder written by `lenet train --out` (its metrics.jsonl gives the curves)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files")
    p.add_argument("--only", metavar="LIST", help=f"comma-separated subset of {','.join(FIGURES)}")
    p.add_argument("--image", metavar="FILE", help="image for the feature maps (preprocessed as `lenet predict` "
                                                   "does); default: a test digit")
    p.add_argument("--index", type=int, default=0, metavar="N", help="test digit for the feature maps (default 0)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="most misclassified digits shown (100)")
    p.set_defaults(run=run)


def _network(args: argparse.Namespace):
    """The network that --model / --checkpoint name, a label for it, and a function reading its training history:
    a run folder's metrics.jsonl (written epoch by epoch), or the history in shipped weights' record."""
    from pathlib import Path

    from lenet import viz
    from lenet.weights import is_name, load_network, read_record, source_from_options

    source, expected = source_from_options(args.model, args.checkpoint)
    model = load_network(source, device="cpu", expected_model=expected)
    if is_name(source):
        return model, f"shipped {source}", lambda: viz.check_history(read_record(source).history,
                                                                     f"the record of the shipped {source} weights")
    path = Path(source)
    return model, str(path), lambda: viz.read_history(path if path.is_dir() else path.parent)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lenet import viz
    from lenet._paths import check_output_folder
    from lenet.data import load_dataset
    from lenet.errors import ConfigError
    from lenet.inference import evaluate

    only = args.only.split(",") if args.only else FIGURES
    unknown = [f for f in only if f not in FIGURES]
    if unknown:
        raise ConfigError(f"unknown figure(s) {', '.join(unknown)} in --only; available: {', '.join(FIGURES)}")
    if args.limit <= 0:  # 0 would draw an empty grid, and -5 all but the last 5 (Python's slicing)
        raise ConfigError(f"--limit must be a positive integer (the most misclassified digits shown), "
                          f"got {args.limit}")
    check_output_folder(args.out, "--out")
    model, source, history = _network(args)
    name, out, test = model.model_name, Path(args.out), load_dataset("mnist").test
    feature = _feature_image(args, test) if "features" in only else None  # a bad --index or --image: before the work
    written = []
    evaluated = evaluate(model, test) if {"curves", "confusion"} & set(only) else None
    if "curves" in only:
        written.append(viz.training_curves(history(), out / "curves.png", title=f"{name} training ({source})",
                                           test_accuracy=evaluated.accuracy))
    if "confusion" in only:
        written.append(viz.confusion_matrix(
            evaluated.confusion, out / "confusion.png",
            title=f"{name} on the 10,000 MNIST test digits: {evaluated.accuracy:.2f}% correct"))
    if "misclassified" in only:
        written.append(viz.misclassified(model, test.images, test.labels, out / "misclassified.png", args.limit))
    if "kernels" in only:
        written.append(viz.kernels(model, out / "kernels.png"))
    if feature is not None:
        image, label = feature
        written.append(viz.feature_maps(model, image, out / "features.png",
                                        title=f"{name}: activations of every stage for {label}"))
    if "elastic" in only:
        written.append(viz.elastic_examples(load_dataset("mnist").train.images[:6], out / "elastic.png"))
    for path in written:
        print(path)
    return 0


def _feature_image(args: argparse.Namespace, test):
    """The uint8 (28, 28) image for the feature maps, and how to name it in the title."""
    from pathlib import Path

    from lenet.errors import ConfigError

    if args.image:
        from lenet.predict import open_image, preprocess

        return preprocess(open_image(args.image)), Path(args.image).name
    if not 0 <= args.index < len(test):
        raise ConfigError(f"--index must be between 0 and {len(test) - 1}, got {args.index}")
    return test.images[args.index], f"test digit #{args.index} (a {int(test.labels[args.index])})"
