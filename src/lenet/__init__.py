"""lenet: LeNet-5 done right — the tutorial's network and the exact 1998 network, with the tools
around them. The public API mirrors the CLI:

    >>> import lenet
    >>> result = lenet.train(epochs=1)             # `lenet train --epochs 1`
    >>> model = lenet.load("runs/seed")            # a checkpoint folder
    >>> lenet.evaluate(model).accuracy             # `lenet eval runs/seed`
"""

from __future__ import annotations

import time

_IMPORT_TIME = time.perf_counter()

__version__ = "0.1.0"

import os  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from torch import nn  # noqa: E402

from . import checkpoint  # noqa: E402
from .data import load_dataset  # noqa: E402
from .errors import CheckpointError, ConfigError, DataError, LenetError  # noqa: E402
from .models import get_model, list_models  # noqa: E402
from .train import EvalResult, TrainConfig, TrainResult, fit, load_config, make_config, pick_device  # noqa: E402


def train(*, recipe: str | None = None, resume: str | os.PathLike | None = None,
          progress_bar: bool | None = False, **options: Any) -> TrainResult:
    """Train a network; keyword options are `TrainConfig` fields (model, epochs, lr, out, ...).

    With `resume=DIR`, continue the run saved in DIR (only `epochs` may change)."""
    if resume is not None:
        cfg = load_config(resume)
        extra = {k: v for k, v in options.items() if v is not None and k not in ("epochs", "out")}
        if extra:
            raise ConfigError(f"cannot change {', '.join(sorted(extra))} when resuming {resume}; "
                              "only --epochs may be raised")
        cfg.epochs = options.get("epochs") or cfg.epochs
        cfg.out = str(options.get("out") or resume)
        cfg.validate()
    else:
        cfg = make_config(recipe, **options)
    # fit() sets process-wide torch state (threads, deterministic algorithms); a notebook that calls
    # train() gets its own settings back afterwards.
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return fit(cfg, resume=resume, progress_bar=progress_bar)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def load(path: str | os.PathLike, device: str = "cpu", model: str | None = None) -> nn.Module:
    """Load a network from a checkpoint folder or weights file, ready for inference.

    A registered network's name that is not an existing path (`lenet.load("seed")`) gives the
    pretrained weights shipped with lenet. With `model`, refuse a checkpoint of any other network."""
    from .pretrained import is_shipped_name, load_pretrained

    if is_shipped_name(path):
        if model is not None and model != path:
            raise CheckpointError(f"asked for the pretrained {path!r} network but also for model {model!r}")
        return load_pretrained(path, device=device)
    return checkpoint.load_checkpoint(path, expected_model=model, device=device)


def evaluate(model: nn.Module | str | os.PathLike, dataset: str = "mnist", data_root: str | None = None,
             device: str = "auto") -> EvalResult:
    """Test-set accuracy, per-class accuracy and confusion matrix."""
    from .train import evaluate as _evaluate

    if isinstance(model, (str, Path)):
        model = load(model)
    model = model.to(pick_device(device))
    return _evaluate(model, load_dataset(dataset, data_root).test)


__all__ = ["CheckpointError", "ConfigError", "DataError", "EvalResult", "LenetError", "TrainConfig", "TrainResult",
           "evaluate", "get_model", "list_models", "load", "load_dataset", "make_config", "train", "__version__"]
