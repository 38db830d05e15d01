"""Training and evaluation: one loop, readable top to bottom.

`TrainConfig` is the single description of a run. The CLI, `lenet.train(...)` and recipes all build
one; `fit` receives it and nothing else. Defaults reproduce the tutorial (Adam 1e-3, batch 64, 10
epochs, pixels / 255), so `lenet train` with no flags is the tutorial, only faster: the dataset lives
on the device as one uint8 tensor and batches are drawn by indexing a shuffled permutation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn
from tqdm import tqdm

from . import checkpoint
from ._io import atomic_write_json, atomic_write_text
from .augment import AUGMENTATIONS, get_augmentation
from .data import DATASETS, Split, load_dataset
from .errors import ConfigError
from .losses import get_loss, list_losses
from .models import list_models, model_info
from .optim import OPTIMIZERS, SCHEDULES, build_optimizer, lr_multiplier
from .recipes import get_recipe

DEVICES = ["auto", "cpu", "cuda", "mps"]
PRECISIONS = ["fp32", "bf16"]
KERNELS = ["auto", "conv", "matmul"]


@dataclass
class TrainConfig:
    model: str = "seed"  # a registered network: `lenet summary NAME`
    dataset: str = "mnist"  # mnist (shipped), fashionmnist, kmnist, qmnist, emnist-digits
    data_root: str | None = None  # torchvision-layout folder; None = the MNIST copy shipped with lenet
    val_size: int = 0  # training images held out for model selection; the test set only reports
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3  # peak learning rate
    optimizer: str = "adam"  # adam, adamw, sgd
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw
    weight_decay: float = 0.0
    # cosine decay to 0 over the run; the tutorial keeps lr constant (recipe "tutorial"). Measured on real MNIST,
    # seeds 0-2: constant 98.80 / 98.55 / 98.97 %, cosine 99.00 / 99.05 / 98.99 % (README, "Results").
    schedule: str = "cosine"  # constant, step, cosine, onecycle
    warmup_epochs: float = 0.0  # linear warm-up, in epochs (onecycle: 0 = first 25% of the steps)
    augment: str = "none"  # batched on-device augmentation (augment.py)
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0
    map_j: float = 10.0  # the MAP loss's j (loss "map", model classic): e^{-j} caps the push on wrong classes
    # weight initialisation, where the network offers a choice (classic: "paper" = +-2.4/F_i as printed,
    # "lecun-uniform" = variance 1/F_i); None = the network's default
    init: str | None = None
    seed: int = 0
    deterministic: bool = False  # bit-reproducible runs (same machine, same thread count)
    device: str = "auto"  # auto, cpu, cuda, mps
    threads: int | None = None  # CPU threads; None = one per idle core (deterministic: torch's default)
    precision: str = "fp32"  # fp32, or bf16 autocast (AMX/AVX512-BF16 CPUs, GPUs): benchmarks/README.md
    compile: bool = False  # torch.compile the network (pays after a one-off compile; CUDA graphs on GPU)
    # How training computes the network: "conv" = PyTorch's convolution and pooling kernels; "matmul" = the
    # network's matrix-product form where it has one (seed: models/seed_matmul.py); "auto" = matmul where
    # it measurably pays (CPU, bf16, batch >= 256, not compiled), else conv. Same function and parameters.
    kernels: str = "auto"
    log_every: int = 100  # steps between the tutorial's "Epoch [e/E], Step [s/S], Loss" lines; 0 = off
    out: str | None = None  # folder for config.json, metrics.jsonl and the checkpoint
    recipe: str | None = None  # the recipe this config was built from, for the record
    extra: dict[str, Any] = field(default_factory=dict)  # options of plug-in losses/optimizers

    def validate(self) -> None:
        """Raise one ConfigError that lists every bad value."""
        problems = []
        for name, known in (("model", list_models()), ("dataset", DATASETS), ("optimizer", OPTIMIZERS),
                            ("schedule", list(SCHEDULES)), ("loss", list_losses()), ("device", DEVICES),
                            ("augment", list(AUGMENTATIONS)), ("precision", PRECISIONS),
                            ("kernels", KERNELS)):
            value = getattr(self, name)
            if value not in known:
                problems.append(f"unknown {name} {value!r} (available: {', '.join(known)})")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                problems.append(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            problems.append(f"lr must be positive, got {self.lr!r}")
        if self.threads is not None and self.threads <= 0:
            problems.append(f"threads must be a positive integer, got {self.threads!r}")
        for name in ("weight_decay", "warmup_epochs", "val_size", "log_every", "label_smoothing"):
            if getattr(self, name) < 0:
                problems.append(f"{name.replace('_', '-')} must not be negative, got {getattr(self, name)!r}")
        if self.init is not None and self.model in list_models():
            choices = model_info(self.model).init_choices
            if self.init not in choices:
                problems.append(f"unknown init {self.init!r} for model {self.model!r} "
                                f"(available: {', '.join(choices) or 'none, its initialisation is fixed'})")
        if problems:
            raise ConfigError("; ".join(problems))


def make_config(recipe: str | None = None, **options: Any) -> TrainConfig:
    """Build a config: field defaults < the model's own defaults < the recipe < `options`.

    Options that are None count as "not given", so CLI flags can default to None."""
    given = {k: v for k, v in options.items() if v is not None}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(given) - fields
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    recipe_values = get_recipe(recipe) if recipe else {}
    model = given.get("model", recipe_values.get("model", TrainConfig.model))
    model_defaults = model_info(model).train_defaults if model in list_models() else {}
    values = {**model_defaults, **recipe_values, **given, "recipe": recipe}
    for name in ("out", "data_root"):  # paths are kept as strings so the config stays JSON
        if values.get(name) is not None:
            values[name] = str(values[name])
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


# --- device and reproducibility ---------------------------------------------------------------------------

def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps asked for, but this machine has no Apple-silicon GPU; use --device cpu")
    return torch.device(name)


def _set_reproducibility(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif device.type == "cpu" and not cfg.deterministic:  # deterministic runs keep a fixed thread count
        torch.set_num_threads(auto_threads())
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def auto_threads() -> int:
    """One thread per core that no other process is using right now (at least one).

    torch's OpenMP threads meet at a barrier after every operator; when another process holds a core, every
    barrier waits for a scheduler time slice. Measured on 2 shared cores: 2 threads fell to ~1.5k images/s
    where 1 thread kept ~14k; on idle cores 2 threads give ~2x one thread (benchmarks/README.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = []
        for _ in range(5):  # /proc/loadavg's 4th field: runnable tasks right now, this one included
            busy.append(int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - 1)
            time.sleep(0.01)
    except (OSError, ValueError, IndexError):
        return torch.get_num_threads()
    return max(1, min(cores, round(cores - sum(busy) / len(busy))))


def process_seconds() -> float:
    """Seconds since this process started (Linux: from /proc, so `import torch` is counted)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        from . import _IMPORT_TIME

        return time.perf_counter() - _IMPORT_TIME


# --- batches ----------------------------------------------------------------------------------------------

def to_input(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]: the input contract of every network."""
    x = images.unsqueeze(1).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    # One generator per (seed, epoch): the order of every epoch is fixed by the config alone, so a
    # resumed run sees exactly the batches an uninterrupted one would.
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).to(device)


