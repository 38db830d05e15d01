"""Everything lenet offers by name, declared without importing torch.

A registry maps a name to an entry whose implementation is named as "module:attribute" and imported on
first use. So the CLI can list every network, loss, optimizer, schedule, augmentation and dataset in its
`--help` (and validate a config) without loading torch, and registration runs one way: this module names,
the implementing modules never register themselves into anything. Plug-ins call `Registry.add` (or the
`register` decorator) at run time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import ConfigError


def resolve(target: str | Callable[..., Any]) -> Any:
    """"package.module:attribute" -> the attribute (imported now); a callable is returned as it is."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Entry:
    name: str
    target: str | Callable[..., Any]  # "module:attribute", or the object itself (plug-ins)
    description: str = ""


E = TypeVar("E", bound=Entry)


class Registry(Generic[E]):
    """Named entries of one kind ("model", "loss", ...), in declaration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, E] = {}
        self._resolved: dict[str, Any] = {}  # name -> implementation, once imported (the trainer asks per step)

    def add(self, entry: E) -> E:
        if entry.name in self._entries:
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice")
        self._entries[entry.name] = entry
        return entry

    def register(self, name: str, description: str = "") -> Callable[[Callable], Callable]:
        """Decorator for plug-ins: `@LOSSES.register("mine")` over a builder."""

        def wrap(target: Callable) -> Callable:
            self.add(Entry(name, target, description))  # type: ignore[arg-type]
            return target

        return wrap

    def names(self) -> list[str]:
        return list(self._entries)

    def entry(self, name: str) -> E:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(self._entries)}") from None

    def get(self, name: str) -> Any:
        """The implementation of `name`, imported on first use."""
        if name not in self._resolved:
            self._resolved[name] = resolve(self.entry(name).target)
        return self._resolved[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)


# --- the registries of training ------------------------------------------------------------------------
# Networks are declared in `lenet.models` (with what each offers); recipes in `lenet.recipes`.

LOSSES: Registry[Entry] = Registry("loss")
LOSSES.add(Entry("cross_entropy", "lenet.losses:cross_entropy", "softmax cross-entropy on logits"))
LOSSES.add(Entry("map", "lenet.losses:map_loss", "the paper's MAP criterion on RBF distances (classic)"))

OPTIMIZERS: Registry[Entry] = Registry("optimizer")
OPTIMIZERS.add(Entry("adam", "lenet.optim.builders:adam", "Adam (torch's fused kernel where it has one)"))
OPTIMIZERS.add(Entry("adamw", "lenet.optim.builders:adamw", "Adam with decoupled weight decay"))
OPTIMIZERS.add(Entry("sgd", "lenet.optim.builders:sgd", "SGD with optional (Nesterov) momentum"))
OPTIMIZERS.add(Entry("muon", "lenet.optim.muon:muon", "Muon (orthogonalised momentum) for the weight matrices "
                     "and filters, AdamW for biases and the output layer; Nesterov always"))
OPTIMIZERS.add(Entry("sdlm", "lenet.optim.sdlm:build_sdlm", "the paper's stochastic diagonal Levenberg-Marquardt"))

SCHEDULES: Registry[Entry] = Registry("schedule")
for _name, _what in (("constant", "the tutorial's"), ("step", "x0.1 at 1/2 and 3/4 of training"),
                     ("cosine", "cosine decay to 0"), ("onecycle", "linear ramp up, then linear decay"),
                     ("paper", "the 1998 paper's eta by pass")):
    SCHEDULES.add(Entry(_name, f"lenet.optim.schedules:{_name}", _what))

AUGMENTATIONS: Registry[Entry] = Registry("augmentation")
AUGMENTATIONS.add(Entry("none", "lenet.augment:identity", "no augmentation"))
AUGMENTATIONS.add(Entry("affine", "lenet.augment:affine", "the paper's random planar affine distortions"))
AUGMENTATIONS.add(Entry("affine+rotate", "lenet.augment:affine_rotate",
                        "the affine distortions, then a rotation of up to 10 degrees"))
AUGMENTATIONS.add(Entry("shift", "lenet.augment:shift", "random whole-pixel shifts of up to 2 px"))
AUGMENTATIONS.add(Entry("elastic", "lenet.augment:elastic",
                        "Simard 2003 elastic distortions (sigma 4, alpha 34 px)"))
AUGMENTATIONS.add(Entry("elastic+affine", "lenet.augment:elastic_affine",
                        "elastic distortions composed with the affine ones, one resampling"))
AUGMENTATIONS.add(Entry("elastic-mild+affine", "lenet.augment:mild_elastic_affine",
                        "Ciresan 2010's weaker elastic field (sigma 6, alpha 36 px) with the affine ones"))

# Datasets in the MNIST format: the shipped MNIST, and torchvision's classes for the others.
DATASETS: Registry[Entry] = Registry("dataset")
DATASETS.add(Entry("mnist", "lenet.data:mnist_splits", "MNIST, shipped with lenet"))
for _name in ("fashionmnist", "kmnist", "qmnist", "emnist-digits"):
    DATASETS.add(Entry(_name, "lenet.data:torchvision_splits", "torchvision's, downloaded into --data-root"))
del _name, _what

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "auto")
KERNELS = ("auto", "conv", "matmul")


DIGIT_WIDTHS = range(4, 29)  # pixels: from a stroke to the whole 28-pixel frame
DIGIT_WIDTH_RULE = f"a whole number of pixels from {DIGIT_WIDTHS[0]} to {DIGIT_WIDTHS[-1]}"


@dataclass(frozen=True)
class ModelEntry(Entry):
    """A network and what it offers, so that no caller probes a model with hasattr."""

    # Training defaults the network needs to train well (e.g. the paper's loss for `classic`);
    # recipes and explicit flags override them.
    train_defaults: dict[str, Any] = field(default_factory=dict)
    # Initialisation rules the builder accepts as `init=` (empty: the network has one, fixed).
    init_choices: tuple[str, ...] = ()
    # Whether the builder accepts `digit_width=` (normalise each digit's width first: models/width.py),
    # one of DIGIT_WIDTHS.
    digit_width: bool = False
    # "module:attribute" of a function model -> module computing the same function as matrix products
    # from uint8 pixels (the CPU bf16 training form), or None.
    matmul_form: str | None = None
