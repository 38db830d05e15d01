"""Pretrained weights shipped in the package (issue 5): metadata, SHA-256 check, `lenet.load(NAME)`."""

from __future__ import annotations

import shutil

import pytest

import lenet
from lenet.errors import CheckpointError
from lenet.pretrained import WEIGHTS_DIR, list_pretrained, load_model, load_pretrained, metadata, weights_path

SHIPPED = [entry["name"] for entry in list_pretrained()]


def test_every_registered_network_is_shipped():
    # a new network needs its weights too: python scripts/make_weights.py NAME
    assert set(SHIPPED) == set(lenet.list_models())


@pytest.mark.parametrize("name", SHIPPED)
def test_metadata_is_checked_not_trusted(name):
    meta = metadata(name)
    model = lenet.get_model(name)
    assert meta["name"] == name
    assert meta["num_params"] == sum(p.numel() for p in model.parameters())
    assert meta["command"].startswith(f"lenet train --model {name} ")
    assert meta["recipe"] and meta["config"]["model"] == name
    assert meta["size_bytes"] == weights_path(name).stat().st_size
    assert len(meta["history"]) == meta["config"]["epochs"]
    assert 98.0 <= meta["test_accuracy"] <= 100
    if name == "seed":
        assert meta["test_accuracy"] >= 99.0


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_reproduce_their_test_accuracy(name):
    model = lenet.load(name)
    assert model.model_name == name and not model.training
    result = lenet.evaluate(model, device="cpu")
    assert round(result.accuracy, 2) == metadata(name)["test_accuracy"]


def test_list_pretrained_has_name_and_accuracy():
    entries = list_pretrained()
    assert all({"name", "test_accuracy", "command", "sha256"} <= set(e) for e in entries)


def test_sha256_mismatch_is_refused(tmp_path):
    shutil.copy(WEIGHTS_DIR / "seed.json", tmp_path / "seed.json")
    data = bytearray((WEIGHTS_DIR / "seed.safetensors").read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last weight: still loads, silently wrong without the check
    (tmp_path / "seed.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its recorded SHA-256") as excinfo:
        load_pretrained("seed", weights_dir=tmp_path)
    assert "reinstall lenet" in str(excinfo.value)
    shutil.copy(WEIGHTS_DIR / "seed.safetensors", tmp_path / "seed.safetensors")
    assert load_pretrained("seed", weights_dir=tmp_path).model_name == "seed"


def test_missing_weights_and_unknown_names(tmp_path):
    with pytest.raises(CheckpointError, match="no pretrained weights for 'seed'"):
        load_pretrained("seed", weights_dir=tmp_path)
    with pytest.raises(CheckpointError, match="unknown network 'lenet-7'"):
        load_pretrained("lenet-7")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        lenet.load("not-a-model-or-a-path")


def test_a_path_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seed").mkdir()  # a run folder called seed, without weights
    with pytest.raises(CheckpointError, match="holds no model.safetensors"):
        lenet.load("seed")


def test_model_and_checkpoint_options(tmp_path):
    assert load_model().model_name == "seed"
    folder = tmp_path / "run"
    lenet.checkpoint.save_checkpoint(folder, lenet.load("seed"))
    assert load_model(checkpoint=folder).model_name == "seed"
    with pytest.raises(CheckpointError, match="not 'classic'"):
        load_model("classic", checkpoint=folder)