# --- engine: the speed tricks that measurably pay (benchmarks/README.md) ---------------------------------

_ALLOCATOR_TUNED = False


def tune_allocator(device: torch.device) -> None:
    """Keep freed activation buffers in the heap instead of returning them to the OS (glibc only).

    glibc serves blocks above its mmap threshold with fresh mmap'd pages and unmaps them on free, so every
    training step page-faults its large activations in again; at batch 512-1024 that costs 20-30% of a
    step on CPU (measured, benchmarks/README.md). Raising the thresholds is process-wide and only makes
    freed memory stay reusable."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or device.type != "cpu" or not sys.platform.startswith("linux"):
        return
    _ALLOCATOR_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 31)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        pass


def precision_context(device: torch.device, precision: str):
    """A factory of the autocast context for `precision` ("fp32": no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def training_network(model: nn.Module, device: torch.device, kernels: str, precision: str,
                     batch_size: int, compiled: bool = False) -> nn.Module:
    """The module that computes training forward passes: `model` itself, or its matrix-product form.

    "auto" picks the matrix-product form where it measured faster (benchmarks/README.md): CPU, bf16, batches
    of 256 or more (+13% at 256, +40% at 512-1024). Smaller batches pay its extra operator calls (-15% at
    64), fp32 cannot use the matrix units, and compiled it ran at 32k images/s against 60k eager."""
    has_form = hasattr(model, "as_matmuls")
    if kernels == "matmul" and not has_form:
        raise ConfigError(f"--kernels matmul: network {getattr(model, 'model_name', type(model).__name__)!r} has "
                          "no matrix-product form (seed has one); use --kernels conv or auto")
    pays = device.type == "cpu" and precision == "bf16" and batch_size >= 256 and not compiled
    if kernels == "matmul" or (kernels == "auto" and has_form and pays):
        return model.as_matmuls()
    return model


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """torch.compile for training: on CUDA with CUDA graphs (one replay per step instead of ~40 kernel
    launches), elsewhere inductor's fused C++/OpenMP kernels. Shapes are static: one compile per batch size."""
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(model, mode=mode, dynamic=False)


# --- evaluation -------------------------------------------------------------------------------------------

@dataclass
class EvalResult:
    accuracy: float  # percent
    per_class: list[float]  # percent, class 0..9
    confusion: list[list[int]]  # confusion[true][predicted]
    count: int
    predictions: torch.Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "errors": self.count - round(self.accuracy * self.count / 100),
                "count": self.count, "per_class_accuracy": self.per_class, "confusion_matrix": self.confusion}


