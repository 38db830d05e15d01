"""The public API, one function per CLI command that trains, loads or evaluates. `lenet/__init__.py`
exposes these lazily, so `import lenet` stays cheap until one is called."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .committee import build, check_out, shared_dataset
from .data import load_dataset
from .inference import EvalResult, pick_device
from .inference import evaluate as _evaluate
from .predict import NumberReading, as_image
from .predict import read_number as _read_number
from .trainer import TrainResult, run_training
from .weights import load_network, read_record


def train(*, recipe: str | None = None, resume: str | os.PathLike | None = None,
          progress_bar: bool | None = False, command: str | None = None, overwrite: bool = False,
          **options: Any) -> TrainResult:
    """Train a network; keyword options are `TrainConfig` fields (model, epochs, lr, out, ...).

    With `resume=DIR`, continue the run saved in DIR (only `epochs` and how it runs may change: threads,
    device, ...). A run folder `out` that already holds a run is refused (CheckpointError) unless
    `overwrite=True` replaces it. Process-wide torch state that training changes (threads, seed,
    deterministic mode) is restored afterwards. `command` is what the run folder's record names as the
    command that made it (default: this call, written out)."""
    return run_training(recipe=recipe, resume=resume, progress_bar=progress_bar, command=command,
                        overwrite=overwrite, **options)


def load(source: str | os.PathLike, device: str | torch.device = "cpu", model: str | None = None) -> nn.Module:
    """A trained network, ready for inference, its weights' SHA-256 checked.

    `source` is a registered network's name for the weights shipped with lenet (`lenet.load("classic")`),
    or a path: a run folder written by `lenet train --out`, its `model.safetensors`, or a committee folder
    (`lenet committee build`: every member's hash checked). A name never means a path: write `./seed` for a
    folder called seed. `device`: "cpu", "cuda", "mps", "auto" (the GPU if there is one) or a torch.device.
    With `model`, refuse a network of any other kind."""
    device = device if isinstance(device, torch.device) else pick_device(device)
    return load_network(source, device=device, expected_model=model)


def build_committee(out: str | os.PathLike, members: list[str | os.PathLike], *, data_root: str | None = None,
                    description: str = "", overwrite: bool = False, command: str | None = None) -> nn.Module:
    """Make the committee folder `out` from trained networks (names, run folders or weights files): one
    network whose probabilities are the mean of its members'. Each member's copy is hash-checked, and the
    committee and every member are measured on the test set of their shared dataset (`lenet committee build`)."""
    members = _member_list(members)
    check_out(out, overwrite, "out")
    records = [read_record(m) for m in members]
    sources = [str(m) for m in members]
    test = load_dataset(shared_dataset(records, sources), data_root).test
    command = command or f"lenet.build_committee({str(out)!r}, {sources!r})"
    return build(out, records, test, sources=sources, command=command, description=description,
                 overwrite=overwrite).committee


def _member_list(members: Any) -> list[str | os.PathLike]:
    """`members` as a list of names or paths; one path alone (not in a list), or anything else, is refused."""
    if isinstance(members, (str, os.PathLike)) or not isinstance(members, Iterable):
        raise TypeError(f"members must be a list of names, run folders or weights files, got {members!r}")
    members = list(members)
    if not members or not all(isinstance(m, (str, os.PathLike)) for m in members):
        raise TypeError(f"members must be a non-empty list of names, run folders or weights files, got {members!r}")
    return members


def evaluate(model: nn.Module | str | os.PathLike, dataset: str = "mnist", data_root: str | None = None,
             device: str = "auto") -> EvalResult:
    """Test-set accuracy, per-class accuracy and confusion matrix of a network, a name or a path."""
    if isinstance(model, (str, os.PathLike)):
        model = load(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a network, a name or a path, got {type(model).__name__}")
    model = model.to(pick_device(device))
    return _evaluate(model, load_dataset(dataset, data_root).test)


def read_number(image: str | os.PathLike | bytes | Any, model: nn.Module | str | os.PathLike = "seed"
                ) -> NumberReading:
    """The number written in a photo or scan, left to right: `.number` ("2026") and per digit its
    prediction, probabilities, box in the image and the 28x28 the network saw (`lenet predict --number`).

    `image` is a file path, the file's bytes, a PIL image or a uint8 numpy array ((H, W), (H, W, 3) or
    (H, W, 4)); `model` a network, a name or a run folder."""
    if isinstance(model, (str, os.PathLike)):
        model = load(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a network, a name or a run folder, got {type(model).__name__}")
    return _read_number(model, as_image(image))
