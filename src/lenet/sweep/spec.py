"""What a sweep is, before anything runs: option lists, the grid they span, a search space, trial keys.

    parse_values("seed", "0-4,10")       -> [0, 1, 2, 3, 4, 10]   (a list for one option, typed by its field)
    parse_space("lr=log:1e-4:1e-2")     -> SpaceDim("lr", "float", 1e-4, 1e-2, log=True)
    SweepSpec(...).cells()              -> the grid's configurations (options without the seed)
    SweepSpec(...).trials()             -> every (cell, seed) of a grid, seeds outermost

A trial is identified by its options: `trial_key` hashes them (the settings that only change speed, like
threads, left out), and `run_name` names its run folder from the options that vary plus that hash, so the
same training always lands in the same folder and is never trained twice. Plain Python: no torch, no optuna.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..trainer.config import config_fields, known_split_problems, resolve_config

# Settings that change how fast a run goes or what it prints, never what it learns: not part of a trial's
# identity, so a trial keeps its run folder whatever machine or worker count runs it.
SPEED_ONLY = frozenset({"threads", "log_every", "out", "device"})
# Fields a sweep cannot take (`out` is the sweep's folder; `extra` is for Python plug-ins).
NOT_SWEPT = frozenset({"out", "extra"})
GRID_LIMIT = 10_000
_FIELDS = {f.name: f for f in config_fields()}
_RANGE = re.compile(r"^(\d+)-(\d+)$")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _convert(name: str, text: str) -> Any:
    """One value of option `name` from its text, by the field's flag type."""
    kind = _FIELDS[name].metadata["type"]
    if kind is bool:
        lowered = text.lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise ConfigError(f"{flag(name)}: {text!r} is not true or false")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{flag(name)}: {text!r} is not an integer") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{flag(name)}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{flag(name)}: {text!r} is not a finite number")
        return value
    return text


def parse_values(name: str, text: str) -> list[Any]:
    """The values of one option written as a list: `a,b,c`; integer options also take inclusive ranges
    (`0-9`, `0-4,10`). Each value is converted by the option's type; empty items, empty ranges and repeated
    values are refused with a ConfigError naming the flag."""
    items = text.split(",")
    if any(not item.strip() for item in items):
        raise ConfigError(f"{flag(name)}: empty value in the list {text!r} (write values separated by commas, "
                          f"e.g. 1,2,3)")
    values: list[Any] = []
    for item in (item.strip() for item in items):
        span = _RANGE.match(item) if _FIELDS[name].metadata["type"] is int else None
        if span:
            low, high = int(span.group(1)), int(span.group(2))
            if low > high:
                raise ConfigError(f"{flag(name)}: the range {item} is empty (write the lower bound first: "
                                  f"{high}-{low})")
            if high - low + 1 + len(values) > GRID_LIMIT:  # refused before a list of them is made
                raise ConfigError(f"{flag(name)}: the range {item} has {high - low + 1:,} values; a sweep runs at "
                                  f"most {GRID_LIMIT:,} trainings")
            values.extend(range(low, high + 1))
        else:
            values.append(_convert(name, item))
    repeated = sorted(str(v) for v, n in Counter(values).items() if n > 1)  # Counter: linear, a sweep's lists are long
    if repeated:
        raise ConfigError(f"{flag(name)}: {', '.join(repeated)} listed more than once in {text!r}")
    return values


def parse_option(name: str, texts: str | list[str]) -> list[Any]:
    """The list of values of a flag as given on the command line (a field with nargs=2, like --betas, takes
    one list per position and spans their product)."""
    if name not in _FIELDS or name in NOT_SWEPT:
        raise ConfigError(f"{name} is not an option a sweep can vary")
    if isinstance(texts, str):
        return parse_values(name, texts)
    per_position = [parse_values(name, text) for text in texts]
    return [tuple(combo) for combo in itertools.product(*per_position)]


