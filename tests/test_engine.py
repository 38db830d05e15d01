"""The training engine's options (precision, compile flag, shift augmentation, recipe `fast`): correctness
only. Speed is measured in benchmarks/, never here."""

import io

import pytest
import torch

import lenet
from lenet.augment import get_augmentation
from lenet.cli import main
from lenet.recipes import get_recipe
from lenet.train import fit, make_config

# 2,000 training images: the rest is held out as a validation split, so each run takes a second or two.
SMALL = {"val_size": 58000, "batch_size": 64, "log_every": 0, "threads": 1}


def test_shift_moves_every_image_by_at_most_two_pixels_and_is_reproducible():
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 10:18, 10:18] = 1
    shift = get_augmentation("shift")
    a = shift(x, torch.Generator().manual_seed(1))
    b = shift(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert torch.equal(a.sum((1, 2, 3)), x.sum((1, 2, 3)))  # whole-pixel moves: no ink lost, no blur
    rows = torch.nonzero(a[:, 0].sum(2))[:, 1].view(64, 8)[:, 0]
    cols = torch.nonzero(a[:, 0].sum(1))[:, 1].view(64, 8)[:, 0]
    assert set((rows - 10).tolist()) <= set(range(-2, 3)) and set((cols - 10).tolist()) <= set(range(-2, 3))
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 5  # each image gets its own offset


def test_unknown_precision_is_a_config_error():
    with pytest.raises(lenet.ConfigError, match="precision"):
        make_config(precision="fp8")


def test_fast_recipe_is_fixed_length_and_selects_nothing_on_the_test_set():
    recipe = get_recipe("fast")
    cfg = make_config("fast")
    assert cfg.model == "seed" and cfg.epochs == recipe["epochs"] and cfg.precision == "bf16"
    assert "val_size" not in recipe  # the recipe's settings were tuned on --val-size runs, then fixed


def test_train_flags_include_engine_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--precision" in text and "--compile" in text and "shift" in text


def test_bf16_shift_run_learns(mnist):
    result = fit(make_config(epochs=2, precision="bf16", augment="shift", lr=3e-3, **SMALL),
                 stream=io.StringIO(), progress_bar=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.test.accuracy > 70


def test_bf16_shift_resume_is_bit_identical(interrupted_and_resumed):
    options = {**SMALL, "epochs": 2, "precision": "bf16", "augment": "shift", "schedule": "onecycle", "lr": 3e-3,
               "deterministic": True}
    _, _, differing = interrupted_and_resumed(options)
    assert differing == []  # bit-identical weights
