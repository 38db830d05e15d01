"""`lenet speedrun`: time to a target MNIST test accuracy from process start, over several seeds.

In the spirit of KellerJordan's cifar10-airbench: a recipe's claim is the mean test accuracy and the mean
wall time of N seeds, each trained by a fresh `python -m lenet train` process, because "from process start"
includes the interpreter, `import torch` and loading the data, which a run inside this process would skip.

Per run, from the child's own lines (trainer/loop.py):

    Start-up: 2.10 s from process start to the first step (imports 1.80 s)
                                             start-up seconds, and the imports' share of them
    Epoch e/E: ..., 1.3 s                    training seconds = the sum of these (0.1 s resolution each)
    Test Accuracy: 99.18%                    the accuracy
    Wall time: 6.1 s from process start      wall seconds, from /proc (the child's process start)

evaluation = wall - start-up - training (the test-set pass and the checkpoints between epochs), and this
process's own spawn-to-exit seconds beside them. The run counts when the mean accuracy reaches the target.

This module imports no torch: the parent only spawns and reads; the children train.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ._version import __version__
from .errors import ConfigError, TrainingError
from .hardware import detect_cpu
from .recipes import get_recipe
from .trainer.config import MAX_SEED, resolve_config

DEFAULT_RECIPE = "speedrun"
DEFAULT_TARGET = 99.0  # percent, MNIST test accuracy
STDERR_LINES = 5  # of a failed child's stderr, shown in the error

# Options a speedrun sets itself (seed, recipe) or that would break the next child (a run folder is refused
# when it holds a run already), so they may not be passed through.
_NOT_PASSED = ("seed", "recipe", "out")

# Anchored on whole lines: "Test Accuracy without the moving average: ..." and the progress lines
# "Epoch [1/3], Step [...]" must not match.
_ACCURACY = re.compile(r"^Test Accuracy: ([0-9.]+)%$", re.MULTILINE)
_WALL = re.compile(r"^Wall time: ([0-9.]+) s from process start$", re.MULTILINE)
_STARTUP = re.compile(r"^Start-up: ([0-9.]+) s from process start to the first step \(imports ([0-9.]+) s\)$",
                      re.MULTILINE)
_EPOCH = re.compile(r"^Epoch (\d+)/(\d+): .*, ([0-9.]+) s$", re.MULTILINE)


@dataclass(frozen=True)
class ChildReport:
    """What one `lenet train` process printed about itself."""

    accuracy: float  # test accuracy, percent
    wall_s: float  # from the child's process start to its "Wall time" line
    training_s: float  # the sum of its epochs' seconds
    epochs: int
    startup_s: float  # from the child's process start to its first training step
    imports_s: float  # of which the interpreter's and the modules' imports (torch's above all)


@dataclass(frozen=True)
class Run:
    seed: int
    accuracy: float
    wall_s: float
    training_s: float
    process_s: float  # measured by the parent: spawn to exit (includes the interpreter's exit)
    startup_s: float
    imports_s: float

    @property
    def evaluation_s(self) -> float:
        """The rest of the wall time: the test-set pass and the checkpoints written between epochs."""
        return self.wall_s - self.startup_s - self.training_s

    @property
    def startup_eval_s(self) -> float:  # the one number results before 2026-12-07 gave
        return self.wall_s - self.training_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "evaluation_s": self.evaluation_s, "startup_eval_s": self.startup_eval_s}


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # sample standard deviation; None for a single run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stat(values: Sequence[float]) -> Stat:
    """Mean and sample standard deviation (n - 1), the spread a reader expects of 'mean +- std over seeds'."""
    if not values:
        raise ValueError("no values")
    return Stat(statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None)


@dataclass(frozen=True)
class Plan:
    """A validated speedrun: which seeds, and the command every child runs."""

    recipe: str
    seeds: list[int]
    target: float
    options: dict[str, Any]  # training options passed through to every child
    cpu: dict[str, Any]  # hardware.Cpu.to_dict(): model, cores, clock, how each was found

    def command(self, seed: int | str) -> list[str]:
        return [sys.executable, "-m", "lenet", "train", "--recipe", self.recipe, "--seed", str(seed),
                "--no-progress", *option_flags(self.options)]

    def command_text(self) -> str:
        """Every child's command, as a reader would type it."""
        return " ".join(["python", *self.command("SEED")[1:]])