@torch.inference_mode()
def predict_split(model: nn.Module, split: Split, batch_size: int | None = None,
                  precision: str = "fp32") -> torch.Tensor:
    """Predicted class of every image of `split`.

    On CPU, chunks of 1024 keep the activations in cache: 1.5x the images/s of one 10,000-image call
    (benchmarks/README.md). `precision="bf16"` is another ~2x on AMX CPUs, at the cost of rare flips
    between near-tied classes, so evaluation stays fp32."""
    device = next(model.parameters()).device
    batch_size = batch_size or (1024 if device.type == "cpu" else 10000)
    autocast = precision_context(device, precision)
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(split), batch_size):
        images = split.images[start:start + batch_size].to(device)
        with autocast():
            preds.append(model(to_input(images, channels_last=device.type == "cpu")).argmax(1))
    model.train(was_training)
    return torch.cat(preds)


def evaluate(model: nn.Module, split: Split, num_classes: int = 10) -> EvalResult:
    """Accuracy, per-class accuracy and confusion matrix of `model` on `split`."""
    predictions = predict_split(model, split).cpu()
    labels = split.labels.cpu()
    confusion = torch.bincount(labels * num_classes + predictions, minlength=num_classes ** 2)
    confusion = confusion.reshape(num_classes, num_classes)
    per_class = (confusion.diag() / confusion.sum(1).clamp(min=1) * 100).tolist()
    accuracy = (predictions == labels).float().mean().item() * 100
    return EvalResult(accuracy, per_class, confusion.tolist(), len(labels), predictions)


# --- training ---------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    model: nn.Module
    config: TrainConfig
    history: list[dict[str, Any]]
    test: EvalResult
    out: Path | None
    wall_seconds: float


