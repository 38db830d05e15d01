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
import math
import numbers
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import read_json_object
from .._paths import check_output_folder
from ..errors import ConfigError, DataError
from ..models import MODELS
from ..recipes import get_recipe
from ..registry import (
    AUGMENTATIONS,
    DATASETS,
    DEVICES,
    DIGIT_WIDTH_RULE,
    DIGIT_WIDTHS,
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


def _offering_digit_width() -> str:
    return ", ".join(name for name in MODELS.names() if MODELS.entry(name).digit_width) or "none"


def _digit_width_models() -> str:
    return f"{DIGIT_WIDTHS[0]}-{DIGIT_WIDTHS[-1]} pixels; networks that offer it: {_offering_digit_width()}"


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
    val_seed: int | None = _option(None, "seed that chooses the --val-size images held out; default: --seed. Give "
                                   "a committee's members one value, and their committee can be validated on the "
                                   "images none of them trained on", "what", int, metavar="S")
    train_size: int = _option(0, "train on the first N images of the training split only (after --val-size is "
                              "held out); 0 = all. For quick experiments and tests, never for reported results",
                              "what", int, metavar="N")
    epochs: int = _option(10, "passes over the training set", "how", int)
    batch_size: int = _option(64, "images per step; the last, smaller batch of an epoch is kept", "how", int)
    lr: float = _option(1e-3, "(peak) learning rate", "how", float)
    optimizer: str = _option("adam", "optimizer", "how", str, choices=OPTIMIZERS, described=True)
    momentum: float = _option(0.9, "sgd's and muon's momentum", "how", float)
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
    ema: float = _option(0.0, "decay of an exponential moving average of the weights (batch-norm statistics "
                         "included), updated every step; the average is what is evaluated and saved. 0 = off",
                         "how", float, metavar="DECAY")
    loss: str = _option("cross_entropy", "training criterion", "how", str, choices=LOSSES, described=True)
    label_smoothing: float = _option(0.0, "cross-entropy label smoothing", "how", float)
    map_j: float = _option(10.0, "j of the MAP loss: e^-j caps the push on wrong classes", "how", float)
    init: str | None = _option(None, "weight initialisation, where the network offers a choice; default: the "
                               "network's own", "how", str, notes=_init_choices)
    digit_width: int | None = _option(None, "resample every digit so its bounding box is W pixels wide (Ciresan's "
                                      "width normalisation; part of the network: eval, predict and export apply it "
                                      "too); default: as drawn", "how", int, metavar="W", notes=_digit_width_models)
    seed: int = _option(0, "random seed: weights, batch order, augmentation, validation split (unless --val-seed)",
                        "run", int)
    deterministic: bool = _option(False, "bit-reproducible runs (same machine, same thread count)", "run", bool)
    device: str = _option("auto", "auto = CUDA, else Apple's MPS, else the CPU", "run", str,
                          choices=DEVICES)
    threads: int | None = _option(None, "CPU threads, pinned; default: adapted during the run by timing its steps "
                                  "at 1..cores threads (with --deterministic: torch's default, fixed)", "run", int,
                                  metavar="N")
    precision: str = _option("fp32", "fp32; bf16 autocast; or auto = bf16 where it pays (CUDA, CPUs with AMX), else "
                             "fp32; a new run records what auto chose (benchmarks/README.md)",
                             "run", str, choices=PRECISIONS)
    compile: bool = _option(False, "torch.compile the network (pays after a one-off compile; CUDA graphs on GPU)",
                            "run", bool)
    # Same function and parameters either way; only the speed differs (benchmarks/README.md).
    kernels: str = _option("auto", "how training computes the network: conv = PyTorch's convolution and pooling "
                           "kernels; matmul = the network's matrix-product form; auto = matmul where it measurably "
                           "pays (CPU, bf16, batch >= 128, not compiled), else conv", "run", str, choices=KERNELS,
                           notes=_matmul_forms)
    log_every: int = _option(100, "steps between the tutorial's 'Epoch [e/E], Step [s/S], Loss' lines; 0 = off",
                             "run", int, metavar="STEPS")
    out: str | None = _option(None, "folder for config.json, metrics.jsonl and the checkpoint", "run", str,
                              metavar="DIR")
    checkpoint_every: float = _option(10.0, "minutes between checkpoints inside an epoch (resumable mid-epoch; "
                                      "needs --out); 0 = at the end of each epoch only", "run", float,
                                      metavar="MINUTES")
    # not flags: `--recipe` names the recipe to build from (lenet.cli.flags), this field records it
    recipe: str | None = _option(None, "the recipe this config was built from, for the record", "what")
    # Passed to the loss's builder as keywords (lenet.losses.get_loss); a loss ignores the ones it does not know.
    extra: dict[str, Any] = _option(None, "options of plug-in losses", "how", factory=dict)

    def __post_init__(self) -> None:
        # Normal forms that keep the config JSON-able and equal however it was built: paths as strings,
        # betas as a tuple (config.json stores a list). A frozen dataclass sets them through object.__setattr__.
        for name in ("out", "data_root"):
            if isinstance(getattr(self, name), os.PathLike):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        for name in (*_INTEGERS, *_REALS):  # NumPy's numbers count too, stored as Python's so that JSON takes them
            value, kind = getattr(self, name), int if name in _INTEGERS else float
            if isinstance(value, numbers.Integral if kind is int else numbers.Real) and \
                    not isinstance(value, (bool, int, float)):
                object.__setattr__(self, name, kind(value))
        problems = config_problems(self)
        if problems:
            raise ConfigError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to config.json (betas become a list when dumped)."""
        return dataclasses.asdict(self)


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


FIELD_NAMES = frozenset(f.name for f in config_fields())
FIELD_NAMES_IN_ORDER = tuple(f.name for f in config_fields())


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
    """Every bad value of `cfg`, one sentence each (empty: valid). Checks values only, never this machine or
    its files: a config read from another machine's run folder stays readable (`check_run` checks those)."""
    problems = [*_type_problems(cfg), *_choice_problems(cfg)]
    for name in FIELD_NAMES_IN_ORDER:
        value = getattr(cfg, name)
        if name in _INTEGERS and _is_integer(value):
            low, high = _INTEGERS[name]
            if not low <= value <= high:
                problems.append(_integer_range(name, value, low, high))
        elif name in _REALS and _is_real(value) and not _inside(value, *_REALS[name]):
            problems.append(f"{_flag(name)} must be a finite number {_interval(*_REALS[name])}, got {_shown(value)}")
    if _is_pair_of_reals(cfg.betas):
        problems += [f"beta{i} must be a finite number in [0, 1), got {_shown(b)}" for i, b in enumerate(cfg.betas, 1)
                     if not _inside(b, 0, 1, False, True)]
    if _is_real(cfg.warmup_epochs) and _is_integer(cfg.epochs) and cfg.warmup_epochs > cfg.epochs > 0:
        problems.append(f"warmup-epochs {_shown(cfg.warmup_epochs)} is more than the {cfg.epochs} epochs of the run")
    problems += _digit_width_problems(cfg)
    if cfg.val_seed is not None and _is_integer(cfg.val_seed) and not 0 <= cfg.val_seed <= MAX_SEED:
        problems.append(_integer_range("val_seed", cfg.val_seed, 0, MAX_SEED))
    if cfg.threads is not None and _is_integer(cfg.threads) and not 0 < cfg.threads <= MAX_INT64:
        problems.append(_integer_range("threads", cfg.threads, 1, MAX_INT64))
    if not (_is_real(cfg.checkpoint_every) and _inside(cfg.checkpoint_every, 0, None, False, False)):
        problems.append(f"checkpoint-every must be a finite number of minutes >= 0, got "
                        f"{_shown(cfg.checkpoint_every)}")
    return problems


def _digit_width_problems(cfg: TrainConfig) -> list[str]:
    width = cfg.digit_width
    if width is None or not _is_integer(width):
        return []  # as drawn, or a type problem (reported as one)
    if width not in DIGIT_WIDTHS:
        return [f"digit-width must be {DIGIT_WIDTH_RULE}, got {_shown(width)}"]
    if isinstance(cfg.model, str) and cfg.model in MODELS and not MODELS.entry(cfg.model).digit_width:
        return [f"model {_shown(cfg.model)} has no digit-width (networks that offer it: {_offering_digit_width()})"]
    return []


# Integer fields: (lowest, highest or None). Epochs: the per-epoch random streams are seeded with
# seed * 1_000_003 + epoch (trainer/engine.py), distinct for every (seed, epoch) only below 1,000,003 epochs.
# Seeds: torch takes -2**63 .. 2**64-1 but folds the negatives onto the top half (-1 is 2**64-1), so the
# range where every seed is its own and fits a signed 64-bit integer (NumPy, SQLite, JSON readers) is this.
# Every other integer: at most a signed 64-bit integer, what config.json's readers (and Python's own int-to-text
# conversion, capped at 4,300 digits) can take; far beyond any real value.
MAX_EPOCHS = 1_000_000
MAX_SEED = MAX_INT64 = 2**63 - 1
_INTEGERS: dict[str, tuple[int, int]] = {
    "epochs": (1, MAX_EPOCHS), "batch_size": (1, MAX_INT64), "val_size": (0, MAX_INT64),
    "train_size": (0, MAX_INT64), "log_every": (0, MAX_INT64), "seed": (0, MAX_SEED)}
# Real fields: (lowest, highest or None, lowest excluded, highest excluded); NaN and the infinities never pass.
# lr has no upper bound: a rate too large shows as a non-finite loss, which stops the run with a clear error.
# momentum, betas and label smoothing of 1 would never forget a gradient or learn nothing from the labels.
_REALS: dict[str, tuple[float, float | None, bool, bool]] = {
    "lr": (0, None, True, False), "momentum": (0, 1, False, True), "weight_decay": (0, None, False, False),
    "warmup_epochs": (0, None, False, False), "label_smoothing": (0, 1, False, True), "map_j": (0, None, True, False),
    "ema": (0, 1, False, True)}
_BOOLS = ("nesterov", "deterministic", "compile")
_OPTIONAL_STRINGS = ("data_root", "out", "init", "recipe")
_OPTIONAL_INTEGERS = ("threads", "val_seed", "digit_width")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_pair_of_reals(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and all(_is_real(v) for v in value)


def _inside(value: float, low: float, high: float | None, open_low: bool, open_high: bool) -> bool:
    """Written so that NaN fails (every comparison with NaN is false) and so do the infinities and integers
    too large for a float."""
    try:
        value = float(value)
    except OverflowError:
        return False
    if not math.isfinite(value):
        return False
    above = value > low if open_low else value >= low
    below = high is None or (value < high if open_high else value <= high)
    return above and below


def _shown(value: Any) -> str:
    """`repr(value)`, short enough for a one-line message (an integer of thousands of digits has no repr)."""
    if _is_integer(value) and abs(value) >= 10**30:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + "..." + text[-10:]


def _interval(low: float, high: float | None, open_low: bool, open_high: bool) -> str:
    if high is None:
        return f"{'>' if open_low else '>='} {low}"
    return f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"


def _integer_range(name: str, value: int, low: int, high: int) -> str:
    if value < low:
        return (f"{_flag(name)} must be a positive integer, got {_shown(value)}" if low == 1 else
                f"{_flag(name)} must not be negative, got {_shown(value)}")
    why = {"seed": " (torch's generators take 64-bit seeds)", "epochs": ""}.get(name, " (a 64-bit integer)")
    return f"{_flag(name)} must be at most {high:,}{why}, got {_shown(value)}"


def _type_problems(cfg: TrainConfig) -> list[str]:
    """Values of the wrong type (from Python or a hand-edited config.json; the CLI's flags convert types)."""
    problems = [f"{_flag(n)} must be an integer, got {_shown(getattr(cfg, n))}" for n in _INTEGERS
                if not _is_integer(getattr(cfg, n))]
    problems += [f"{_flag(n)} must be a number, got {_shown(getattr(cfg, n))}" for n in _REALS
                 if not _is_real(getattr(cfg, n))]
    problems += [f"{n} must be true or false, got {_shown(getattr(cfg, n))}" for n in _BOOLS
                 if not isinstance(getattr(cfg, n), bool)]
    problems += [f"{_flag(n)} must be a string, got {_shown(getattr(cfg, n))}" for n in _OPTIONAL_STRINGS
                 if not isinstance(getattr(cfg, n), (str, type(None)))]
    problems += [f"{_flag(n)} is empty: give a folder, or leave it out" for n in ("out", "data_root")
                 if getattr(cfg, n) == ""]
    problems += [f"{_flag(n)} must be an integer, got {_shown(getattr(cfg, n))}" for n in _OPTIONAL_INTEGERS
                 if getattr(cfg, n) is not None and not _is_integer(getattr(cfg, n))]
    if not _is_pair_of_reals(cfg.betas):
        problems.append(f"betas must be two numbers, got {_shown(cfg.betas)}")
    if not (isinstance(cfg.extra, dict) and all(isinstance(k, str) for k in cfg.extra)):
        problems.append(f"extra must be a mapping of option names to values, got {_shown(cfg.extra)}")
    else:
        fields = {f.name for f in config_fields()}
        problems += [f"extra's {name!r} is a training option of its own: give {name}=... instead"
                     for name in cfg.extra if name in fields]
    return problems


def _choice_problems(cfg: TrainConfig) -> list[str]:
    problems = []
    for f in config_fields():
        choices = field_choices(f)
        value = getattr(cfg, f.name)
        if choices is not None and not (isinstance(value, str) and value in choices):
            problems.append(f"unknown {f.name} {_shown(value)} (available: {', '.join(choices)})")
    if isinstance(cfg.init, str) and isinstance(cfg.model, str) and cfg.model in MODELS:
        choices = MODELS.entry(cfg.model).init_choices
        if cfg.init not in choices:
            problems.append(f"unknown init {_shown(cfg.init)} for model {_shown(cfg.model)} "
                            f"(available: {', '.join(choices) or 'none, its initialisation is fixed'})")
    return problems


# torch's threads meet at a barrier after every operator, so threads beyond the cores only wait (trainer/state.py);
# a few per core leave room for hyper-threads and for a core count that grows, 20,000 (issue 17) stall the machine.
THREADS_PER_CORE = 4


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def machine_problems(cfg: TrainConfig) -> list[str]:
    """What `cfg` asks of this machine that it cannot give (empty: nothing)."""
    cores = usable_cores()
    if cfg.threads is not None and cfg.threads > THREADS_PER_CORE * cores:
        return [f"threads must be at most {THREADS_PER_CORE * cores} ({THREADS_PER_CORE} x the {cores} "
                f"core{'s' if cores > 1 else ''} this process may use; more threads than cores only wait for "
                f"each other), got {cfg.threads}"]
    return []


def check_run(cfg: TrainConfig) -> TrainConfig:
    """`cfg` if a run of it can start here: its threads fit this machine's cores, --out is a folder that can be
    written (or made), --data-root a folder; else ConfigError (DataError for a missing MNIST root), before any
    work. Nothing is left behind."""
    problems = machine_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
    if cfg.out:
        check_output_folder(cfg.out, "--out")
    if cfg.data_root:
        _check_data_root(Path(cfg.data_root), cfg.dataset)
    return cfg


def _check_data_root(root: Path, dataset: str) -> None:
    if root.exists():
        if not root.is_dir():
            raise ConfigError(f"--data-root {root} is not a folder: give the folder that holds {dataset}'s files "
                              "(DATASET/raw/)")
    elif dataset == "mnist":  # read, never written
        raise DataError(f"data root {root} does not exist; point --data-root at a folder holding MNIST/raw/")
    else:  # torchvision downloads into it
        check_output_folder(root, "--data-root")


def recipe_note(cfg: TrainConfig, field: str) -> str:
    """' (recipe R's)' when `cfg`'s recipe sets `field` to the value it has, for errors about a flag not typed."""
    if cfg.recipe and get_recipe(cfg.recipe).get(field, object()) == getattr(cfg, field):
        return f" (recipe {cfg.recipe}'s)"
    return ""


def split_problems(cfg: TrainConfig, train_images: int) -> list[str]:
    """What --val-size and --train-size ask of a training split of `train_images` images that it cannot give
    (empty: nothing). The trainer checks them once the data is loaded; a sweep, before its trials start."""
    if not 0 <= cfg.val_size < train_images:
        return [f"--val-size must be between 0 and {train_images - 1}, got {cfg.val_size}"]
    left = train_images - cfg.val_size
    if cfg.train_size > left:
        return [train_size_problem(cfg.train_size, left, cfg.val_size, recipe_note(cfg, "train_size"))]
    return []


def train_size_problem(train_size: int, available: int, val_size: int = 0, note: str = "",
                       zero_means_all: bool = True) -> str:
    """Why --train-size N cannot be: there are only `available` training images (`lenet train`, `lenet sweep`,
    `lenet bench`; bench has no --train-size 0)."""
    return (f"--train-size {train_size}{note} is more than the {available} training images"
            + (f" left after --val-size {val_size}" if val_size else "")
            + f"; give --train-size {available} or less" + (" (0: all of them)" if zero_means_all else ""))


def known_split_problems(cfg: TrainConfig) -> list[str]:
    """`split_problems` where the training split's size is known without loading it: MNIST's (lenet verifies
    its files). torchvision's datasets are checked when a training loads them."""
    if cfg.dataset != "mnist":
        return []
    from ..idx import MNIST_FILES  # numpy: not for `lenet --help`

    return split_problems(cfg, MNIST_FILES["train_images"].count)


def network_defaults(model: str) -> dict[str, Any]:
    """The training defaults a network declares (empty for an unknown name: validation reports it)."""
    return dict(MODELS.entry(model).train_defaults) if isinstance(model, str) and model in MODELS else {}


def make_config(recipe: str | None = None, *, resolve_auto: bool = True, **options: Any) -> TrainConfig:
    """A new run's config: field defaults < the network's own defaults < the recipe < `options`.

    Options that are None count as "not given". --precision auto becomes what this machine runs
    (`concrete_precision`, which imports torch); `resolve_auto=False` keeps "auto", for checks made by processes
    that train nothing themselves (a speedrun's or a sweep's parent)."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = set(given) - FIELD_NAMES
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))} "
                          f"(TrainConfig fields: {', '.join(f.name for f in config_fields())})")
    recipe_values = get_recipe(recipe) if recipe else {}
    model = given.get("model", recipe_values.get("model", TrainConfig.model))
    values = {**network_defaults(model), **recipe_values, **given, "recipe": recipe}
    # recorded as chosen: the record says what ran, and a resume keeps it
    if resolve_auto and values.get("precision") == "auto":
        values["precision"] = concrete_precision(values.get("device", TrainConfig.device))
    return TrainConfig(**values)


def concrete_precision(device: str) -> str:
    """What --precision auto is on `device` ("auto": the device a run would pick) on this machine."""
    from ..inference import native_precision, pick_device  # torch: only when a precision is left to the hardware

    return native_precision(pick_device(device))


# What a resumed run may set anew: how long it trains, and how this machine runs it (none of these changes
# which run it is; a sweep worker resumes another worker's trial with its own thread count).
RESUME_MAY_CHANGE = ("epochs", "out", "checkpoint_every", "threads", "device", "log_every", "compile", "kernels")


def resume_config(folder: str | os.PathLike, recipe: str | None = None, **options: Any) -> TrainConfig:
    """The config of the run saved in `folder`, to continue it: only the RESUME_MAY_CHANGE fields may be given."""
    cfg = load_config(folder)
    given = {k: v for k, v in options.items() if v is not None}
    changed = sorted(k for k in given if k not in RESUME_MAY_CHANGE)
    if recipe is not None and recipe != cfg.recipe:
        changed.insert(0, "recipe")
    if changed:
        raise ConfigError(f"cannot change {', '.join(changed)} when resuming {folder}; only the length (--epochs) "
                          "and how it runs (--threads, --device, --checkpoint-every, --log-every, --compile, "
                          "--kernels) may be given")
    return dataclasses.replace(cfg, **{**given, "out": str(given.get("out") or folder)})


def resolve_config(*, recipe: str | None = None, resume: str | os.PathLike | None = None, resolve_auto: bool = True,
                   **options: Any) -> TrainConfig:
    """The config of a run: a new one (`make_config`) or, with `resume`, the saved one (`resume_config`),
    checked against this machine and its paths (`check_run`) before any work starts."""
    if resume is not None:
        return check_run(resume_config(resume, recipe, **options))
    return check_run(make_config(recipe, resolve_auto=resolve_auto, **options))


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
    if Path(folder).is_file():
        raise ConfigError(f"{folder} is a file, not a lenet run folder (a folder written by --out)")
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: {folder} is not a lenet run folder (written by --out)")
    return config_from_dict(read_json_object(path, ConfigError, "a lenet training config"), str(path))