def _over_runs(number: str) -> property:
    """A SpeedrunResult property: the Stat of Run.<number> over its runs."""
    return property(lambda result: stat([getattr(run, number) for run in result.runs]),
                    doc=f"mean and sample std of the runs' {number}")


@dataclass(frozen=True)
class SpeedrunResult:
    plan: Plan
    runs: list[Run] = field(default_factory=list)

    # mean ± std over the runs of one of Run's numbers
    accuracy = _over_runs("accuracy")
    wall = _over_runs("wall_s")
    startup = _over_runs("startup_s")
    imports = _over_runs("imports_s")
    training = _over_runs("training_s")
    evaluation = _over_runs("evaluation_s")
    startup_eval = _over_runs("startup_eval_s")
    process = _over_runs("process_s")

    @property
    def counts(self) -> bool:
        return self.accuracy.mean >= self.plan.target

    def to_dict(self) -> dict[str, Any]:
        summary = {name: getattr(self, name).to_dict()
                   for name in ("accuracy", "wall", "startup", "imports", "training", "evaluation",
                                "startup_eval", "process")}
        return {"lenet": __version__, "recipe": self.plan.recipe, "target": self.plan.target,
                "options": self.plan.options, "command": self.plan.command_text(), "cpu": self.plan.cpu,
                "python": sys.version.split()[0], "torch": _torch_version(),
                "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_average": _load_average(),
                "runs": [r.to_dict() for r in self.runs], **summary, "counts": self.counts}


def _load_average() -> list[float] | None:
    # at the end of the runs: a busy machine shows here, and its timings then say little about the recipe
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):  # not Unix
        return None


def _torch_version() -> str | None:
    # from the installed metadata: importing torch here would cost seconds and prove nothing about the children
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def option_flags(options: Mapping[str, Any]) -> list[str]:
    """`lenet train` flags for TrainConfig options: a switch for True, two words for a pair (e.g. betas)."""
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            flags.append(flag)
        elif isinstance(value, (tuple, list)):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


