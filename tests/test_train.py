import json

import pytest

import lenet
from lenet.errors import ConfigError

# 10,000 training images (the rest held out) keep these runs to a few seconds on 2 cores.
SMALL = {"val_size": 50_000, "log_every": 0}


def test_short_training_on_real_mnist_lowers_the_loss_and_learns(tmp_path, capsys):
    # defaults (cosine decay) on 20,000 images: the decay needs a few more steps than the old constant rate
    result = lenet.train(epochs=2, batch_size=64, out=tmp_path, val_size=40_000, log_every=0)
    losses = [m["train_loss"] for m in result.history]
    assert losses[1] < losses[0] < 2.3  # 2.30 = ln 10, an untrained guess
    assert result.test.accuracy > 90.0
    assert result.history[-1]["val_accuracy"] > 90.0
    out = capsys.readouterr().out
    assert f"Test Accuracy: {result.test.accuracy:.2f}%" in out
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert {"train_loss", "train_accuracy", "images_per_s", "seconds"} <= set(lines[0])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["epochs"] == 2 and config["model"] == "seed"
    # the saved model is the trained one
    assert lenet.evaluate(tmp_path).accuracy == pytest.approx(result.test.accuracy)


def test_tutorial_log_line_format(capsys):
    lenet.train(epochs=1, batch_size=500, val_size=50_000, log_every=10)
    out = capsys.readouterr().out
    assert "Epoch [1/1], Step [10/20], Loss: " in out
    assert "Epoch [1/1], Step [20/20], Loss: " in out


def test_interrupted_then_resumed_run_is_bit_identical(interrupted_and_resumed):
    options = {"epochs": 3, "batch_size": 128, "seed": 5, "deterministic": True, "threads": 1, **SMALL}
    whole, resumed, differing = interrupted_and_resumed(options)
    assert differing == []  # bit-identical weights
    assert resumed.history[0] == pytest.approx(whole.history[0], rel=0.5)  # epoch 1 kept from the first run
    assert len(resumed.history) == 3


def test_resume_refuses_to_change_the_recipe(tmp_path):
    lenet.train(epochs=1, out=tmp_path, batch_size=1000, **SMALL)
    with pytest.raises(ConfigError, match="cannot change lr when resuming"):
        lenet.train(resume=tmp_path, lr=0.5)


def test_config_validation_reports_every_problem():
    with pytest.raises(ConfigError) as err:
        lenet.make_config(epochs=0, batch_size=-4, optimizer="rmsprop", dataset="cifar")
    message = str(err.value)
    for part in ("epochs must be a positive integer, got 0", "batch-size must be a positive integer, got -4",
                 "unknown optimizer 'rmsprop'", "unknown dataset 'cifar'"):
        assert part in message


def test_recipes_layer_under_explicit_options():
    cfg = lenet.make_config(recipe="tutorial", lr=3e-3)
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.recipe) == (3e-3, 64, 10, "tutorial")
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        lenet.make_config(recipe="nope")


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "cosine"), ("adamw", "onecycle"), ("adam", "step")])
def test_optimizers_and_schedules_train(optimizer, schedule):
    lr = 0.05 if optimizer == "sgd" else 2e-3
    result = lenet.train(epochs=1, batch_size=64, optimizer=optimizer, schedule=schedule, lr=lr, nesterov=True,
                         val_size=40_000, log_every=0)
    assert result.history[0]["train_loss"] < 1.0  # from 2.30 (ln 10) at the start


def test_defaults_are_the_tutorial_recipe_with_a_cosine_decay():
    import dataclasses

    default, tutorial = lenet.make_config(), lenet.make_config(recipe="tutorial")
    differ = {f.name for f in dataclasses.fields(default) if getattr(default, f.name) != getattr(tutorial, f.name)}
    assert differ == {"schedule", "recipe"}
    assert (default.schedule, tutorial.schedule) == ("cosine", "constant")
    assert (default.model, default.optimizer, default.lr, default.batch_size, default.epochs) == (
        "seed", "adam", 1e-3, 64, 10)