@dataclass(frozen=True)
class SpaceDim:
    """One dimension of a search space: `kind` float or int (LOW..HIGH, `log`: log-uniform) or choice."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high, "log": self.log,
                "choices": list(self.choices)}


_SPACE_HELP = "write NAME=log:LOW:HIGH, NAME=float:LOW:HIGH, NAME=int:LOW:HIGH or NAME=A,B,C"


def parse_space(text: str) -> SpaceDim:
    """One `--space` entry: `lr=log:1e-4:1e-2`, `warmup_epochs=float:0:1`, `epochs=int:2:5`,
    `batch_size=64,128,256` (option names with - or _)."""
    name, sep, spec = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not spec:
        raise ConfigError(f"--space {text!r}: {_SPACE_HELP}")
    if name not in _FIELDS or name in NOT_SWEPT | SPEED_ONLY or _FIELDS[name].metadata["nargs"]:
        raise ConfigError(f"--space {text!r}: {name} is not an option a search can vary")
    kind, _, bounds = spec.partition(":")
    if kind not in ("log", "float", "int"):
        choices = parse_values(name, spec)
        if len(choices) < 2:
            raise ConfigError(f"--space {text!r}: a choice needs at least two values ({_SPACE_HELP})")
        return SpaceDim(name, "choice", choices=tuple(choices))
    field_type = _FIELDS[name].metadata["type"]
    if field_type not in (int, float) or (kind != "log" and kind != field_type.__name__):
        raise ConfigError(f"--space {text!r}: {name} takes {getattr(field_type, '__name__', 'text')} values, "
                          f"not a {kind} range")
    parts = bounds.split(":")
    try:
        low, high = (field_type(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        low = high = None
    if low is None or high is None:
        raise ConfigError(f"--space {text!r}: {kind} needs two numbers LOW:HIGH ({_SPACE_HELP})")
    if not low < high:
        raise ConfigError(f"--space {text!r}: LOW must be below HIGH")
    if kind == "log" and low <= 0:
        raise ConfigError(f"--space {text!r}: a log range needs LOW > 0")
    return SpaceDim(name, "int" if field_type is int else "float", low, high, log=kind == "log")


def canonical(options: Mapping[str, Any]) -> str:
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in sorted(options.items())},
                      sort_keys=True, separators=(",", ":"))


def trial_key(options: Mapping[str, Any]) -> str:
    """A training's identity: the hash of its options (recipe and seed included), speed settings left out."""
    kept = {k: v for k, v in options.items() if k not in SPEED_ONLY and v is not None}
    return hashlib.sha256(canonical(kept).encode()).hexdigest()[:16]


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "/".join(_shown(v) for v in value)
    return str(value)


def label(options: Mapping[str, Any], names: list[str]) -> str:
    """`lr=0.003 recipe=fast`: the values of `names` in `options`, for tables."""
    return " ".join(f"{name}={_shown(options[name])}" for name in names if name in options)