def make_plan(*, runs: int = 10, first_seed: int = 0, recipe: str = DEFAULT_RECIPE, target: float = DEFAULT_TARGET,
              options: Mapping[str, Any] | None = None) -> Plan:
    """Check everything a child would refuse, here and before the first child starts (ConfigError)."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ConfigError(f"--runs must be at least 1, got {runs}")
    if isinstance(first_seed, bool) or not isinstance(first_seed, int) or first_seed < 0:
        raise ConfigError(f"--first-seed must be an integer >= 0, got {first_seed}")
    if not (isinstance(target, (int, float)) and math.isfinite(target) and 0 < target <= 100):
        raise ConfigError(f"--target must be a percentage in (0, 100], got {target}")
    if first_seed + runs - 1 > MAX_SEED:
        raise ConfigError(f"the last seed, --first-seed + --runs - 1 = {first_seed + runs - 1}, is above the "
                          f"largest seed {MAX_SEED}")
    fixed = [name for name in _NOT_PASSED if name in options]
    if fixed:
        raise ConfigError(f"a speedrun sets {', '.join(fixed)} itself; it cannot be passed through")
    get_recipe(recipe)  # an unknown recipe, named with the known ones
    # the children's configs differ only by seed: one check (values, threads vs cores, paths) stands for all
    resolve_config(recipe=recipe, seed=first_seed + runs - 1, resolve_auto=False, **options)  # no torch here
    return Plan(recipe, list(range(first_seed, first_seed + runs)), float(target), options, detect_cpu().to_dict())


def parse_child_output(text: str) -> ChildReport:
    """The accuracy, wall and training seconds a `lenet train` child printed (ValueError when a line is missing)."""
    accuracy, wall, startup = _ACCURACY.findall(text), _WALL.findall(text), _STARTUP.findall(text)
    epochs = [(int(e), int(total), float(s)) for e, total, s in _EPOCH.findall(text)]
    if len(accuracy) != 1 or len(wall) != 1 or len(startup) != 1:
        raise ValueError("expected one 'Start-up: X s from process start ...', one 'Test Accuracy: X%' and one "
                         f"'Wall time: X s from process start' line, found {len(startup)}, {len(accuracy)} and "
                         f"{len(wall)}")
    total = epochs[0][1] if epochs else 0
    # every epoch exactly once, in order: a missing line would make the training seconds silently short
    if not epochs or [e for e, _, _ in epochs] != list(range(1, total + 1)) or any(t != total for _, t, _ in epochs):
        raise ValueError(f"expected the lines 'Epoch 1/E' .. 'Epoch E/E', found {[f'{e}/{t}' for e, t, _ in epochs]}")
    startup_s, imports_s = startup[0]
    return ChildReport(float(accuracy[0]), float(wall[0]), sum(s for _, _, s in epochs), total,
                       float(startup_s), float(imports_s))


def _tail(text: str, lines: int = STDERR_LINES) -> str:
    # on one line: the CLI prints a LenetError as a single line
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(none)"


def run_one(plan: Plan, seed: int) -> Run:
    """One child process, one seed; TrainingError naming the seed when it fails or prints no result."""
    command = plan.command(seed)
    start = time.perf_counter()
    child = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    process_s = time.perf_counter() - start
    if child.returncode != 0:
        how = (f"was killed by signal {-child.returncode}" if child.returncode < 0
               else f"exited with code {child.returncode}")
        raise TrainingError(f"seed {seed}: `{' '.join(command[1:])}` {how}; its last stderr lines: "
                            f"{_tail(child.stderr)}")
    try:
        report = parse_child_output(child.stdout)
    except ValueError as e:
        raise TrainingError(f"seed {seed}: `{' '.join(command[1:])}` finished but its output is not understood "
                            f"({e}); its last stdout lines: {_tail(child.stdout)}") from None
    return Run(seed, report.accuracy, report.wall_s, report.training_s, process_s, report.startup_s,
               report.imports_s)


def run_plan(plan: Plan, on_run: Callable[[Run], None] | None = None) -> SpeedrunResult:
    """The children one after another (never side by side: they would time each other), then the summary."""
    runs = []
    for seed in plan.seeds:
        run = run_one(plan, seed)
        runs.append(run)
        if on_run is not None:
            on_run(run)
    return SpeedrunResult(plan, runs)


def run_speedrun(*, runs: int = 10, first_seed: int = 0, recipe: str = DEFAULT_RECIPE,
                 target: float = DEFAULT_TARGET, options: Mapping[str, Any] | None = None,
                 on_run: Callable[[Run], None] | None = None) -> SpeedrunResult:
    """`runs` seeds from `first_seed` of `recipe`, each in a fresh process; `options` are TrainConfig fields
    passed to every child (e.g. {"threads": 1}); `on_run` is called with each run as it finishes."""
    return run_plan(make_plan(runs=runs, first_seed=first_seed, recipe=recipe, target=target, options=options),
                    on_run)


# --- text -----------------------------------------------------------------------------------------------------

def _pm(s: Stat, digits: int) -> str:
    return f"{s.mean:.{digits}f}" if s.std is None else f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"


def format_header(plan: Plan) -> str:
    seeds = f"seed {plan.seeds[0]}" if len(plan.seeds) == 1 else f"seeds {plan.seeds[0]}-{plan.seeds[-1]}"
    cores = f"{plan.cpu['cores']} core{'s' if plan.cpu['cores'] != 1 else ''}"
    return (f"speedrun on {plan.cpu['model']} ({cores}): recipe {plan.recipe}, {seeds}, one fresh process each: "
            f"{plan.command_text()}")


def format_run(run: Run) -> str:
    return (f"seed {run.seed}: {run.accuracy:.2f} %, wall {run.wall_s:.1f} s (start-up {run.startup_s:.1f} s, of "
            f"which imports {run.imports_s:.1f} s; training {run.training_s:.1f} s; evaluation "
            f"{run.evaluation_s:.1f} s; spawn to exit {run.process_s:.2f} s)")


def format_summary(result: SpeedrunResult) -> str:
    target = result.plan.target
    verdict = f"counts (mean >= {target} %)" if result.counts else f"does not count (mean < {target} %)"
    n = len(result.runs)
    return (f"speedrun: {_pm(result.accuracy, 2)} % over {n} seed{'s' if n != 1 else ''}, "
            f"wall {_pm(result.wall, 2)} s from process start (start-up {_pm(result.startup, 1)} s, of which "
            f"imports {_pm(result.imports, 1)} s; training {_pm(result.training, 1)} s; evaluation "
            f"{_pm(result.evaluation, 1)} s): {verdict}")
