"""Training: a run's config, the process state it sets, the engine it builds and the loop that runs it.

    config.py   the frozen `TrainConfig` and its resolution (defaults < network < recipe < flags < resume);
                imports no torch, so the CLI builds its flags and `--help` from it
    state.py    `training_state`: threads, global seed, deterministic mode, set and restored
    threads.py  `ThreadPolicy`: the CPU thread count, adapted during the run by timing its own steps
    engine.py   what a run trains with: resident data, network, training network, loss, optimizer
    loop.py     `fit` (one config, epoch by epoch), `run_training` (what `lenet.train` calls), `TrainResult`

Importing this package imports no torch either: the names from state.py, engine.py and loop.py are loaded
on first use (PEP 562).
"""

from __future__ import annotations

from .._lazy import lazy_names
from .config import TrainConfig, config_from_dict, load_config, make_config, resolve_config, resume_config

# public name -> the module of this package that defines it (imported on first use: it needs torch)
_LAZY = {
    "TrainResult": "loop", "fit": "loop", "run_training": "loop", "process_seconds": "loop",
    "training_state": "state", "tune_allocator": "state",
    "training_network": "engine",
}


__getattr__, __dir__ = lazy_names(globals(), {name: f".{module}" for name, module in _LAZY.items()})


__all__ = ["TrainConfig", "config_from_dict", "load_config", "make_config", "resolve_config", "resume_config",
           *_LAZY]
