"""Pretrained weights shipped inside the package, one pair of files per registered network:

    models/weights/NAME.safetensors   a lenet checkpoint (checkpoint.py writes and reads it)
    models/weights/NAME.json          its metadata: recipe, the exact command, test accuracy,
                                      parameter count, SHA-256 of the weights, versions

`scripts/make_weights.py NAME` regenerates both with lenet's own recipes on the real MNIST. The SHA-256
is checked on every load, so a damaged or swapped file is refused instead of silently predicting junk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import file_digest
from .errors import CheckpointError
from .models import list_models

WEIGHTS_DIR = Path(__file__).parent / "models" / "weights"


def weights_path(name: str, weights_dir: str | os.PathLike | None = None) -> Path:
    return Path(weights_dir or WEIGHTS_DIR) / f"{name}.safetensors"


def metadata(name: str, weights_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The metadata shipped with the pretrained `name` network; CheckpointError if there is none."""
    folder = Path(weights_dir or WEIGHTS_DIR)
    path = folder / f"{name}.json"
    if not path.is_file() or not weights_path(name, folder).is_file():
        if name not in list_models():
            raise CheckpointError(f"unknown network {name!r}: no pretrained weights and no such model "
                                  f"(available: {', '.join(list_models())})")
        raise CheckpointError(f"no pretrained weights for {name!r} in {folder}; train them with "
                              f"`python scripts/make_weights.py {name}` or pass --checkpoint DIR")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); reinstall lenet") from None


def list_pretrained(weights_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One entry per registered network that has shipped weights: name, test accuracy, recipe, command, ..."""
    entries = []
    for name in list_models():
        try:
            meta = metadata(name, weights_dir)
        except CheckpointError:
            continue
        entries.append({"name": name, **{k: v for k, v in meta.items() if k != "name"}})
    return entries


def is_shipped_name(source: str | os.PathLike) -> bool:
    """True when `source` names a registered network rather than a file: `lenet.load("seed")`."""
    return isinstance(source, str) and source in list_models() and not Path(source).exists()


def load_pretrained(name: str, device: torch.device | str = "cpu",
                    weights_dir: str | os.PathLike | None = None) -> nn.Module:
    """The shipped network `name`, in eval mode, after checking the weights' SHA-256."""
    from .checkpoint import load_checkpoint

    meta = metadata(name, weights_dir)
    path = weights_path(name, weights_dir)
    expected = meta.get("sha256")
    actual = file_digest(path, "sha256")
    if actual != expected:
        raise CheckpointError(f"{path} does not match its recorded SHA-256 (expected {expected}, got {actual}): "
                              "the file is damaged or was replaced; reinstall lenet or regenerate it with "
                              f"`python scripts/make_weights.py {name}`")
    return load_checkpoint(path, expected_model=name, device=device)


def load_model(model: str | None = None, checkpoint: str | os.PathLike | None = None,
               device: torch.device | str = "cpu") -> nn.Module:
    """What `--model NAME | --checkpoint DIR` means in every command: a checkpoint (refused unless it
    holds `model`, when both are given), else the pretrained `model` (default seed)."""
    if checkpoint is not None:
        from .checkpoint import load_checkpoint

        return load_checkpoint(checkpoint, expected_model=model, device=device)
    return load_pretrained(model or "seed", device=device)