def fit(cfg: TrainConfig, *, resume: str | os.PathLike | None = None, stream: TextIO | None = None,
        progress_bar: bool | None = None, on_epoch_end=None) -> TrainResult:
    """Train `cfg.model` on `cfg.dataset` and report test accuracy.

    With `resume`, continue the run saved in that folder. `on_epoch_end(epoch, metrics)` is called
    after each epoch's checkpoint is on disk (tests use it to interrupt a run)."""
    from .models import get_model

    stream = stream or sys.stdout
    cfg.validate()
    device = pick_device(cfg.device)
    _set_reproducibility(cfg, device)
    tune_allocator(device)
    channels_last = device.type == "cpu"  # measured: +10-20% images/s for these convs on CPU

    data = load_dataset(cfg.dataset, cfg.data_root, cfg.val_size, cfg.seed)
    train_split = data.train.to(device)
    model = get_model(cfg.model, **({"init": cfg.init} if cfg.init is not None else {})).to(device)
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
    # the matrix-product form reads the uint8 images itself (no float copy); augmentations need floats
    raw_pixels = getattr(train_net, "takes_uint8", False) and augmentation is None
    autocast = precision_context(device, cfg.precision)

    out = Path(cfg.out) if cfg.out else None
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume is not None:
        progress = checkpoint.load_training_state(resume, model, optimizer)
        start_epoch, history = progress["epoch"], progress["history"]
        print(f"Resuming {resume} after epoch {start_epoch}/{cfg.epochs}", file=stream)
    if out:
        atomic_write_json(out / "config.json", dataclasses.asdict(cfg))

    n = len(train_split)
    steps_per_epoch = math.ceil(n / cfg.batch_size)  # the last, smaller batch is kept, as in the tutorial
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    cuda_graphs = cfg.compile and device.type == "cuda"
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        order = epoch_permutation(n, cfg.seed, epoch, device)
        augment_rng = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + epoch + 7)
        if hasattr(optimizer, "prepare_epoch"):
            # e.g. SDLM re-estimates its Hessian diagonal on a sample before each pass
            sample = order[:500]
            optimizer.prepare_epoch(model, loss_fn, to_input(train_split.images[sample], channels_last),
                                    train_split.labels[sample])
        # Running sums stay on the device: reading them every step would sync host and device each step.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not progress_bar if progress_bar is not None else None, file=sys.stderr)
        t0 = time.perf_counter()
        for step in bar:
            global_step = epoch * steps_per_epoch + step
            lr = cfg.lr * lr_multiplier(cfg.schedule, global_step, total_steps, steps_per_epoch, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            y = train_split.labels[idx]
            x = train_split.images[idx] if raw_pixels else to_input(train_split.images[idx], channels_last)
            if augmentation is not None:
                x = augmentation(x, augment_rng)

            net = step_model if len(y) == cfg.batch_size else train_net
            if cuda_graphs and net is step_model:
                torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs are dead
            with autocast():
                scores = net(x)
                loss = loss_fn(scores, y)
            # read the outputs before backward: with CUDA graphs their memory is reused by the next replay
            loss_sum += loss.detach() * len(y)
            correct += (scores.detach().argmax(1) == y).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                line = (f"Epoch [{epoch + 1}/{cfg.epochs}], Step [{step + 1}/{steps_per_epoch}], "
                        f"Loss: {loss.item():.4f}")
                bar.write(line, file=stream)
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum.item() / n, "train_accuracy": correct.item() / n * 100}
        seconds = time.perf_counter() - t0  # after .item(): the device has finished the epoch
        bar.close()

        metrics.update({"images_per_s": n / seconds, "seconds": seconds, "lr": optimizer.param_groups[0]["lr"]})
        if data.val is not None:
            metrics["val_accuracy"] = evaluate(model, data.val).accuracy
        history.append(metrics)
        val = f", val acc {metrics['val_accuracy']:.2f}%" if "val_accuracy" in metrics else ""
        print(f"Epoch {epoch + 1}/{cfg.epochs}: train loss {metrics['train_loss']:.4f}, train acc "
              f"{metrics['train_accuracy']:.2f}%{val}, {metrics['images_per_s']:,.0f} images/s, {seconds:.1f} s",
              file=stream)
        if out:
            _save_epoch(out, model, optimizer, cfg, history)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, metrics)

    model.eval()
    test = evaluate(model, data.test)
    wall = process_seconds()
    print(f"Test Accuracy: {test.accuracy:.2f}%", file=stream)
    print(f"Wall time: {wall:.1f} s from process start", file=stream)
    if out:
        final = {"config": dataclasses.asdict(cfg), "epoch": cfg.epochs, "dataset": cfg.dataset,
                 "metrics": {**(history[-1] if history else {}), "test_accuracy": test.accuracy}}
        checkpoint.save_checkpoint(out, model, final)
    return TrainResult(model, cfg, history, test, out, wall)


def _save_epoch(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                history: list[dict[str, Any]]) -> None:
    epoch = history[-1]["epoch"]
    # resume state first: if we die between the two writes, resuming redoes nothing twice
    checkpoint.save_training_state(out, model, optimizer, {"epoch": epoch, "history": history})
    checkpoint.save_checkpoint(out, model, {"config": dataclasses.asdict(cfg), "epoch": epoch,
                                            "dataset": cfg.dataset, "metrics": history[-1]})
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history))


def load_config(folder: str | os.PathLike) -> TrainConfig:
    """The config a run in `folder` was started with."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: {folder} is not a lenet run folder (written by --out)")
    try:
        values = json.loads(path.read_text())
        values["betas"] = tuple(values.get("betas", TrainConfig.betas))
        cfg = TrainConfig(**values)
    except (json.JSONDecodeError, TypeError) as e:
        raise ConfigError(f"{path} is not a valid lenet config ({e})") from None
    cfg.validate()
    return cfg
