"""lenet.trainer: config resolution (defaults < network < recipe < flags < resume), the frozen config and its
JSON form, the process state a run sets and restores, and short runs of the loop on real MNIST."""

import dataclasses
import json
import os

import pytest
import torch

import lenet
from lenet.errors import ConfigError
from lenet.models import model_entry
from lenet.recipes import get_recipe
from lenet.trainer import TrainConfig, fit, load_config, make_config, resolve_config, training_state

# 10,000 training images (the rest held out) keep these runs to a few seconds on 2 cores.
SMALL = {"val_size": 50_000, "log_every": 0}
TINY = {"val_size": 59_000, "log_every": 0, "batch_size": 50, "epochs": 1, "threads": 1}  # 1,000 images


# --- config resolution -----------------------------------------------------------------------------------

def test_each_layer_overrides_the_one_below():
    classic = model_entry("classic").train_defaults
    assert make_config().loss == TrainConfig.loss == "cross_entropy"  # defaults
    network = make_config(model="classic")
    assert (network.loss, network.batch_size, network.optimizer) == (classic["loss"], classic["batch_size"], "sdlm")
    tutorial = get_recipe("tutorial")
    over_network = make_config(recipe="tutorial", model="classic")  # the recipe over the network's defaults
    assert (over_network.model, over_network.batch_size, over_network.optimizer) == (
        "classic", tutorial["batch_size"], tutorial["optimizer"])
    assert over_network.loss == classic["loss"]  # what the recipe leaves alone stays the network's
    flags = make_config(recipe="tutorial", model="classic", batch_size=16, lr=None)  # flags over the recipe
    assert (flags.batch_size, flags.lr) == (16, tutorial["lr"])  # None = not given
    assert flags.recipe == "tutorial"


def test_a_resumed_run_keeps_its_config_and_only_takes_more_epochs(tmp_path):
    started = make_config(recipe="fast", seed=4, out=tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(started.to_dict()))
    resumed = resolve_config(resume=tmp_path, epochs=7)
    assert resumed == dataclasses.replace(started, epochs=7)
    assert resolve_config(resume=tmp_path, recipe="fast").epochs == started.epochs
    assert resolve_config(resume=tmp_path, out=tmp_path / "elsewhere").out == str(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="cannot change lr, seed when resuming"):
        resolve_config(resume=tmp_path, lr=0.5, seed=1)
    with pytest.raises(ConfigError, match="cannot change recipe"):
        resolve_config(resume=tmp_path, recipe="tutorial")


def test_config_is_frozen_and_replace_validates():
    cfg = make_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.1
    assert dataclasses.replace(cfg, lr=0.1).lr == 0.1 and cfg.lr == 1e-3
    with pytest.raises(ConfigError, match="epochs must be a positive integer"):
        dataclasses.replace(cfg, epochs=0)


def test_an_empty_folder_name_is_refused():  # --out '' trained and saved nothing, silently
    for name, flag in (("out", "out"), ("data_root", "data-root")):
        with pytest.raises(ConfigError, match=f"^{flag} is empty: give a folder, or leave it out$"):
            make_config(**{name: ""})


def test_extra_options_cannot_shadow_training_options():
    assert make_config(extra={"margin": 0.5}).extra == {"margin": 0.5}  # a plug-in loss's own option
    with pytest.raises(ConfigError, match="extra's 'label_smoothing' is a training option of its own: give "
                                          "label_smoothing=... instead"):
        make_config(extra={"label_smoothing": 0.5})
    with pytest.raises(ConfigError, match="extra must be a mapping of option names to values"):
        make_config(extra={1: 2})


def test_config_json_keeps_its_keys_and_old_files_load(tmp_path):
    cfg = make_config(recipe="fast", out=tmp_path)
    written = json.loads(json.dumps(cfg.to_dict()))
    assert list(written) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert written["betas"] == [0.7, 0.9] and written["out"] == str(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(written))
    assert load_config(tmp_path) == cfg  # betas back to a tuple
    del written["init"]  # a run folder written before `init` existed
    (tmp_path / "config.json").write_text(json.dumps(written))
    assert load_config(tmp_path).init is None
    (tmp_path / "config.json").write_text(json.dumps({**written, "colour": "red"}))
    with pytest.raises(ConfigError, match="unknown key.*colour"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="not a lenet run folder"):
        load_config(tmp_path / "nowhere")


def test_config_validation_reports_every_problem():
    with pytest.raises(ConfigError) as err:
        make_config(epochs=0, batch_size=-4, optimizer="rmsprop", dataset="cifar")
    message = str(err.value)
    for part in ("epochs must be a positive integer, got 0", "batch-size must be a positive integer, got -4",
                 "unknown optimizer 'rmsprop'", "unknown dataset 'cifar'"):
        assert part in message
    with pytest.raises(ConfigError, match="unknown init 'he' for model 'classic'"):
        make_config(model="classic", init="he")
    with pytest.raises(ConfigError, match="unknown training option.*colour"):
        make_config(colour="red")


def test_recipes_layer_under_explicit_options():
    cfg = make_config(recipe="tutorial", lr=3e-3)
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.recipe) == (3e-3, 64, 10, "tutorial")
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        make_config(recipe="nope")


