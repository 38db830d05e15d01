"""The only module that knows the checkpoint format.

A checkpoint is a folder (or just its weights file):
    model.safetensors   the weights; safetensors cannot run code when loaded (a pickle can).
                        Its header metadata repeats the model name and builder arguments, so the
                        file alone is enough to rebuild the network.
    model.json          sidecar: format version, model, config, epoch, metrics, versions, SHA-256.
    resume.safetensors  everything needed to continue training (weights, optimizer tensors, RNG
                        state) in ONE file, written atomically, so a crash can never pair the weights
                        of one epoch with the optimizer state of another.
Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ._io import atomic_write, atomic_write_json, file_digest
from .errors import CheckpointError
from .models import get_model, list_models

FORMAT = "lenet-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_NAME, SIDECAR_NAME, RESUME_NAME = "model.safetensors", "model.json", "resume.safetensors"


def _versions() -> dict[str, str]:
    from . import __version__

    return {"lenet": __version__, "torch": torch.__version__}


def _header(model_name: str, model_kwargs: dict, extra: dict | None = None) -> dict[str, str]:
    # safetensors metadata is str -> str
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "model": model_name,
              "model_kwargs": json.dumps(model_kwargs)}
    for key, value in (extra or {}).items():
        header[key] = json.dumps(value)
    return header


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # clone + contiguous: safetensors refuses shared or strided storage
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(folder: str | os.PathLike, model: nn.Module, info: dict[str, Any] | None = None) -> Path:
    """Write `model.safetensors` and `model.json` into `folder`; return the weights path."""
    folder = Path(folder)
    name = getattr(model, "model_name", None)
    if name is None:
        raise CheckpointError("only networks built with lenet.get_model(...) can be saved (model_name unknown)")
    kwargs = getattr(model, "model_kwargs", {})
    weights = folder / WEIGHTS_NAME
    atomic_write(weights, lambda tmp: save_file(_state_dict(model), tmp, metadata=_header(name, kwargs)))
    sidecar = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": name, "model_kwargs": kwargs,
               "weights_sha256": file_digest(weights, "sha256"), **_versions(), **(info or {})}
    atomic_write_json(folder / SIDECAR_NAME, sidecar)
    return weights


def _weights_path(path: Path) -> Path:
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: give a folder written by `lenet train --out` "
                              f"or its {WEIGHTS_NAME}")
    if path.is_dir():
        if not (path / WEIGHTS_NAME).is_file():
            raise CheckpointError(f"{path} holds no {WEIGHTS_NAME}: not a lenet checkpoint folder")
        return path / WEIGHTS_NAME
    return path


def _read_header(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated, corrupt or not a "
                              f"checkpoint): {e}") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a lenet checkpoint (no lenet metadata)")
    if int(header.get("format_version", "0")) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer lenet (format {header['format_version']}); "
                              "upgrade lenet to read it")
    return header


def read_info(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of a checkpoint (or, when it is missing, what the weights' header holds)."""
    weights = _weights_path(Path(path))
    header = _read_header(weights)
    sidecar = weights.with_name(SIDECAR_NAME) if weights.name == WEIGHTS_NAME else weights.with_suffix(".json")
    if sidecar.is_file():
        try:
            return json.loads(sidecar.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{sidecar} is not valid JSON ({e}); delete it to fall back on the weights") from None
    return {"model": header["model"], "model_kwargs": json.loads(header["model_kwargs"])}


def load_checkpoint(path: str | os.PathLike, expected_model: str | None = None,
                    device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the network stored at `path` (a checkpoint folder or its weights file), in eval mode.

    With `expected_model`, a checkpoint of any other network is refused."""
    weights = _weights_path(Path(path))
    header = _read_header(weights)
    name = header.get("model", "")
    if name not in list_models():
        raise CheckpointError(f"{weights} holds a network {name!r} that this lenet does not know "
                              f"(available: {', '.join(list_models())})")
    if expected_model is not None and name != expected_model:
        raise CheckpointError(f"{weights} holds a {name!r} network, not {expected_model!r}")
    model = get_model(name, **json.loads(header.get("model_kwargs", "{}")))
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights} is truncated or corrupt: {e}") from None
    _load_state(model, state, weights)
    return model.to(device).eval()


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        problems = [f"{label}: {', '.join(keys[:4])}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise CheckpointError(f"{where} does not match the {model.model_name!r} network ({'; '.join(problems)})")
    model.load_state_dict(state)


# --- resume state -----------------------------------------------------------------------------------------

def save_training_state(folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                        progress: dict[str, Any]) -> Path:
    """Write `resume.safetensors`: weights, optimizer state, RNG state and `progress` (JSON-able)."""
    tensors = {f"model.{k}": v for k, v in _state_dict(model).items()}
    opt_state = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for index, entry in opt_state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars[f"{index}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    extra = {"progress": progress, "optimizer_groups": opt_state["param_groups"], "optimizer_scalars": scalars}
    header = _header(model.model_name, getattr(model, "model_kwargs", {}), extra)
    return atomic_write(Path(folder) / RESUME_NAME, lambda tmp: save_file(tensors, tmp, metadata=header))


def load_training_state(folder: str | os.PathLike, model: nn.Module,
                        optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore what `save_training_state` wrote into `model` and `optimizer`; return `progress`."""
    path = Path(folder) / RESUME_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: nothing to resume (was the run started with --out?)")
    header = _read_header(path)
    if header["model"] != model.model_name:
        raise CheckpointError(f"{path} holds a {header['model']!r} run, not {model.model_name!r}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is truncated or corrupt: {e}") from None
    _load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            param = params[int(index)]
            if value.shape == param.shape:
                # Same memory layout as the parameter (e.g. channels_last): fused optimizers walk
                # parameter and state storage in lockstep, so a layout mismatch would pair wrong elements.
                value = torch.empty_like(param, dtype=value.dtype).copy_(value)
            state.setdefault(int(index), {})[name] = value.to(param.device)
    for key, value in json.loads(header["optimizer_scalars"]).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(header["optimizer_groups"])})
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return json.loads(header["progress"])
