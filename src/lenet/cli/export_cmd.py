"""`lenet export`: ONNX or TorchScript with a dynamic batch axis, checked against PyTorch on the test set."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_model_arguments


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a network to ONNX or TorchScript",
        description="Export a network to ONNX or TorchScript. Every exported file has the same contract: input "
                    "'input' float32 N x 1 x 28 x 28 (MNIST pixels / 255, ink bright), output 'scores' N x 10 "
                    "(higher = more likely); N is dynamic. The specification is written to FILE.json. Before the "
                    "file is put in place it is run on all 10,000 MNIST test images and must give PyTorch's class "
                    "for every one and scores within 1e-4.",
        epilog="examples:\n  lenet export --format onnx --out lenet-seed.onnx\n"
               "  lenet export --checkpoint runs/paper --format torchscript --out paper.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"], help="onnx or torchscript")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (its spec goes to FILE.json)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check on the MNIST test set")
    p.set_defaults(run=run)


def source_files(source: str | Path, record) -> list[Path]:
    """The files an export reads: the weights and their record, and every file of a run or committee folder."""
    from lenet.checkpoint import sidecar_path
    from lenet.weights import is_name

    files = [record.weights_path, sidecar_path(record.weights_path)]
    if not is_name(source) and Path(source).is_dir():  # a name means shipped weights, never a folder here
        files += [p for p in Path(source).rglob("*") if p.is_file()]
    return files


def run(args: argparse.Namespace) -> int:
    from lenet.data import load_dataset
    from lenet.export import check_not_a_source_file, check_target, export, spec_path
    from lenet.weights import load_network, read_record, source_from_options

    check_target(args.out, args.format)  # before the weights, the test set and the export itself
    source, expected = source_from_options(args.model, args.checkpoint)
    record = read_record(source)
    check_not_a_source_file(args.out, source_files(source, record))
    model = load_network(source, expected_model=expected)
    images = None if args.no_check else load_dataset("mnist").test.images
    spec = export(model, args.out, args.format, check_images=images,
                  source={"weights": str(source), "sha256": record.sha256})
    print(f"wrote {args.out} ({args.format}, {spec['model']}) and {spec_path(args.out)}")
    if "parity" in spec:
        parity = spec["parity"]
        ties = (f" and another of its two best for {parity['near_ties']:,} (scores within twice the tolerance)"
                if parity["near_ties"] else "")
        print(f"checked on {parity['images']:,} MNIST test images: same class as PyTorch for "
              f"{parity['same_class']:,}{ties}, max score difference {parity['max_abs_diff']:.1e} (tolerance "
              f"{parity['tolerance']:.1e})")
    return 0
