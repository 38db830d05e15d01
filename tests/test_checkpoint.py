"""The run-folder format (lenet.checkpoint): weights + record written atomically, foreign files refused."""

import json

import pytest
import torch
from safetensors.torch import save_file

import lenet
from lenet.checkpoint import save_checkpoint
from lenet.errors import CheckpointError
from lenet.models import get_model, list_models
from lenet.weights import adopt, load_network, read_record


@pytest.mark.parametrize("name", list_models())
def test_save_then_load_gives_identical_outputs(tmp_path, name):
    torch.manual_seed(0)
    model = get_model(name).eval()
    save_checkpoint(tmp_path, model, {"epoch": 3})
    loaded = lenet.load(tmp_path)
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    record = read_record(tmp_path)
    assert record.model == name and record.epoch == 3 and record.model_kwargs == model.model_kwargs
    assert len(record.sha256) == 64
    # the weights file alone names the checkpoint (its record is found beside it)
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
    with pytest.raises(CheckpointError, match=r"model.safetensors (is not a readable|: SHA-256 mismatch)"):
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
        load_network(tmp_path, expected_model="classic")
    # seed's weights under a header that says classic, with a record that agrees with the header and the
    # file's hash: only the tensors themselves give it away
    assert "classic" in list_models()
    state = {k: v.contiguous() for k, v in get_model("seed").state_dict().items()}
    header = {"format": "lenet-checkpoint", "format_version": "1", "model": "classic",
              "model_kwargs": json.dumps(get_model("classic").model_kwargs)}
    save_file(state, str(tmp_path / "forged.safetensors"), metadata=header)
    with pytest.raises(CheckpointError, match="forged.safetensors does not match the 'classic' network"):
        adopt(tmp_path / "forged.safetensors")
    assert not (tmp_path / "forged.json").exists()


def test_newer_format_is_refused_with_advice(tmp_path):
    state = {k: v.contiguous() for k, v in get_model("seed").state_dict().items()}
    header = {"format": "lenet-checkpoint", "format_version": "99", "model": "seed", "model_kwargs": json.dumps({})}
    save_file(state, str(tmp_path / "model.safetensors"), metadata=header)
    with pytest.raises(CheckpointError, match="newer lenet"):
        lenet.load(tmp_path)
