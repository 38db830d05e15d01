"""What a training run is: the frozen `TrainConfig`, and where its values come from.

A run's values are resolved in one place, `resolve_config`, from these layers (later wins):

    TrainConfig's defaults < the network's `train_defaults` < the recipe < explicit options < a resumed run

Explicit options that are None count as "not given", so CLI flags can default to None and fall through.
A resumed run keeps its own config.json; only `epochs` (and the output folder) may be given again.

Every field carries its help text, flag group and choices in `field(metadata=...)`, so the CLI's flags
(`lenet.cli.flags`) are generated from this file and cannot drift from it. This module imports no torch:
`lenet train --help` is built from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models import MODELS
from ..recipes import get_recipe
from ..registry import (
    AUGMENTATIONS,
    DATASETS,
    DEVICES,
    KERNELS,
    LOSSES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    Registry,
)

# Flag groups of `lenet train --help`, in display order.
GROUPS = {"what": "what to train", "how": "how", "run": "run"}


def _option(default: Any, help: str, group: str, type: Callable[[str], Any] | None = None, *,
            choices: Registry | tuple[str, ...] | None = None, described: bool = False,
            notes: Callable[[], str] | None = None, metavar: str | tuple[str, ...] | None = None,
            nargs: int | None = None, factory: Callable[[], Any] | None = None) -> Any:
    """A TrainConfig field whose metadata describes its command-line flag.

    `type` is what argparse converts the flag's text with (bool: an on/off switch; None: no flag);
    `choices` holds the accepted names (a registry is read when asked, so plug-ins count), and `described`
    adds each name's registry description to the help; `notes()` adds text read from the registries."""
    metadata = {"help": help, "group": group, "type": type, "choices": choices, "described": described,
                "notes": notes, "metavar": metavar, "nargs": nargs}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _init_choices() -> str:
    offered = [f"{name}: {', '.join(MODELS.entry(name).init_choices)}" for name in MODELS.names()
               if MODELS.entry(name).init_choices]
    return "choices by network: " + ("; ".join(offered) or "none")


def _matmul_forms() -> str:
    having = [name for name in MODELS.names() if MODELS.entry(name).matmul_form]
    return "networks with a matrix-product form: " + (", ".join(having) or "none")


