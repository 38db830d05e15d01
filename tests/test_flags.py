"""lenet.cli.flags: the training flags are generated from TrainConfig's fields and the registries, so every
field has its flag, every registered name is a listed choice, and parsed flags map back to the config."""

import argparse
import dataclasses

import pytest
from fresh_python import assert_runs_without_importing

from lenet.cli import main
from lenet.cli.flags import add_train_arguments, flag_fields, train_options
from lenet.errors import ConfigError
from lenet.models import MODELS
from lenet.recipes import RECIPES
from lenet.registry import AUGMENTATIONS, DATASETS, DEVICES, KERNELS, LOSSES, OPTIMIZERS, PRECISIONS, SCHEDULES
from lenet.trainer import TrainConfig, make_config


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser


def _help_of(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())  # one line: argparse wraps words anywhere


def test_every_field_but_the_record_keeping_ones_has_a_flag():
    flagged = {f.name for f in flag_fields()}
    assert flagged == {f.name for f in dataclasses.fields(TrainConfig)} - {"recipe", "extra"}
    actions = {a.dest for a in _train_parser()._actions}
    assert flagged | {"recipe", "distort", "resume", "no_progress"} <= actions


def test_help_lists_every_registered_choice(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # one line: argparse wraps words anywhere
    for names in (MODELS.names(), DATASETS.names(), OPTIMIZERS.names(), SCHEDULES.names(), LOSSES.names(),
                  AUGMENTATIONS.names(), DEVICES, PRECISIONS, KERNELS, list(RECIPES)):
        assert "{" + ",".join(names) + "}" in text
    for name in ("sdlm", "paper", "map", "lecun-uniform"):  # the ones the hand-typed help had lost
        assert name in text
    assert "(default 64; network classic: 8)" in text  # defaults, and the network's own
    assert "networks with a matrix-product form: seed" in text


def test_parsed_flags_build_the_config_they_name():
    args = _train_parser().parse_args(["--recipe", "fast", "--model", "seed", "--epochs", "2", "--betas", "0.8",
                                       "0.95", "--compile", "--distort", "--precision", "fp32", "--no-progress"])
    options = train_options(args)
    assert options == {"model": "seed", "epochs": 2, "betas": [0.8, 0.95], "compile": True, "precision": "fp32",
                       "augment": "affine", "recipe": "fast", "resume": None, "progress_bar": False}
    cfg = make_config(options.pop("recipe"), **{k: v for k, v in options.items() if k not in ("resume",
                                                                                             "progress_bar")})
    assert (cfg.epochs, cfg.betas, cfg.compile, cfg.augment, cfg.precision, cfg.batch_size) == (
        2, (0.8, 0.95), True, "affine", "fp32", 256)  # batch size from the recipe: unset flags fall through
    assert train_options(_train_parser().parse_args([])) == {"recipe": None, "resume": None, "progress_bar": None}


def test_distort_refuses_another_augmentation():
    with pytest.raises(ConfigError, match="--distort is --augment affine"):
        train_options(_train_parser().parse_args(["--distort", "--augment", "shift"]))


def test_a_subset_with_the_callers_defaults():
    parser = argparse.ArgumentParser()
    add_train_arguments(parser, ["batch_size", "precision"], defaults={"batch_size": 1024})
    assert train_options(parser.parse_args([])) == {"batch_size": 1024}
    assert "(default 1024)" in _help_of(parser) and "--epochs" not in _help_of(parser)
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):  # the config reports it, with the rest
        make_config(**train_options(parser.parse_args(["--precision", "fp8"])))
    with pytest.raises(ValueError, match="no training flag for colour"):
        add_train_arguments(argparse.ArgumentParser(), ["colour"])


def test_building_the_flags_loads_no_torch():
    assert_runs_without_importing("import argparse\nfrom lenet.cli.flags import add_train_arguments\n"
                                  "add_train_arguments(argparse.ArgumentParser())")
