"""What a run trains with, built once from its config: the data on the device, the network and the module
that computes its training forward passes, the loss, the optimizer and the step counts.

The speed tricks are the ones that measurably pay (benchmarks/README.md): the dataset lives on the device
as one uint8 tensor, batches are drawn by indexing a shuffled permutation, channels-last layout on CPU,
the matrix-product form where it pays, torch.compile on request.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..augment import Augmentation, get_augmentation
from ..data import Dataset, Split, load_dataset
from ..errors import ConfigError
from ..inference import precision_context
from ..losses import LossFn, get_loss
from ..models import get_model, matmul_form
from ..optim import build_optimizer
from .config import TrainConfig, split_problems


def training_network(model: nn.Module, device: torch.device, kernels: str, precision: str,
                     batch_size: int, compiled: bool = False) -> nn.Module:
    """The module that computes training forward passes: `model` itself, or its matrix-product form.

    "auto" picks the matrix-product form where it measured faster (benchmarks/README.md, 2026-12-05): CPU,
    bf16, batches of 128 or more (+19% at 128, +43% at 256). At 64 its extra operator calls cost what its
    products save (a tie), fp32 cannot use the matrix units (-21% at 64), and compiled it ran at 32k images/s
    against 60k eager."""
    pays = device.type == "cpu" and precision == "bf16" and batch_size >= 128 and not compiled
    if kernels == "conv" or (kernels == "auto" and not pays):
        return model
    form = matmul_form(model)
    if form is not None:
        return form
    if kernels == "matmul":
        raise ConfigError(f"--kernels matmul: network {getattr(model, 'model_name', type(model).__name__)!r} has "
                          "no matrix-product form (seed has one); use --kernels conv or auto")
    return model


def build_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """torch's moving-average copy of `model` with `decay` per step, batch-norm statistics averaged too (they
    belong to the averaged weights, not the raw ones); None when `decay` is 0."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """torch.compile for training: on CUDA with CUDA graphs (one replay per step instead of ~40 kernel
    launches), elsewhere inductor's fused C++/OpenMP kernels. Shapes are static: one compile per batch size."""
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(model, mode=mode, dynamic=False)


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The order of the training images in `epoch`: one generator per (seed, epoch), so the order of every
    epoch is fixed by the config alone and a resumed run sees exactly the batches an uninterrupted one would."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)
    return torch.randperm(n, generator=generator).to(device)


def augmentation_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The generator the augmentation of `epoch` draws from, fixed by the config like the batch order."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + epoch + 7) % 2**64)


@dataclass(frozen=True)
class Engine:
    """Everything a training step needs, built once per run by `build_engine`."""

    cfg: TrainConfig
    device: torch.device
    data: Dataset
    train: Split  # the training split, resident on the device
    model: nn.Module
    loss_fn: LossFn
    augmentation: Augmentation | None
    optimizer: torch.optim.Optimizer
    train_net: nn.Module  # `model` or its matrix-product form; shares `model`'s parameters
    step_model: nn.Module  # `train_net`, compiled with --compile
    raw_pixels: bool  # batches go in as the resident uint8 images (the matrix-product form reads them)
    channels_last: bool
    autocast: Callable[[], AbstractContextManager]
    ema: AveragedModel | None = None  # the moving average of `model` (--ema), evaluated and saved instead
    command: str | None = None  # what started the run, for the run folder's record

    @property
    def eval_model(self) -> nn.Module:
        """What validation, test and the saved weights use: the moving average with --ema, else the network."""
        return self.model if self.ema is None else self.ema.module

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.cfg.batch_size)  # the last, smaller batch is kept (tutorial)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs

    @property
    def warmup_steps(self) -> int:
        return round(self.cfg.warmup_epochs * self.steps_per_epoch)

    @property
    def cuda_graphs(self) -> bool:
        return self.cfg.compile and self.device.type == "cuda"


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The builder arguments `cfg` sets (the network's own defaults for the rest)."""
    given = {"init": cfg.init, "digit_width": cfg.digit_width}
    return {name: value for name, value in given.items() if value is not None}


def build_engine(cfg: TrainConfig, device: torch.device, command: str | None = None) -> Engine:
    """Data, network, loss, optimizer and training network of `cfg`, in the order that fixes what the
    seeded global RNG draws (the network's initial weights come first)."""
    channels_last = device.type == "cpu"  # measured: +10-20% images/s for these convs on CPU
    data = load_dataset(cfg.dataset, cfg.data_root, cfg.val_size, cfg.seed if cfg.val_seed is None else cfg.val_seed)
    train = data.train.to(device)
    problems = split_problems(cfg, len(train) + cfg.val_size)
    if problems:
        raise ConfigError(problems[0])
    if cfg.train_size:
        train = Split(train.images[:cfg.train_size], train.labels[:cfg.train_size])
    model = get_model(cfg.model, **model_kwargs(cfg)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = get_loss(cfg.loss, label_smoothing=cfg.label_smoothing, map_j=cfg.map_j, **cfg.extra)
    augmentation = get_augmentation(cfg.augment)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, betas=cfg.betas,
                                device=device)
    # The compiled network shares its parameters with `model`; only full batches go through it, so the
    # last, smaller batch of an epoch runs eagerly instead of triggering a second compile.
    train_net = training_network(model, device, cfg.kernels, cfg.precision, cfg.batch_size, cfg.compile)
    step_model = compile_model(train_net, device) if cfg.compile else train_net
    ema = build_ema(model, cfg.ema)
    return Engine(cfg=cfg, device=device, data=data, train=train, model=model, loss_fn=loss_fn, ema=ema,
                  augmentation=augmentation, optimizer=optimizer, train_net=train_net, step_model=step_model,
                  # the matrix-product form reads the uint8 images itself (no float copy); augmentations need floats
                  raw_pixels=train_net is not model and augmentation is None,
                  channels_last=channels_last, autocast=precision_context(device, cfg.precision), command=command)