@dataclass(frozen=True)
class TrainConfig:
    """The single description of a training run; `fit` receives it and nothing else.

    Field order is the key order of a run folder's config.json. Change a value with `dataclasses.replace`."""

    model: str = _option("seed", "the network to train (`lenet summary --list`)", "what", str,
                         choices=MODELS, described=True)
    dataset: str = _option("mnist", "mnist is shipped with lenet; the others are torchvision's, downloaded into "
                           "--data-root", "what", str, choices=DATASETS)
    data_root: str | None = _option(None, "torchvision-layout folder holding DATASET/raw/; default: the MNIST copy "
                                    "shipped with lenet", "what", str, metavar="DIR")
    val_size: int = _option(0, "training images held out for validation (model selection); the test set only "
                            "reports", "what", int, metavar="N")
    epochs: int = _option(10, "passes over the training set", "how", int)
    batch_size: int = _option(64, "images per step; the last, smaller batch of an epoch is kept", "how", int)
    lr: float = _option(1e-3, "(peak) learning rate", "how", float)
    optimizer: str = _option("adam", "optimizer", "how", str, choices=OPTIMIZERS, described=True)
    momentum: float = _option(0.9, "sgd's momentum", "how", float)
    nesterov: bool = _option(False, "sgd with Nesterov momentum", "how", bool)
    betas: tuple[float, float] = _option((0.9, 0.999), "adam/adamw's beta1 and beta2", "how", float, nargs=2,
                                         metavar=("B1", "B2"))
    weight_decay: float = _option(0.0, "L2 penalty (adamw: decoupled weight decay)", "how", float)
    # Cosine decay to 0 over the run; the tutorial keeps lr constant (recipe "tutorial"). Measured on real MNIST,
    # seeds 0-2: constant 98.80 / 98.55 / 98.97 %, cosine 99.00 / 99.05 / 98.99 % (README, "Results").
    schedule: str = _option("cosine", "learning-rate schedule over the run", "how", str, choices=SCHEDULES,
                            described=True)
    warmup_epochs: float = _option(0.0, "linear learning-rate warm-up, in epochs (onecycle: 0 = the first 25% of "
                                   "the steps)", "how", float)
    augment: str = _option("none", "batched on-device augmentation", "how", str, choices=AUGMENTATIONS,
                           described=True)
    loss: str = _option("cross_entropy", "training criterion", "how", str, choices=LOSSES, described=True)
    label_smoothing: float = _option(0.0, "cross-entropy label smoothing", "how", float)
    map_j: float = _option(10.0, "j of the MAP loss: e^-j caps the push on wrong classes", "how", float)
    init: str | None = _option(None, "weight initialisation, where the network offers a choice; default: the "
                               "network's own", "how", str, notes=_init_choices)
    seed: int = _option(0, "random seed: weights, batch order, augmentation, validation split", "run", int)
    deterministic: bool = _option(False, "bit-reproducible runs (same machine, same thread count)", "run", bool)
    device: str = _option("auto", "auto = CUDA, else Apple's MPS, else the CPU", "run", str,
                          choices=DEVICES)
    threads: int | None = _option(None, "CPU threads; default: one per idle core (with --deterministic: torch's "
                                  "default)", "run", int, metavar="N")
    precision: str = _option("fp32", "fp32, or bf16 autocast (AMX/AVX512-BF16 CPUs, GPUs; benchmarks/README.md)",
                             "run", str, choices=PRECISIONS)
    compile: bool = _option(False, "torch.compile the network (pays after a one-off compile; CUDA graphs on GPU)",
                            "run", bool)
    # Same function and parameters either way; only the speed differs (benchmarks/README.md).
    kernels: str = _option("auto", "how training computes the network: conv = PyTorch's convolution and pooling "
                           "kernels; matmul = the network's matrix-product form; auto = matmul where it measurably "
                           "pays (CPU, bf16, batch >= 256, not compiled), else conv", "run", str, choices=KERNELS,
                           notes=_matmul_forms)
    log_every: int = _option(100, "steps between the tutorial's 'Epoch [e/E], Step [s/S], Loss' lines; 0 = off",
                             "run", int, metavar="STEPS")
    out: str | None = _option(None, "folder for config.json, metrics.jsonl and the checkpoint", "run", str,
                              metavar="DIR")
    # not flags: `--recipe` names the recipe to build from (lenet.cli.flags), this field records it
    recipe: str | None = _option(None, "the recipe this config was built from, for the record", "what")
    extra: dict[str, Any] = _option(None, "options of plug-in losses and optimizers", "how", factory=dict)

    def __post_init__(self) -> None:
        # Normal forms that keep the config JSON-able and equal however it was built: paths as strings,
        # betas as a tuple (config.json stores a list). A frozen dataclass sets them through object.__setattr__.
        for name in ("out", "data_root"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))
        if not isinstance(self.betas, tuple):
            object.__setattr__(self, "betas", tuple(self.betas))
        problems = config_problems(self)
        if problems:
            raise ConfigError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to config.json (betas become a list when dumped)."""
        return dataclasses.asdict(self)


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


FIELD_NAMES = frozenset(f.name for f in config_fields())


def field_choices(f: dataclasses.Field) -> list[str] | None:
    """The names field `f` accepts now (None: any value of its type)."""
    choices = f.metadata["choices"]
    if choices is None:
        return None
    return choices.names() if isinstance(choices, Registry) else list(choices)


def choice_descriptions(f: dataclasses.Field) -> dict[str, str]:
    """name -> one-line description, for a field whose choices come from a registry and are `described`."""
    choices = f.metadata["choices"]
    if not (f.metadata["described"] and isinstance(choices, Registry)):
        return {}
    return {name: choices.entry(name).description for name in choices.names()}


def config_problems(cfg: TrainConfig) -> list[str]:
    """Every bad value of `cfg`, one sentence each (empty: valid)."""
    problems = []
    for f in config_fields():
        choices = field_choices(f)
        value = getattr(cfg, f.name)
        if choices is not None and value not in choices:
            problems.append(f"unknown {f.name} {value!r} (available: {', '.join(choices)})")
    for name in ("epochs", "batch_size"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            problems.append(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if not cfg.lr > 0:
        problems.append(f"lr must be positive, got {cfg.lr!r}")
    if cfg.threads is not None and cfg.threads <= 0:
        problems.append(f"threads must be a positive integer, got {cfg.threads!r}")
    for name in ("weight_decay", "warmup_epochs", "val_size", "log_every", "label_smoothing"):
        if getattr(cfg, name) < 0:
            problems.append(f"{name.replace('_', '-')} must not be negative, got {getattr(cfg, name)!r}")
    if len(cfg.betas) != 2:
        problems.append(f"betas must be two numbers, got {list(cfg.betas)!r}")
    if cfg.init is not None and cfg.model in MODELS:
        choices = MODELS.entry(cfg.model).init_choices
        if cfg.init not in choices:
            problems.append(f"unknown init {cfg.init!r} for model {cfg.model!r} "
                            f"(available: {', '.join(choices) or 'none, its initialisation is fixed'})")
    return problems


def network_defaults(model: str) -> dict[str, Any]:
    """The training defaults a network declares (empty for an unknown name: validation reports it)."""
    return dict(MODELS.entry(model).train_defaults) if model in MODELS else {}


def make_config(recipe: str | None = None, **options: Any) -> TrainConfig:
    """A new run's config: field defaults < the network's own defaults < the recipe < `options`.

    Options that are None count as "not given"."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = set(given) - FIELD_NAMES
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))} "
                          f"(TrainConfig fields: {', '.join(f.name for f in config_fields())})")
    recipe_values = get_recipe(recipe) if recipe else {}
    model = given.get("model", recipe_values.get("model", TrainConfig.model))
    return TrainConfig(**{**network_defaults(model), **recipe_values, **given, "recipe": recipe})


