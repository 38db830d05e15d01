"""The training flags, generated from `TrainConfig`'s fields: names, help, choices and defaults all come from
lenet/trainer/config.py and the registries, so `lenet train --help` cannot drift from what training accepts.

    add_train_arguments(parser)      every flag of `lenet train`
    add_train_arguments(parser, ["batch_size", "precision"], defaults={"batch_size": 1024})
                                     some of them, with the caller's defaults (lenet bench, benchmarks/)
                                     (and helps={"threads": ...}: the caller's text, where the flag does
                                     something else there)
    train_options(parser.parse_args())
                                     keyword arguments for `lenet.train(...)` (and train_options(args, FIELDS)
                                     for a subset)

A flag left out is None and falls through to the recipe, the network's own defaults and TrainConfig's.
This module imports no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError
from ..models import MODELS
from ..recipes import RECIPES
from ..trainer.config import GROUPS, choice_descriptions, config_fields, field_choices


def flag_fields() -> list[dataclasses.Field]:
    """The TrainConfig fields that have a command-line flag, in field order."""
    return [f for f in config_fields() if f.metadata["type"] is not None]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def field_help(f: dataclasses.Field, default: Any = dataclasses.MISSING, text: str | None = None) -> str:
    """The help of `f`'s flag: its text (or the caller's `text`), what each choice is, and its default (and the
    networks' own, unless the caller replaced the default)."""
    parts = [f.metadata["help"] if text is None else text]
    described = choice_descriptions(f)
    if described:
        parts.append("; ".join(f"{name}: {text}" for name, text in described.items()))
    if f.metadata["notes"] is not None:
        parts.append(f.metadata["notes"]())
    shown = []
    if default is dataclasses.MISSING:
        default = f.default
        shown = [f"network {name}: {_shown(MODELS.entry(name).train_defaults[f.name])}" for name in MODELS.names()
                 if f.name in MODELS.entry(name).train_defaults]
    if default is not None and f.metadata["type"] is not bool:  # a switch is off unless given
        shown.insert(0, f"default {_shown(default)}")
    text = ". ".join(parts) + (f" ({'; '.join(shown)})" if shown else "")
    return text.replace("%", "%%")  # argparse %-formats help texts


def _add_field(container: Any, f: dataclasses.Field, default: Any = dataclasses.MISSING,
               text: str | None = None) -> None:
    meta = f.metadata
    kwargs: dict[str, Any] = {"help": field_help(f, default, text),
                              "default": None if default is dataclasses.MISSING else default}
    if meta["type"] is bool:
        kwargs["action"] = "store_true"
    else:
        kwargs["type"] = meta["type"]
        for key in ("metavar", "nargs"):
            if meta[key] is not None:
                kwargs[key] = meta[key]
        choices = field_choices(f)
        if choices is not None:
            # listed, not enforced by argparse: the config's validation reports every bad value in one line
            kwargs["metavar"] = "{" + ",".join(choices) + "}"
    container.add_argument(flag_name(f.name), **kwargs)


def add_train_arguments(parser: argparse.ArgumentParser | Any, fields: Iterable[str] | None = None,
                        defaults: Mapping[str, Any] | None = None, helps: Mapping[str, str] | None = None) -> None:
    """Add training flags to `parser`: all of `lenet train`'s (in groups, with --recipe, --distort, --resume and
    --no-progress) when `fields` is None, else the flags of those TrainConfig fields. `defaults` replaces
    TrainConfig's default of a flag (and the help shows it); other flags default to None. `helps` replaces a
    flag's text, for a caller where it means more or less than in `lenet train`."""
    defaults, helps = dict(defaults or {}), dict(helps or {})
    by_name = {f.name: f for f in flag_fields()}
    if fields is not None:
        unknown = [name for name in fields if name not in by_name]
        if unknown:
            raise ValueError(f"no training flag for {', '.join(unknown)}")
        for name in fields:
            _add_field(parser, by_name[name], defaults.get(name, dataclasses.MISSING), helps.get(name))
        return
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    groups["what"].add_argument("--recipe", metavar="{" + ",".join(RECIPES) + "}",
                                help="a named set of values over the defaults; flags still override them")
    for f in by_name.values():
        _add_field(groups[f.metadata["group"]], f, defaults.get(f.name, dataclasses.MISSING), helps.get(f.name))
        if f.name == "augment":
            groups["how"].add_argument("--distort", action="store_true",
                                       help="the paper's random planar affine distortions (= --augment affine)")
    groups["run"].add_argument("--resume", metavar="DIR", help="continue the run saved in DIR (only --epochs and "
                                                               "how it runs, e.g. --threads, may change)")
    groups["run"].add_argument("--no-progress", action="store_true", help="no progress bar")


def train_options(args: argparse.Namespace, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """Keyword arguments for `lenet.train(...)` from parsed training flags: the TrainConfig fields that were
    given (only those in `fields`, when the parser also has flags of its own with a field's name), and
    recipe, resume and progress_bar where the parser has those flags."""
    names = [f.name for f in flag_fields()] if fields is None else list(fields)
    options = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if getattr(args, "distort", False):
        if options.get("augment", "affine") != "affine":
            raise ConfigError(f"--distort is --augment affine; it cannot be combined with --augment "
                              f"{options['augment']}")
        options["augment"] = "affine"
    if hasattr(args, "recipe"):
        options["recipe"] = args.recipe
    if hasattr(args, "resume"):
        options["resume"] = args.resume
    if hasattr(args, "no_progress"):
        options["progress_bar"] = False if args.no_progress else None
    return options
