"""PyTorch Hub entry points: one per network registered in lenet, each with the weights shipped with lenet.

    >>> import torch
    >>> net = torch.hub.load("REPO_DIR", "classic", source="local", weights="DEFAULT")  # trained, SHA-256 checked
    >>> net = torch.hub.load("REPO_DIR", "seed", source="local", weights=None)         # untrained

`weights` is "DEFAULT" (the shipped weights, `lenet.load(NAME)`), None (fresh weights; keyword arguments go
to the network's builder, e.g. `init="paper"` for classic) or the path of a run folder of that network
written by `lenet train --out`. The network comes in eval mode when trained; it takes float32 (N, 1, 28, 28)
MNIST-style pixels / 255 and returns (N, 10) scores (`lenet.inference.to_input` makes the input).

The installed `lenet` is used when there is one; in a checkout where it is not installed, this file puts
the checkout's `src/` on `sys.path` (only then), so the repository works as a hub on its own.
"""

from __future__ import annotations

# Module-level names other than the entry points start with "_": torch.hub lists every public callable.
import importlib.util as _importlib_util
import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "numpy", "safetensors"]

if _importlib_util.find_spec("lenet") is None:
    _SRC = _Path(__file__).resolve().parent / "src"
    if (_SRC / "lenet" / "__init__.py").is_file():
        _sys.path.insert(0, str(_SRC))

from lenet.models import list_models as _list_models  # noqa: E402  (needs the path set above)
from lenet.models import model_entry as _model_entry  # noqa: E402


def _entry_point(name: str):
    def load(weights: str | _Path | None = "DEFAULT", *, device: str = "cpu", **kwargs):
        if weights is None:
            from lenet.models import get_model

            return get_model(name, **kwargs).to(device)
        if kwargs:
            raise TypeError(f"{name}: builder arguments ({', '.join(kwargs)}) go with weights=None only; trained "
                            "weights come with the arguments they were trained with")
        from lenet.weights import load_network

        # "DEFAULT" is the only word; anything else is a path (never another network's name).
        source = name if weights == "DEFAULT" else _Path(weights)
        return load_network(source, device=device, expected_model=name)

    load.__name__ = load.__qualname__ = name
    load.__doc__ = (f"lenet's `{name}`: {_model_entry(name).description}.\n\n"
                    'weights="DEFAULT": the weights shipped with lenet; None: untrained (kwargs go to the builder); '
                    "a path: a run folder of this network.")
    return load


for _name in _list_models():
    globals()[_name] = _entry_point(_name)
del _name
