"""lenet: LeNet-5 done right — the tutorial's network and the exact 1998 network, with the tools
around them. The public API mirrors the CLI:

    >>> import lenet
    >>> result = lenet.train(epochs=1)             # `lenet train --epochs 1`
    >>> model = lenet.load("runs/seed")            # a run folder; lenet.load("seed"): the shipped weights
    >>> lenet.evaluate(model).accuracy             # `lenet eval runs/seed`
    >>> lenet.read_number("photo.jpg").number       # `lenet predict photo.jpg --number`
    >>> lenet.build_committee("runs/committee", ["runs/s0", "runs/s1", "runs/s2"])  # `lenet committee build`

Names are imported on first use (PEP 562), so `import lenet` and `lenet --help` load no torch.
"""

from __future__ import annotations

from ._lazy import lazy_names
from ._version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "train": "lenet.api", "load": "lenet.api", "evaluate": "lenet.api", "read_number": "lenet.api",
    "build_committee": "lenet.api",
    "TrainConfig": "lenet.trainer", "TrainResult": "lenet.trainer", "make_config": "lenet.trainer",
    "EvalResult": "lenet.inference",
    "WeightsRecord": "lenet.weights", "read_record": "lenet.weights",
    "get_model": "lenet.models", "list_models": "lenet.models",
    "load_dataset": "lenet.data",
    "LenetError": "lenet.errors", "ConfigError": "lenet.errors", "DataError": "lenet.errors",
    "CheckpointError": "lenet.errors", "ImageError": "lenet.errors",
}


__getattr__, __dir__ = lazy_names(globals(), _EXPORTS)

__all__ = [*_EXPORTS, "__version__"]
