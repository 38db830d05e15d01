"""`lenet train`: train a network; the defaults are the tutorial's recipe."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a network on MNIST (defaults: the tutorial's LeNet-5 and recipe)",
        description="Train a network. With no options this is the tutorial's recipe: LeNet-5 'seed', Adam 1e-3, "
                    "batch 64, 10 epochs on MNIST, ending with 'Test Accuracy: xx.xx%'; the learning rate decays "
                    "along a cosine (the tutorial keeps it constant: --recipe tutorial runs it exactly).",
        epilog="examples:\n  lenet train\n  lenet train --recipe fast --out runs/fast\n"
               "  lenet train --model classic --recipe paper --out runs/paper\n  lenet train --resume runs/paper",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to train")
    what.add_argument("--recipe", help="named set of defaults: tutorial, fast, paper (flags still override)")
    what.add_argument("--model", help="registered network (see `lenet summary --list`); default seed")
    what.add_argument("--dataset", help="mnist (shipped), fashionmnist, kmnist, qmnist, emnist-digits")
    what.add_argument("--data-root", metavar="DIR", help="torchvision-layout folder with DATASET/raw/")
    what.add_argument("--val-size", type=int, metavar="N", help="hold out N training images for validation")
    how = p.add_argument_group("how")
    how.add_argument("--epochs", type=int, help="passes over the training set (default 10)")
    how.add_argument("--batch-size", type=int, help="default 64")
    how.add_argument("--lr", type=float, help="(peak) learning rate, default 1e-3")
    how.add_argument("--optimizer", help="adam (default), adamw, sgd")
    how.add_argument("--momentum", type=float, help="sgd momentum, default 0.9")
    how.add_argument("--nesterov", action="store_true", default=None, help="sgd with Nesterov momentum")
    how.add_argument("--schedule", help="constant (the tutorial's), step, cosine (default), onecycle")
    how.add_argument("--warmup-epochs", type=float, help="linear learning-rate warm-up, in epochs")
    how.add_argument("--weight-decay", type=float, help="default 0")
    how.add_argument("--augment", help="batched on-device augmentation: none (default), affine, shift")
    how.add_argument("--distort", action="store_true",
                     help="the paper's random planar affine distortions (= --augment affine)")
    how.add_argument("--loss", help="cross_entropy (default for seed)")
    how.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing, default 0")
    how.add_argument("--map-j", type=float, help="j of the MAP loss (model classic), default 10")
    how.add_argument("--init", help="weight initialisation where the network offers one (classic: paper = "
                                    "+-2.4/F_i as printed, lecun-uniform = variance 1/F_i, the recipe paper's)")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, help="random seed, default 0")
    run.add_argument("--deterministic", action="store_true", default=None,
                     help="bit-reproducible (same machine and thread count)")
    run.add_argument("--device", help="auto (default), cpu, cuda, mps")
    run.add_argument("--threads", type=int, help="CPU threads (default: one per idle core)")
    run.add_argument("--precision", help="fp32 (default) or bf16 (autocast; AMX/AVX512-BF16 CPUs and GPUs)")
    run.add_argument("--kernels", help="how training computes the network: auto (default), conv (PyTorch's "
                                       "convolutions), matmul (seed's matrix-product form; auto uses it on CPU, bf16, "
                                       "batch >= 256)")
    run.add_argument("--compile", action="store_true", default=None,
                     help="torch.compile the network (one-off compile cost; CUDA graphs on GPU)")
    run.add_argument("--log-every", type=int, metavar="STEPS",
                     help="loss line every STEPS steps (default 100; 0 = off)")
    run.add_argument("--out", metavar="DIR", help="write config.json, metrics.jsonl and the checkpoint here")
    run.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR (only --epochs may change)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    import lenet

    # Every TrainConfig field that has a flag of the same name; unset flags are None and fall through
    # to the recipe and the defaults.
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(lenet.TrainConfig) if hasattr(args, f.name)}
    options.pop("recipe", None)
    if args.distort:
        if options.get("augment") not in (None, "affine"):
            raise lenet.ConfigError(f"--distort is --augment affine; it cannot be combined with --augment "
                                    f"{options['augment']}")
        options["augment"] = "affine"
    progress = False if args.no_progress else None
    lenet.train(recipe=args.recipe, resume=args.resume, progress_bar=progress, **options)
    return 0