def resume_config(folder: str | os.PathLike, recipe: str | None = None, **options: Any) -> TrainConfig:
    """The config of the run saved in `folder`, to continue it: only `epochs` (and `out`) may be given."""
    cfg = load_config(folder)
    changed = sorted(k for k, v in options.items() if v is not None and k not in ("epochs", "out"))
    if recipe is not None and recipe != cfg.recipe:
        changed.insert(0, "recipe")
    if changed:
        raise ConfigError(f"cannot change {', '.join(changed)} when resuming {folder}; only --epochs may be raised")
    return dataclasses.replace(cfg, epochs=options.get("epochs") or cfg.epochs, out=str(options.get("out") or folder))


def resolve_config(*, recipe: str | None = None, resume: str | os.PathLike | None = None,
                   **options: Any) -> TrainConfig:
    """The config of a run: a new one (`make_config`) or, with `resume`, the saved one (`resume_config`)."""
    if resume is not None:
        return resume_config(resume, recipe, **options)
    return make_config(recipe, **options)


def config_from_dict(values: Mapping[str, Any], where: str = "config") -> TrainConfig:
    """A TrainConfig from its JSON form (config.json, a weights record's `config`). Keys it lacks take the
    defaults (older files predate some fields); unknown keys or bad values raise ConfigError naming `where`."""
    unknown = set(values) - FIELD_NAMES
    if unknown:
        raise ConfigError(f"{where} is not a lenet training config: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        return TrainConfig(**values)
    except (TypeError, ConfigError) as e:
        raise ConfigError(f"{where} is not a valid lenet training config ({e})") from None


def load_config(folder: str | os.PathLike) -> TrainConfig:
    """The config a run in `folder` was started with (its config.json)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: {folder} is not a lenet run folder (written by --out)")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} is not a lenet training config (not a JSON object)")
    return config_from_dict(values, str(path))
