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


def test_safetensors_bytes_are_a_function_of_tensors_and_metadata(tmp_path):
    """Sorted header keys (safetensors writes metadata in hash order), data still 8-byte aligned, readable."""
    from safetensors import safe_open

    from lenet.checkpoint import safetensors_bytes

    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, 2, dtype=torch.int64), "c": torch.zeros(())}
    metadata = {f"k{i}": "ü" * i for i in range(20)}
    data = safetensors_bytes(tensors, metadata)
    assert data == safetensors_bytes(dict(reversed(tensors.items())), dict(reversed(metadata.items())))
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    assert list(header) == sorted(header) and list(header["__metadata__"]) == sorted(metadata)
    assert size % 8 == 0
    (tmp_path / "x.safetensors").write_bytes(data)
    with safe_open(str(tmp_path / "x.safetensors"), framework="pt") as f:
        assert f.metadata() == metadata
        assert all(torch.equal(f.get_tensor(k), v) for k, v in tensors.items())


def test_a_run_folder_resolves_its_generation_once(tmp_path):
    """DIR/checkpoint -> ckpt-N is read once; a generation holding only a mid-epoch resume state has no weights."""
    import os

    generation = tmp_path / "ckpt-000002"
    generation.mkdir()
    save_checkpoint(generation, get_model("seed"), {"epoch": 4})
    os.symlink("ckpt-000002", tmp_path / "checkpoint")
    os.symlink("checkpoint/model.safetensors", tmp_path / "model.safetensors")
    assert read_record(tmp_path).weights_path == generation / "model.safetensors"
    assert read_record(tmp_path / "model.safetensors").weights_path == (generation / "model.safetensors").resolve()
    assert read_record(tmp_path).epoch == 4
    (tmp_path / "ckpt-000003").mkdir()
    (tmp_path / "checkpoint").unlink()
    os.symlink("ckpt-000003", tmp_path / "checkpoint")
    with pytest.raises(CheckpointError, match="holds no trained weights yet.*--resume"):
        lenet.load(tmp_path)
    (tmp_path / "ckpt-000003").rmdir()
    with pytest.raises(CheckpointError, match="points to ckpt-000003, which is missing"):
        lenet.load(tmp_path)