def run_name(options: Mapping[str, Any], names: list[str]) -> str:
    """The run folder's name: the varying options and the seed, readable, then the trial key (unique)."""
    shown = [f"{name.replace('_', '-')}-{_shown(options[name])}" for name in names if name in options]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(shown))[:80] or "run"
    return f"{readable}-{trial_key(options)[:10]}"


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: fixed options, options given as lists (the grid) and seeds; or, with `search`, a space sampled
    `trials` times. Options are TrainConfig fields (recipe included), as `lenet.train` takes them."""

    fixed: dict[str, Any]
    lists: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    search: str | None = None  # None: grid; "tpe" or "random"
    trials: int = 0
    space: tuple[SpaceDim, ...] = ()

    def __post_init__(self) -> None:
        if self.search is None:
            if self.space or self.trials:
                raise ConfigError("--space and --trials need --search tpe or --search random (without --search "
                                  "a sweep runs the grid of the options given as lists)")
            if self.size > GRID_LIMIT:
                raise ConfigError(f"the grid has {self.size:,} trainings ({self.size_text()}); at most "
                                  f"{GRID_LIMIT:,}")
            return
        if self.search not in ("tpe", "random"):
            raise ConfigError(f"unknown --search {self.search!r} (available: tpe, random)")
        if not self.space:
            raise ConfigError("--search needs a space: --space lr=log:1e-4:1e-2 (one --space per option)")
        if self.trials <= 0:
            raise ConfigError("--search needs --trials K (how many trainings to sample), K >= 1")
        if self.lists or len(self.seeds) != 1:
            listed = [flag(n) for n in self.lists] + (["--seed"] if len(self.seeds) != 1 else [])
            raise ConfigError(f"with --search, {', '.join(listed)} takes one value: sample options with --space "
                              f"(e.g. --space lr=1e-3,3e-3), then run the best ones over seeds as a grid")
        if int(self.fixed.get("val_size") or 0) <= 0:
            raise ConfigError("--search maximises validation accuracy: give --val-size N (N > 0 training images "
                              "held out); the test set never chooses anything")
        names = [d.name for d in self.space]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"--space names an option twice: {', '.join(twice)}")
        clash = sorted(set(names) & set(self.fixed))
        if clash:
            raise ConfigError(f"--space {clash[0]} and {flag(clash[0])} both set {clash[0]}: give it one way")

    @property
    def size(self) -> int:
        """Trainings in the grid (with --search: the trials)."""
        if self.search:
            return self.trials
        return math.prod(len(v) for v in self.lists.values()) * len(self.seeds)

    def size_text(self) -> str:
        return " x ".join([f"{len(v)} {flag(k)}" for k, v in self.lists.items()] + [f"{len(self.seeds)} --seed"])

    @property
    def varying(self) -> list[str]:
        """The options that differ between configurations (grid lists, or the search space), in order."""
        return list(self.lists) if self.search is None else [d.name for d in self.space]

    def cells(self) -> list[dict[str, Any]]:
        """The grid's configurations: fixed options plus one value of each list (no seed)."""
        names = list(self.lists)
        combos = itertools.product(*self.lists.values())
        return [{**self.fixed, **dict(zip(names, combo, strict=True))} for combo in combos]

    def trials_of_grid(self) -> Iterator[dict[str, Any]]:
        """Every training of the grid, seeds outermost: a first result for every configuration comes early."""
        cells = self.cells()
        for seed in self.seeds:
            for cell in cells:
                yield {**cell, "seed": seed}

    def check(self, threads: int | None = None) -> None:
        """Build every training of the grid as its trial will (with `threads`, --threads), so a bad value stops
        the sweep before it starts; with --search, the options given (the sampled ones are in range)."""
        if self.search is not None:
            check_trial({**self.fixed, "seed": self.seeds[0]}, threads)
            return
        names = [*self.varying, "seed"] if len(self.seeds) > 1 else self.varying
        for options in self.trials_of_grid():
            try:
                check_trial(options, threads)
            except ConfigError as e:
                where = label(options, names)
                raise ConfigError(f"{e}{' (in the configuration ' + where + ')' if where else ''}") from None

    def identity(self) -> dict[str, Any]:
        """What must match for two commands to join one study (the number of search trials may grow)."""
        return {"fixed": json.loads(canonical({k: v for k, v in self.fixed.items() if k not in SPEED_ONLY})),
                "lists": json.loads(canonical(self.lists)), "seeds": self.seeds, "search": self.search,
                "space": [d.to_dict() for d in self.space]}

    def to_dict(self) -> dict[str, Any]:
        return {**self.identity(), "fixed": json.loads(canonical(self.fixed)), "trials": self.trials}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepSpec:
        def restore(name: str, value: Any) -> Any:
            return tuple(value) if name == "betas" and isinstance(value, list) else value

        return cls(fixed={k: restore(k, v) for k, v in data["fixed"].items()},
                   lists={k: [restore(k, v) for v in vs] for k, vs in data["lists"].items()},
                   seeds=list(data["seeds"]), search=data["search"], trials=int(data.get("trials", 0)),
                   space=tuple(SpaceDim(d["name"], d["kind"], d["low"], d["high"], d["log"], tuple(d["choices"]))
                               for d in data["space"]))


def check_trial(options: Mapping[str, Any], threads: int | None = None) -> None:
    """ConfigError (or DataError) if a trial of `options` would be refused: its TrainConfig, this machine's
    cores, --data-root, and the split sizes a dataset of known size allows."""
    cfg = resolve_config(resolve_auto=False, **{**options, "threads": threads})  # "auto": no torch here
    problems = known_split_problems(cfg)
    if problems:
        raise ConfigError(problems[0])


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The top-level keys where two `identity()` dicts differ."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))

