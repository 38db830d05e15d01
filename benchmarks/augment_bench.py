"""Images/s of the batched augmentations alone (no training), on real MNIST batches, per batch size.

    python benchmarks/augment_bench.py [--batch-sizes 64,256] [--names affine,elastic,elastic+affine]
                                       [--seconds 2] [--threads N] [--device cpu]

Each (augmentation, batch size) runs a few warm-up batches, then as many batches as fit in --seconds; the
best of three such rounds counts (the least disturbed by other processes). Prints one line per pair.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from lenet.augment import get_augmentation
from lenet.data import load_dataset
from lenet.inference import to_input


def images_per_second(name: str, x: torch.Tensor, seconds: float) -> float:
    augment, generator = get_augmentation(name), torch.Generator(device=x.device).manual_seed(0)
    for _ in range(5):
        augment(x, generator)
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            augment(x, generator)
            count += len(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--names", default="affine,elastic,elastic+affine")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = load_dataset("mnist").train.images
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.device}")
    for batch in map(int, args.batch_sizes.split(",")):
        x = to_input(images[:batch], False).to(args.device)
        for name in args.names.split(","):
            print(f"{name:>15}  batch {batch:4d}: {images_per_second(name, x, args.seconds):10,.0f} images/s")


if __name__ == "__main__":
    main()
