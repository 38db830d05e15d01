"""lenet.weights: one way to name, describe and load trained weights; the SHA-256 checked on every load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import lenet
from lenet import checkpoint, weights
from lenet.checkpoint import SCHEMA, SCHEMA_VERSION, save_checkpoint, validate
from lenet.cli import main
from lenet.errors import CheckpointError, ConfigError
from lenet.models import get_model


def tamper(path: Path) -> None:
    """Change one weight of a safetensors file and write it back as a valid file with the same header."""
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    state = load_file(str(path))
    name = sorted(state)[0]
    state[name] = state[name].clone()
    state[name].view(-1)[0] += 0.001
    save_file(state, str(path), metadata=header)
    with safe_open(str(path), framework="pt") as f:  # still a lenet checkpoint, header untouched
        assert f.metadata() == header


@pytest.fixture()
def run(tmp_path) -> Path:
    """A run folder holding an untrained seed network, with a full record."""
    torch.manual_seed(0)
    folder = tmp_path / "run"
    save_checkpoint(folder, get_model("seed"), {
        "config": {"model": "seed", "dataset": "mnist", "recipe": "tutorial", "epochs": 2}, "epoch": 2,
        "metrics": {"test_accuracy": 12.5, "val_accuracy": 11.0}, "history": [{"epoch": 1}, {"epoch": 2}],
        "command": "lenet train --recipe tutorial --epochs 2 --out run"})
    return folder


def _refused(capsys, argv: list[str], path: Path) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert str(path) in lines[0] and "SHA-256 mismatch" in lines[0]
    assert captured.out == ""


def test_record_round_trip(run):
    record = weights.read_record(run)
    assert record.model == "seed" and record.model_kwargs == {} and record.weights_path == run / "model.safetensors"
    assert record.sha256 == lenet._io.file_digest(run / "model.safetensors", "sha256")
    assert record.size_bytes == (run / "model.safetensors").stat().st_size
    assert record.num_params == 44_426
    assert (record.epoch, record.dataset, record.recipe, record.test_accuracy) == (2, "mnist", "tutorial", 12.5)
    assert record.metrics["val_accuracy"] == 11.0 and len(record.history) == 2
    assert record.command.startswith("lenet train") and record.versions["lenet"] == lenet.__version__
    assert record.input["shape"] == ["N", 1, 28, 28] and record.output["shape"] == ["N", 10]
    data = json.loads((run / "model.json").read_text())
    assert data["schema"] == SCHEMA and data["schema_version"] == SCHEMA_VERSION and validate(data) == []
    assert "weights_path" not in data
    assert weights.read_record(run / "model.safetensors") == record == weights.read_record(str(run))


def test_a_trainer_config_reads_back_equal(tmp_path):
    from lenet.trainer.config import make_config

    config = make_config("fast").to_dict()  # betas is a tuple here, a list in JSON
    save_checkpoint(tmp_path, get_model("seed"), {"config": config, "epoch": 3})
    record = weights.read_record(tmp_path)
    assert record.config == json.loads(json.dumps(config)) and record.recipe == "fast" and record.dataset == "mnist"


def test_every_path_form_loads_the_same_network(run):
    x = torch.rand(4, 1, 28, 28)
    outputs = [weights.load_network(source)(x) for source in (run, str(run), run / "model.safetensors")]
    assert all(torch.equal(outputs[0], other) for other in outputs[1:])
    net = weights.load_network(run, expected_model="seed")
    assert net.model_name == "seed" and not net.training
    with pytest.raises(CheckpointError, match="holds a 'seed' network, not 'classic'"):
        weights.load_network(run, expected_model="classic")


def test_tampered_run_folder_is_refused_by_every_loader(run, capsys):
    tamper(run / "model.safetensors")
    weights.read_record(run)  # the record itself is fine: reading it does not hash the file
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        weights.load_network(run)
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        lenet.load(run)
    path = run / "model.safetensors"
    _refused(capsys, ["eval", str(run)], path)
    _refused(capsys, ["eval", str(path), "--json"], path)
    _refused(capsys, ["predict", "--checkpoint", str(run), "anything.png"], path)
    _refused(capsys, ["export", "--checkpoint", str(run), "--format", "torchscript", "--out",
                      str(run / "m.pt"), "--no-check"], path)


def test_tampered_shipped_weights_are_refused(tmp_path, monkeypatch, capsys):
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights.WEIGHTS_DIR / f"seed{suffix}", tmp_path / f"seed{suffix}")
    assert weights.load_network(tmp_path / "seed.safetensors").model_name == "seed"  # the copy loads
    tamper(tmp_path / "seed.safetensors")
    path = tmp_path / "seed.safetensors"
    _refused(capsys, ["eval", str(path)], path)
    _refused(capsys, ["predict", "--checkpoint", str(path), "anything.png"], path)
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)  # the package's own folder, damaged
    _refused(capsys, ["eval", "seed"], path)
    # (torch's side; the shipped ONNX graph has its own hash, refused when changed: tests/test_shipped_onnx.py)
    _refused(capsys, ["predict", "--model", "seed", "--runtime", "torch", "anything.png"], path)
    _refused(capsys, ["predict", "--runtime", "torch", "anything.png"], path)  # seed is the default network


def test_a_name_never_means_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "seed", get_model("classic"))  # a run folder called seed, holding classic
    assert weights.is_name("seed") and not weights.is_name("./seed") and not weights.is_name(Path("seed"))
    assert lenet.load("seed").model_name == "seed"  # the shipped weights, whatever the folder holds
    assert weights.read_record("seed").weights_path == weights.WEIGHTS_DIR / "seed.safetensors"
    assert lenet.load("./seed").model_name == "classic"
    assert lenet.load(Path("seed")).model_name == "classic"
    source, expected = weights.source_from_options(None, "seed")  # --checkpoint seed: always a path
    assert (source, expected) == (Path("seed"), None) and weights.load_network(source).model_name == "classic"


def test_source_from_options():
    assert weights.source_from_options(None, None) == (weights.DEFAULT_NETWORK, None)
    assert weights.source_from_options("classic", None) == ("classic", None)
    assert weights.source_from_options("classic", "runs/x") == (Path("runs/x"), "classic")
    with pytest.raises(ConfigError, match="unknown network 'nope'; registered: seed, classic"):
        weights.source_from_options("nope", None)


def test_missing_sources_say_what_to_give(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="no checkpoint at lenet-7, and no network is registered under "
                                              "that name"):
        weights.load_network("lenet-7")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        weights.load_network(tmp_path / "absent")
    with pytest.raises(CheckpointError, match="holds no model.safetensors"):
        weights.load_network(tmp_path)
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="no shipped weights for 'seed'.*make_weights.py seed"):
        weights.read_record("seed")
    assert weights.list_shipped() == []
    with pytest.raises(TypeError):
        weights.read_record(3)


def test_weights_without_a_record_are_refused_until_adopted(run):
    (run / "model.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no record model.json beside it, so its SHA-256 cannot be "
                                              r"checked.*adopt"):
        weights.load_network(run)
    record = weights.adopt(run)
    assert record.model == "seed" and record.num_params == 44_426 and validate(record.to_dict()) == []
    assert weights.load_network(run).model_name == "seed"
    with pytest.raises(CheckpointError, match="already has a record"):
        weights.adopt(run)


def _v1_record(run: Path) -> dict:
    """What save_checkpoint wrote into model.json before the lenet-weights schema."""
    return {"format": "lenet-checkpoint", "format_version": 1, "model": "seed", "model_kwargs": {},
            "weights_sha256": lenet._io.file_digest(run / "model.safetensors", "sha256"), "lenet": "0.1.0",
            "torch": "2.4.0", "config": {"model": "seed", "dataset": "mnist", "recipe": "fast"}, "epoch": 3,
            "dataset": "mnist", "metrics": {"epoch": 3, "test_accuracy": 99.1}}


def test_run_folders_of_schema_1_are_read_checked_and_upgraded(run):
    (run / "model.json").write_text(json.dumps(_v1_record(run)))
    record = weights.read_record(run)
    assert (record.test_accuracy, record.epoch, record.recipe, record.versions["torch"]) == (99.1, 3, "fast", "2.4.0")
    assert record.num_params is None and record.history == [] and record.command is None
    assert weights.load_network(run).model_name == "seed"  # the hash of schema 1 is checked as well
    upgraded = weights.upgrade(run)
    data = json.loads((run / "model.json").read_text())
    assert validate(data) == [] and data["num_params"] == 44_426 and data["metrics"]["test_accuracy"] == 99.1
    assert weights.read_record(run) == upgraded
    tamper(run / "model.safetensors")
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        weights.upgrade(run)


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"name": "seed", "sha256": "00"}', 'no "schema" key'),
    ('{"schema": "lenet-weights", "schema_version": 99}', "newer lenet"),
])
def test_unreadable_records_are_refused(run, content, message):
    (run / "model.json").write_text(content)
    with pytest.raises(CheckpointError, match=message):
        weights.read_record(run)


def test_records_breaking_the_schema_name_every_problem(run):
    data = json.loads((run / "model.json").read_text())
    del data["sha256"]
    data["epoch"], data["colour"], data["metrics"]["test_accuracy"] = "two", "red", "high"
    (run / "model.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as excinfo:
        weights.read_record(run)
    message = str(excinfo.value)
    for problem in ("missing key 'sha256'", "unknown key 'colour'", "epoch is str", "metrics['test_accuracy']"):
        assert problem in message


def test_weights_and_record_must_belong_together(run, tmp_path):
    other = tmp_path / "other"
    save_checkpoint(other, get_model("classic"))
    shutil.copy(other / "model.json", run / "model.json")
    with pytest.raises(CheckpointError, match="holds a 'seed' network .* but its record model.json describes "
                                              "'classic'"):
        weights.load_network(run)


def test_save_checkpoint_takes_only_record_fields(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        save_checkpoint(tmp_path, get_model("seed"), {"sha256": "0" * 64})
    with pytest.raises(CheckpointError, match="model_name unknown"):
        save_checkpoint(tmp_path, torch.nn.Linear(2, 2))
    assert not (tmp_path / "model.safetensors").exists()


def test_load_on_a_device(run):
    net = weights.load_network(run, device=torch.device("cpu"))
    assert next(net.parameters()).device.type == "cpu"
    assert checkpoint.load_weights(weights.read_record(run)).model_name == "seed"


def test_lenet_load_takes_a_device_name_or_a_device():
    for device in ["cpu", "auto", torch.device("cpu")]:  # auto: the CPU on a machine without a GPU
        expected = "cuda" if device == "auto" and torch.cuda.is_available() else "cpu"
        assert next(lenet.load("seed", device=device).parameters()).device.type == expected
    with pytest.raises(ConfigError, match=r"^unknown device 'gpu'; available: auto, cpu, cuda, mps$"):
        lenet.load("seed", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda asked for, but torch sees no CUDA GPU"):
            lenet.load("seed", device="cuda")


def test_the_api_names_what_it_was_given_that_it_cannot_use():
    with pytest.raises(CheckpointError, match="^the weights source is empty: give a network's name or a path$"):
        lenet.load("")
    with pytest.raises(TypeError, match="^model must be a network, a name or a path, got int$"):
        lenet.evaluate(5)
