"""The weights shipped with lenet (models/weights/NAME.*): their records follow the schema, their config is a
valid TrainConfig that their recorded command rebuilds, and they reproduce their recorded test accuracy."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

import pytest

import lenet
from lenet._io import file_digest
from lenet.checkpoint import SCHEMA_VERSION, read_header, validate
from lenet.cli import build_parser
from lenet.cli.flags import train_options
from lenet.models import list_models, model_entry
from lenet.trainer.config import FIELD_NAMES, config_from_dict, make_config
from lenet.weights import WEIGHTS_DIR, list_shipped, load_network, read_record

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [record.model for record in list_shipped() if record.model in list_models()]  # networks, not committees


def _json(value):
    return json.loads(json.dumps(value))


def test_every_registered_network_is_shipped():
    # a new network needs its weights too: python scripts/make_weights.py NAME
    assert list_models() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_the_record_follows_the_schema(name):
    data = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    assert validate(data) == [] and data["schema_version"] == SCHEMA_VERSION


@pytest.mark.parametrize("name", SHIPPED)
def test_the_record_is_checked_not_trusted(name):
    record = read_record(name)
    path = WEIGHTS_DIR / f"{name}.safetensors"
    assert record.model == name and record.weights_path == path
    assert record.sha256 == file_digest(path, "sha256") and record.size_bytes == path.stat().st_size
    assert record.model_kwargs == json.loads(read_header(path)["model_kwargs"])
    model = lenet.get_model(name, **record.model_kwargs)
    assert record.num_params == sum(p.numel() for p in model.parameters())
    assert record.recipe == record.config["recipe"] and record.dataset == record.config["dataset"] == "mnist"
    assert record.epoch == record.config["epochs"] == len(record.history) == record.history[-1]["epoch"]
    assert record.description.startswith(model_entry(name).description)
    assert record.versions.keys() == {"lenet", "torch"} and record.created
    assert 98.0 <= record.test_accuracy <= 100
    assert record.metrics["test_errors"] == round(100 * (100 - record.test_accuracy))  # of 10,000 test images


@pytest.mark.parametrize("name", SHIPPED)
def test_the_config_is_a_whole_valid_train_config(name):
    config = read_record(name).config
    assert set(config) == FIELD_NAMES  # no field missing (old records lacked `init`), none unknown
    assert _json(config_from_dict(config, f"{name}.json").to_dict()) == config


@pytest.fixture
def on_the_recording_machine(monkeypatch):
    """The shipped runs were trained on an Intel Xeon with AMX, where a recipe's --precision auto is bf16
    (inference.native_precision): rebuild their configs as that machine did."""
    monkeypatch.setattr(lenet.hardware, "cpu_flags", lambda *args: {"avx512f", "amx_tile", "amx_bf16"})


@pytest.mark.parametrize("name", SHIPPED)
def test_the_recorded_command_rebuilds_the_config(name, on_the_recording_machine):
    record = read_record(name)
    argv = shlex.split(record.command)
    assert argv[:4] == ["lenet", "train", "--model", name]
    args = build_parser().parse_args(argv[1:])
    options = train_options(args)
    for key in ("resume", "progress_bar"):
        options.pop(key)
    # every field, run details (out, threads, log_every) included: the command is the one that ran
    assert _json(make_config(options.pop("recipe"), **options).to_dict()) == record.config


@pytest.mark.parametrize("name", SHIPPED)
def test_make_weights_derives_the_recorded_command_and_description(name, on_the_recording_machine):
    spec = importlib.util.spec_from_file_location("make_weights", ROOT / "scripts" / "make_weights.py")
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    record = read_record(name)
    assert make_weights.command_for(name, record.config) == record.command
    assert make_weights.describe(name, record.config) == record.description


def test_what_the_records_say_about_their_runs():
    seed, classic = read_record("seed"), read_record("classic")
    # seed's 99.29 % comes from 20 epochs with cosine decay and distortions, not from the tutorial recipe
    assert seed.test_accuracy == 99.29 and seed.recipe == "tutorial"
    assert {"--epochs 20", "--schedule cosine", "--augment affine"} <= set(_pairs(seed.command))
    assert all(part in seed.description for part in ("epochs 20", "schedule cosine", "augment affine"))
    assert seed.config["init"] is None  # seed has one initialisation
    assert classic.test_accuracy == 99.09 and classic.recipe == "paper"
    assert {"--threads 1", "--log-every 0"} <= set(_pairs(classic.command))


def _pairs(command: str) -> list[str]:
    argv = shlex.split(command)
    return [f"{a} {b}" for a, b in zip(argv, argv[1:], strict=False)]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_reproduce_their_test_accuracy(mnist, name):
    record = read_record(name)
    model = load_network(name)
    assert model.model_name == name and not model.training
    result = lenet.evaluate(model, device="cpu")
    assert round(result.accuracy, 2) == record.test_accuracy and result.errors == record.metrics["test_errors"]
