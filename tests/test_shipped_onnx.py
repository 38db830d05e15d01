"""The shipped networks' ONNX graphs (lenet.shipped_onnx): what `lenet predict` runs without importing torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lenet import shipped_onnx
from lenet.cli import main
from lenet.errors import CheckpointError
from lenet.inference import probabilities
from lenet.models import list_models
from lenet.weights import load_network, read_record


@pytest.mark.parametrize("name", list_models())
def test_each_shipped_graph_is_its_shipped_weights(mnist, name):
    spec = json.loads(shipped_onnx.spec_path(name).read_text())
    assert spec["source"]["sha256"] == read_record(name).sha256
    assert spec["parity"]["same_class"] == spec["parity"]["images"] == 10_000
    images = mnist.test.images[:2000]
    expected = probabilities(load_network(name), images).numpy()
    actual = shipped_onnx.load(name).probabilities(images.numpy())
    assert actual.shape == (2000, 10) and actual.dtype == np.float32
    assert np.abs(actual - expected).max() <= 1e-4
    assert (actual.argmax(1) == expected.argmax(1)).all()


def _pngs(mnist, folder, count=6):
    for i in range(count):
        Image.fromarray(255 - mnist.test.images[i].numpy()).resize((112, 112)).save(folder / f"{i}.png")
    return [str(folder / f"{i}.png") for i in range(count)]


def test_lenet_predict_reads_without_importing_torch(mnist, tmp_path):
    paths = _pngs(mnist, tmp_path)
    script = ("import sys; from lenet.cli import main; code = main(['predict', '--json', *sys.argv[1:]]); "
              "print(code, 'torch' in sys.modules)")
    lines = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert lines[-1] == "0 False"
    fast = [json.loads(line) for line in lines[:-1]]
    assert [r["prediction"] for r in fast] == mnist.test.labels[:6].tolist()
    slow = subprocess.run([sys.executable, "-m", "lenet", "predict", "--json", "--runtime", "torch", *paths],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    for a, b in zip(fast, map(json.loads, slow), strict=True):
        assert a["prediction"] == b["prediction"]
        assert np.abs(np.array(a["probabilities"]) - b["probabilities"]).max() <= 1e-4


@pytest.fixture()
def shipped_copy(tmp_path, monkeypatch):
    """A copy of the shipped weights folder that lenet.shipped_onnx reads instead of the real one."""
    folder = tmp_path / "weights"
    shutil.copytree(shipped_onnx.WEIGHTS_DIR, folder)
    monkeypatch.setattr(shipped_onnx, "WEIGHTS_DIR", folder)
    return folder


def test_a_changed_graph_is_refused(shipped_copy, mnist, tmp_path, capsys):
    graph = shipped_copy / "seed.onnx"
    data = bytearray(graph.read_bytes())
    data[-100] ^= 1
    graph.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"seed\.onnx does not match the SHA-256 in seed\.onnx\.json: the "
                                              r"file was changed or damaged; regenerate it with"):
        shipped_onnx.load("seed")
    assert main(["predict", *_pngs(mnist, tmp_path, 1)]) == 2
    assert "does not match the SHA-256" in capsys.readouterr().err


def test_a_graph_of_other_weights_is_refused(shipped_copy):
    record = json.loads((shipped_copy / "seed.json").read_text())
    record["sha256"] = "0" * 64
    (shipped_copy / "seed.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"was exported from other weights than the shipped "
                                              r"seed\.safetensors; regenerate it with `python "
                                              r"scripts/make_weights\.py seed --onnx-only`"):
        shipped_onnx.load("seed")


@pytest.mark.parametrize(("options", "why"), [
    (["--checkpoint", "runs/x"], "it runs the networks shipped with lenet, not a --checkpoint"),
    (["--device", "cuda"], "it runs on the CPU, not --device cuda"),
    (["--model", "modern-committee"], "no ONNX graph is shipped for 'modern-committee' (only for the networks "
                                      "seed, classic, modern)"),
])
def test_runtime_onnxruntime_says_what_it_cannot_run(mnist, tmp_path, capsys, options, why):
    code = main(["predict", *_pngs(mnist, tmp_path, 1), "--runtime", "onnxruntime", *options])
    assert code == 2
    assert capsys.readouterr().err == (f"lenet predict: error: --runtime onnxruntime cannot run this: {why}; "
                                       "use --runtime torch\n")


def test_a_torch_network_still_reads_a_number(mnist, tmp_path, capsys):
    row = np.concatenate([255 - mnist.test.images[i].numpy() for i in (0, 1, 2)], axis=1)
    Image.fromarray(row).resize((84 * 4, 28 * 4)).save(tmp_path / "row.png")
    for runtime in ("onnxruntime", "torch"):
        assert main(["predict", str(tmp_path / "row.png"), "--number", "--json", "--runtime", runtime]) == 0
        assert json.loads(capsys.readouterr().out)["number"] == "721"