def test_defaults_are_the_tutorial_recipe_with_a_cosine_decay():
    default, tutorial = make_config(), make_config(recipe="tutorial")
    differ = {f.name for f in dataclasses.fields(default) if getattr(default, f.name) != getattr(tutorial, f.name)}
    assert differ == {"schedule", "recipe"}
    assert (default.schedule, tutorial.schedule) == ("cosine", "constant")
    assert (default.model, default.optimizer, default.lr, default.batch_size, default.epochs) == (
        "seed", "adam", 1e-3, 64, 10)


# --- process state -----------------------------------------------------------------------------------------

def _process_state() -> dict:
    return {"threads": torch.get_num_threads(), "rng": torch.get_rng_state(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark, "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


def _assert_same_state(before: dict, after: dict) -> None:
    assert torch.equal(before["rng"], after["rng"])
    assert {k: v for k, v in before.items() if k != "rng"} == {k: v for k, v in after.items() if k != "rng"}


@pytest.fixture()
def unusual_state(monkeypatch):
    """A process state unlike what any run sets: 2 threads (runs here use 1), a seed of our own, cuDNN's
    autotuner on, no cuBLAS setting."""
    threads = torch.get_num_threads()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.set_num_threads(2)
    torch.manual_seed(1234)
    benchmark, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, True
    yield _process_state()
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = benchmark


def test_a_run_restores_threads_rng_and_deterministic_mode(unusual_state):
    result = fit(make_config(deterministic=True, seed=3, **TINY), progress_bar=False)
    assert result.history[0]["train_loss"] < 2.3
    _assert_same_state(unusual_state, _process_state())


def test_a_failed_run_restores_them_too(unusual_state):
    def fail(epoch, metrics):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and not torch.backends.cudnn.benchmark
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(make_config(deterministic=True, **TINY), progress_bar=False, on_epoch_end=fail)
    _assert_same_state(unusual_state, _process_state())
    with pytest.raises(RuntimeError), training_state(make_config(threads=1, seed=9), torch.device("cpu")):
        torch.rand(3)
        raise RuntimeError("inside")
    _assert_same_state(unusual_state, _process_state())


def test_the_seed_alone_fixes_the_run():
    """The run's draws come from its own seed, whatever the global RNG held before."""
    torch.manual_seed(1)
    first = fit(make_config(seed=3, deterministic=True, **TINY), progress_bar=False)
    torch.manual_seed(2)
    second = fit(make_config(seed=3, deterministic=True, **TINY), progress_bar=False)
    assert first.history[0]["train_loss"] == second.history[0]["train_loss"]
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                 second.model.state_dict().values(), strict=True))


# --- short runs on real MNIST ------------------------------------------------------------------------------

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
    assert {"train_loss", "train_accuracy", "images_per_s", "seconds", "lr", "val_accuracy"} <= set(lines[0])
    assert load_config(tmp_path) == result.config
    assert result.config.epochs == 2 and result.config.model == "seed"
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
    # epoch 1 is kept from the first run; its timings are the machine's, everything else is the run's
    timings = ("images_per_s", "seconds")
    assert {k: v for k, v in resumed.history[0].items() if k not in timings} == \
        {k: v for k, v in whole.history[0].items() if k not in timings}
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    assert len(resumed.history) == 3


def test_resume_refuses_to_change_the_recipe(tmp_path):
    lenet.train(epochs=1, out=tmp_path, batch_size=1000, **SMALL)
    with pytest.raises(ConfigError, match="cannot change lr when resuming"):
        lenet.train(resume=tmp_path, lr=0.5)


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "cosine"), ("adamw", "onecycle"), ("adam", "step")])
def test_optimizers_and_schedules_train(optimizer, schedule):
    lr = 0.05 if optimizer == "sgd" else 2e-3
    result = lenet.train(epochs=1, batch_size=64, optimizer=optimizer, schedule=schedule, lr=lr, nesterov=True,
                         val_size=40_000, log_every=0)
    assert result.history[0]["train_loss"] < 1.0  # from 2.30 (ln 10) at the start


def test_a_run_stopped_mid_epoch_resumes_bit_identical(tmp_path, monkeypatch):
    """A mid-epoch checkpoint (--checkpoint-every) holds the step, the running sums, the global RNG and the
    augmentation generator's state: resumed from it, the run ends exactly as an uninterrupted one."""
    import lenet.trainer.loop as loop

    options = {"train_size": 2000, "epochs": 2, "threads": 1, "deterministic": True, "log_every": 0,
               "optimizer": "sgd", "lr": 0.05, "augment": "affine", "seed": 3}
    whole = lenet.train(out=tmp_path / "whole", checkpoint_every=0, **options)
    save = loop.save_mid_epoch

    def stop_at_step_10_of_epoch_2(engine, run, history, position):
        save(engine, run, history, position)
        if (position.epoch, position.step) == (1, 10):
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_mid_epoch", stop_at_step_10_of_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        lenet.train(out=tmp_path / "cut", checkpoint_every=1e-9, **options)  # a checkpoint after every step
    monkeypatch.setattr(loop, "save_mid_epoch", save)
    assert lenet.weights.read_record(tmp_path / "cut").epoch == 1  # the weights of the last whole epoch
    resumed = lenet.train(resume=tmp_path / "cut")
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                 resumed.model.state_dict().values(), strict=True))
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    assert resumed.history[1]["train_accuracy"] == whole.history[1]["train_accuracy"]
