"""The networks a server offers, by registered name: which ones there are, their weights, their accuracy.

Every registered network is listed (the page's picker shows them all); one is available when weights are
there to serve it: shipped with lenet (loaded on first use, SHA-256 checked), a `--checkpoint` folder
(loaded at once), or a ready network handed to `create_app`. A request names a network, never a file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError, LenetError
from ..models import list_models, model_entry
from ..weights import list_shipped, load_network, read_record, shipped_committees
from .http_errors import ApiError


@dataclass
class Entry:
    name: str
    description: str
    test_accuracy: float | None
    source: str  # "pretrained", "checkpoint" or "none"
    loader: Callable[[], nn.Module] | None = None
    model: nn.Module | None = None

    @property
    def available(self) -> bool:
        return self.model is not None or self.loader is not None

    def describe(self) -> dict[str, Any]:
        # a run's record holds the float it measured (80.62999844551086); shown as the shipped ones are
        accuracy = None if self.test_accuracy is None else round(self.test_accuracy, 2)
        return {"name": self.name, "description": self.description, "test_accuracy": accuracy,
                "available": self.available, "source": self.source}


def registered_entries() -> dict[str, Entry]:
    """One entry per registered network, in registry order; the shipped ones load on first use."""
    shipped = {record.model: record for record in list_shipped()}
    entries = {}
    for name in list_models():
        record = shipped.get(name)
        if record is None:
            entries[name] = Entry(name, model_entry(name).description, None, "none")
        else:
            # A registered name always means the shipped weights, whatever the working directory holds.
            entries[name] = Entry(name, model_entry(name).description, record.test_accuracy, "pretrained",
                                  partial(load_network, name, device="cpu"))
    for name in shipped_committees():  # after the networks: each is the mean of shipped members
        record = read_record(name)
        entries[name] = Entry(name, record.description or name, record.test_accuracy, "pretrained",
                              partial(load_network, name, device="cpu"))
    return entries


def checkpoint_entry(checkpoint: str | os.PathLike) -> Entry:
    """The network of a run folder (or its weights file), loaded now: a damaged file fails at start."""
    source = Path(checkpoint)  # a Path is always a path, even one spelled like a network's name
    record = read_record(source)
    net = load_network(source, device="cpu")
    # a committee is no registered network: its record says what it is
    registered = net.model_name in list_models()
    description = model_entry(net.model_name).description if registered else record.description or net.model_name
    return Entry(net.model_name, description, record.test_accuracy, "checkpoint", None, net)


def _ready_entry(name: str, net: nn.Module, entries: dict[str, Entry]) -> Entry:
    known = entries.get(name)
    if known is None:
        return Entry(name, name, None, "checkpoint", None, net.eval())
    source = "checkpoint" if known.source == "none" else known.source
    return Entry(name, known.description, known.test_accuracy, source, None, net.eval())


def _pick_default(entries: dict[str, Entry], model: str | None) -> str:
    if model is None:
        available = [name for name, entry in entries.items() if entry.available]
        if not available:
            raise ConfigError("no network to serve: no pretrained weights found; train one with "
                              "`lenet train --out runs/seed` and run `lenet serve --checkpoint runs/seed`")
        return "seed" if "seed" in available else available[0]
    if model not in entries:
        raise ConfigError(f"unknown model {model!r}; available: {', '.join(entries)}")
    if not entries[model].available:
        raise ConfigError(f"no pretrained weights for {model!r}; give a trained one with --checkpoint DIR")
    return model


class ModelStore:
    """The server's networks by name, and the one it serves when a request names none."""

    def __init__(self, entries: dict[str, Entry], default: str) -> None:
        self._entries, self.default = entries, default
        self._lock = threading.Lock()

    @classmethod
    def build(cls, model: str | None = None, checkpoint: str | os.PathLike | None = None,
              models: dict[str, nn.Module] | None = None) -> ModelStore:
        """model: the default network's name; checkpoint: a run folder served by default instead;
        models: ready networks by name (tests, embedding)."""
        served = None if checkpoint is None else checkpoint_entry(checkpoint)  # the file asked for, first
        if served is not None and model is not None and model != served.name:
            raise ConfigError(f"--model {model} does not match the checkpoint, which holds {served.name!r}")
        entries = registered_entries()
        if served is not None:
            entries[served.name], model = served, served.name
        for name, net in (models or {}).items():
            entries[name] = _ready_entry(name, net, entries)
        return cls(entries, _pick_default(entries, model))

    def describe(self) -> dict[str, Any]:
        return {"default": self.default, "models": [entry.describe() for entry in self._entries.values()]}

    def check(self, name: str | None) -> str:
        """The name to use for a request, or an ApiError saying why it cannot be served."""
        if name is None:
            return self.default
        if name not in self._entries:
            raise ApiError(404, f"unknown model {name!r}; available: {', '.join(self._entries)}")
        if not self._entries[name].available:
            raise ApiError(409, f"model {name!r} has no weights on this server (no pretrained weights shipped); "
                                f"serve a trained one with `lenet serve --checkpoint DIR`")
        return name

    def get(self, name: str) -> nn.Module:
        """The network `name` (checked), loading it on first use; ApiError 503 when its weights are damaged."""
        try:
            return self._loaded(self._entries[name])
        except LenetError as e:  # a damaged weights file: the server's fault, not the request's
            raise ApiError(503, f"model {name!r} cannot be loaded: {e}") from None

    def preload(self) -> None:
        """Load the default network now; a LenetError (missing or damaged weights) propagates as it is."""
        self._loaded(self._entries[self.default])

    def _loaded(self, entry: Entry) -> nn.Module:
        if entry.model is None:
            # One loader at a time: two first requests must not both read the weights.
            with self._lock:
                if entry.model is None:
                    entry.model = entry.loader().eval()
        return entry.model
