"""Running a trained network: the input contract every network honours, devices, batched prediction and
evaluation. Training, prediction on image files, export, viz and serve all go through here, so the
contract lives in one place:

    input   float32 (N, 1, 28, 28), MNIST pixels / 255 (background 0, ink 1), made by `to_input`
    output  (N, 10) scores, higher = more likely
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import hardware
from .data import Split
from .errors import ConfigError
from .shipped_onnx import NUM_CLASSES, SIDE  # defined where torch-free code (predict's ONNX path) reads them


def pick_device(name: str = "auto") -> torch.device:
    """A torch device by name; "auto" is CUDA, else Apple's MPS, else the CPU."""
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
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {name!r}; available: auto, cpu, cuda, mps")
    return torch.device(name)


def to_input(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]: the input contract of every network."""
    x = images.unsqueeze(1).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def native_precision(device: torch.device) -> str:
    """What `--precision auto` means on `device`: bf16 where it measurably pays, else fp32.

    CUDA: bf16. A CPU with AMX: bf16, about 2x fp32 (benchmarks/README.md). A CPU without: fp32. With
    AVX512-BF16 alone, bf16 trained no faster than fp32 (issue #16's bench, AMD EPYC Zen 5); with neither (AMD
    Zen 3, Intel before Cooper Lake) it is emulated: 650 against 31 ms per batch-512 step of `seed` on an AMD EPYC
    Zen 3 (2026-12-07). Apple's MPS: fp32 (not measured)."""
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and hardware.bf16_matmul_unit(hardware.cpu_flags()) == "amx":
        return "bf16"
    return "fp32"


def resolve_precision(precision: str, device: torch.device) -> str:
    """`precision` with "auto" replaced by `native_precision(device)`."""
    return native_precision(device) if precision == "auto" else precision


def emulated_bf16_warning(precision: str, device: torch.device) -> str | None:
    """A warning when bf16 is asked for on a CPU that only emulates it (about 20x slower than fp32), else None."""
    if precision != "bf16" or device.type != "cpu" or hardware.bf16_matmul_unit(hardware.cpu_flags()) != "emulated":
        return None
    return ("warning: --precision bf16 on a CPU without AMX or AVX512-BF16: bf16 is emulated here, about 20x slower "
            "than fp32; --precision auto (or fp32) trains at full speed")


def precision_context(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the autocast context for `precision` ("fp32": no autocast)."""
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# Test-time augmentation: the image as given and moved by one pixel each way; their probabilities averaged.
TTA_SHIFTS = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0))


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`x` (N, C, H, W) moved by (dy, dx) pixels, blank (0) where the move uncovers the frame."""
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    return padded[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


def tta_scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Log of the mean class probabilities over the TTA_SHIFTS views of `x`: scores whose argmax is the
    averaged prediction."""
    probs = torch.stack([model(shifted(x, dy, dx)).float().softmax(1) for dy, dx in TTA_SHIFTS])
    return probs.mean(0).log()


@torch.inference_mode()
def scores_in_chunks(model: nn.Module, images: torch.Tensor, batch_size: int | None = None,
                     precision: str = "fp32", channels_last: bool | None = None, tta: bool = False) -> torch.Tensor:
    """Scores (N, 10) of uint8 (N, 28, 28) images, on the model's device, in eval mode; with `tta`, those of
    `tta_scores` (five views per image, reported beside the plain number, never instead of it).

    On CPU, chunks of 1024 keep the activations in cache: 1.5x the images/s of one 10,000-image call
    (benchmarks/README.md). `precision="bf16"` is another ~2x on AMX CPUs, at the cost of rare flips
    between near-tied classes, so evaluation stays fp32. `channels_last` (default: on CPU) is the layout the
    trainer uses; it may move scores in their last bits, never by more."""
    device = model_device(model)
    channels_last = device.type == "cpu" if channels_last is None else channels_last
    batch_size = batch_size or (1024 if device.type == "cpu" else 10000)
    autocast = precision_context(device, precision)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, len(images), batch_size):
            x = to_input(images[start:start + batch_size].to(device), channels_last)
            with autocast():
                chunks.append(tta_scores(model, x) if tta else model(x).float())
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, NUM_CLASSES, device=device)


def probabilities(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, 10), float32 on the CPU, for uint8 (N, 28, 28) MNIST-style images."""
    if images.dtype != torch.uint8 or images.ndim != 3 or tuple(images.shape[1:]) != (SIDE, SIDE):
        raise ValueError(f"expected uint8 images of shape (N, 28, 28), got {images.dtype} {tuple(images.shape)}")
    return torch.softmax(scores_in_chunks(model, images, channels_last=False), dim=1).cpu()


def predict_split(model: nn.Module, split: Split, batch_size: int | None = None,
                  precision: str = "fp32", tta: bool = False) -> torch.Tensor:
    """Predicted class of every image of `split` (with `tta`: from the averaged views, `tta_scores`)."""
    return scores_in_chunks(model, split.images, batch_size, precision, tta=tta).argmax(1)


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # percent
    per_class: list[float]  # percent, class 0..9
    confusion: list[list[int]]  # confusion[true][predicted]
    count: int
    predictions: torch.Tensor | None = None

    @property
    def errors(self) -> int:
        return self.count - round(self.accuracy * self.count / 100)

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "errors": self.errors, "count": self.count,
                "per_class_accuracy": self.per_class, "confusion_matrix": self.confusion}


def evaluate(model: nn.Module, split: Split, num_classes: int = NUM_CLASSES, tta: bool = False) -> EvalResult:
    """Accuracy, per-class accuracy and confusion matrix of `model` on `split` (`tta`: see `tta_scores`)."""
    predictions = predict_split(model, split, tta=tta).cpu()
    labels = split.labels.cpu()
    confusion = torch.bincount(labels * num_classes + predictions, minlength=num_classes ** 2)
    confusion = confusion.reshape(num_classes, num_classes)
    per_class = (confusion.diag() / confusion.sum(1).clamp(min=1) * 100).tolist()
    accuracy = (predictions == labels).float().mean().item() * 100
    return EvalResult(accuracy, per_class, confusion.tolist(), len(labels), predictions)
