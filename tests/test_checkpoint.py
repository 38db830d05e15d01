import json

import pytest
import torch
from safetensors.torch import save_file

import lenet
from lenet.checkpoint import load_checkpoint, read_info, save_checkpoint
from lenet.errors import CheckpointError
from lenet.models import get_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_save_then_load_gives_identical_outputs(tmp_path, name):
    torch.manual_seed(0)
    model = get_model(name).eval()
    save_checkpoint(tmp_path, model, {"epoch": 3})
    loaded = lenet.load(tmp_path)
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    info = read_info(tmp_path)
    assert info["model"] == name and info["epoch"] == 3 and info["format_version"] == 1
    assert len(info["weights_sha256"]) == 64
    # the weights file alone is enough
    assert type(lenet.load(tmp_path / "model.safetensors")) is type(model)
    # nothing temporary left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        lenet.load(tmp_path / "absent")
    with pytest.raises(CheckpointError, match="holds no model.safetensors"):
        lenet.load(tmp_path)


def test_truncated_checkpoint(tmp_path):
    save_checkpoint(tmp_path, get_model("seed"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50_000])
    with pytest.raises(CheckpointError, match=r"model.safetensors is (truncated|not a readable)"):
        lenet.load(tmp_path)


def test_foreign_files_are_refused(tmp_path):
    pickle_like = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickle_like)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        lenet.load(pickle_like)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not a lenet checkpoint"):
        lenet.load(other)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    save_checkpoint(tmp_path, get_model("seed"))
    with pytest.raises(CheckpointError, match="holds a 'seed' network, not 'classic'"):
        load_checkpoint(tmp_path, expected_model="classic")
    others = [m for m in list_models() if m != "seed"]
    if others:  # weights of one network forced into another's header
        state = {k: v.contiguous() for k, v in get_model("seed").state_dict().items()}
        header = {"format": "lenet-checkpoint", "format_version": "1", "model": others[0], "model_kwargs": "{}"}
        save_file(state, str(tmp_path / "forged.safetensors"), metadata=header)
        with pytest.raises(CheckpointError, match=f"does not match the '{others[0]}' network"):
            lenet.load(tmp_path / "forged.safetensors")


def test_newer_format_is_refused_with_advice(tmp_path):
    state = {k: v.contiguous() for k, v in get_model("seed").state_dict().items()}
    header = {"format": "lenet-checkpoint", "format_version": "99", "model": "seed", "model_kwargs": json.dumps({})}
    save_file(state, str(tmp_path / "model.safetensors"), metadata=header)
    with pytest.raises(CheckpointError, match="newer lenet"):
        lenet.load(tmp_path)
