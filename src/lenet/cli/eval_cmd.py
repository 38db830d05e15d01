"""`lenet eval`: test accuracy, per-class accuracy and confusion matrix of trained weights (SHA-256 checked)."""

from __future__ import annotations

import argparse
import json

from .. import shipped


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint on the test set",
        description="Evaluate a checkpoint on a test set: accuracy, per-class accuracy, confusion matrix.",
        epilog="example:\n  lenet eval runs/seed\n  lenet eval runs/seed/model.safetensors --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help=checkpoint_help())
    p.add_argument("--model", help="refuse the checkpoint unless it holds this network")
    p.add_argument("--dataset", help="default: the dataset the checkpoint was trained on")
    p.add_argument("--data-root", metavar="DIR", help="torchvision-layout folder with DATASET/raw/")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the probabilities of the image and its four one-pixel "
                        "shifts (reported beside the plain accuracy, which stays the headline)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="test (default): the test set; val: the training images the checkpoint held out with "
                        "--val-size (the same seed chose them; a committee's members must all have held out the "
                        "same ones: --val-seed), for choosing without looking at the test set")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_eval)


def checkpoint_help() -> str:
    """What CHECKPOINT accepts, the shipped names read from the weights folder (a new one is listed as shipped)."""
    names = [f"networks: {', '.join(shipped.networks())}"]
    if shipped.committees():
        names.append(f"committees: {', '.join(shipped.committees())}")
    return ("a folder written by `lenet train --out` or its model.safetensors, a committee folder (`lenet committee "
            f"build`), or the name of weights shipped with lenet ({'; '.join(names)}); a name never means a path: "
            "write ./seed for a folder called seed")


def _images(args: argparse.Namespace, record):
    """(dataset, what the images are called, the Split) that --split names."""
    from lenet.data import load_dataset
    from lenet.weights import held_out_split

    if args.split == "test":
        dataset = args.dataset or record.dataset or "mnist"
        return dataset, "test set", load_dataset(dataset, args.data_root).test
    dataset, size, seed = held_out_split(args.checkpoint)
    if args.dataset and args.dataset != dataset:
        from lenet.errors import ConfigError

        raise ConfigError(f"--dataset {args.dataset}: {args.checkpoint} held out its validation images from "
                          f"{dataset}; leave out --dataset with --split val")
    split = load_dataset(dataset, args.data_root, size, seed).val
    return dataset, f"validation split ({size:,} training images held out by seed {seed})", split


def run_eval(args: argparse.Namespace) -> int:
    from lenet.inference import evaluate, pick_device
    from lenet.weights import load_network, read_record

    record = read_record(args.checkpoint)
    dataset, called, images = _images(args, record)
    model = load_network(args.checkpoint, device=pick_device(args.device), expected_model=args.model)
    result = evaluate(model, images)
    # --tta is reported beside the plain result, never instead of it: the headline stays one view.
    averaged = evaluate(model, images, tta=True) if args.tta else None
    if args.json:
        beside = {} if averaged is None else {"tta_accuracy": averaged.accuracy, "tta_errors": averaged.errors}
        print(json.dumps({"checkpoint": str(args.checkpoint), "model": record.model, "dataset": dataset,
                          "split": args.split, "sha256": record.sha256, "tta": args.tta, **result.to_dict(),
                          **beside}))
        return 0
    print(format_report(record.model, dataset, result, called))
    if averaged is not None:
        print(f"\nwith test-time augmentation (the mean of the image and its four one-pixel shifts), beside: "
              f"{averaged.accuracy:.2f}% accuracy ({averaged.errors} errors in {averaged.count:,})")
    return 0


def format_report(model_name: str, dataset: str, result, called: str = "test set") -> str:
    errors = result.to_dict()["errors"]
    lines = [f"{model_name} on {dataset} {called}: {result.accuracy:.2f}% accuracy "
             f"({errors} errors in {result.count:,}, error rate {100 - result.accuracy:.2f}%)", "",
             "per-class accuracy:"]
    lines += [f"  {digit}: {acc:6.2f}%" for digit, acc in enumerate(result.per_class)]
    lines += ["", "confusion matrix (rows: true class, columns: predicted):",
              "      " + "".join(f"{c:>6}" for c in range(len(result.confusion)))]
    lines += [f"  {t:>2}  " + "".join(f"{v:>6}" for v in row) for t, row in enumerate(result.confusion)]
    return "\n".join(lines)
