"""`lenet export`: ONNX and TorchScript match PyTorch on all 10,000 MNIST test images."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import lenet
from lenet.cli import main
from lenet.errors import LenetError
from lenet.export import export, load_runner, read_spec
from lenet.inference import to_input
from lenet.weights import list_shipped, read_record

SHIPPED = [record.model for record in list_shipped() if record.model in lenet.list_models()]  # networks


@pytest.mark.parametrize("fmt, suffix", [("onnx", "onnx"), ("torchscript", "pt")])
@pytest.mark.parametrize("name", SHIPPED)
def test_pretrained_export_matches_pytorch_on_the_whole_test_set(mnist, tmp_path, capsys, name, fmt, suffix):
    out = tmp_path / f"{name}.{suffix}"
    assert main(["export", "--model", name, "--format", fmt, "--out", str(out)]) == 0
    assert "same class as PyTorch for 10,000" in capsys.readouterr().out
    spec = read_spec(out)
    assert spec["format"] == fmt and spec["model"] == name
    assert spec["input"]["shape"] == ["N", 1, 28, 28] and spec["output"]["shape"] == ["N", 10]
    assert spec["parity"]["images"] == 10_000 and spec["parity"]["same_class"] == 10_000
    assert spec["source"] == {"weights": name, "sha256": read_record(name).sha256}

    # checked again here, independently of the exporter's own check
    run = load_runner(out, fmt)
    x = to_input(mnist.test.images)
    with torch.inference_mode():
        expected, actual = lenet.load(name)(x), run(x)
    max_diff = float((expected - actual).abs().max())
    print(f"{name} {fmt}: max |score difference| {max_diff:.2e}, spec {spec['parity']}")
    assert torch.equal(expected.argmax(1), actual.argmax(1))
    assert max_diff <= 1e-4  # the contract's bound, for every network (classic's scores reach -226)
    for batch in (1, 37):  # the batch axis is dynamic
        assert run(torch.rand(batch, 1, 28, 28)).shape == (batch, 10)


@pytest.mark.parametrize("name", lenet.list_models())
def test_every_network_exports_with_the_same_contract(mnist, tmp_path, name):
    torch.manual_seed(0)
    model = lenet.get_model(name).eval()
    for fmt in ("onnx", "torchscript"):
        spec = export(model, tmp_path / f"{name}.{fmt}", fmt, check_images=mnist.test.images[:500])
        assert spec["input"]["name"] == "input" and spec["output"]["name"] == "scores"
        assert spec["parity"]["same_class"] == 500


@pytest.mark.parametrize("same_class, near_ties, max_abs_diff", [(9, 0, 1e-5), (10, 0, 0.5), (8, 1, 1e-5)])
def test_a_failed_check_writes_nothing(mnist, tmp_path, monkeypatch, same_class, near_ties, max_abs_diff):
    bad = {"images": 10, "same_class": same_class, "near_ties": near_ties, "max_abs_diff": max_abs_diff,
           "tolerance": 1e-4}
    monkeypatch.setattr("lenet.export.check_parity", lambda *args, **kwargs: bad)
    out = tmp_path / "seed.pt"
    with pytest.raises(LenetError, match=f"disagrees with PyTorch on seed.pt: {10 - same_class - near_ties} of 10 "
                                         r"classes differ \(near-ties aside\)"):
        export(lenet.load("seed"), out, "torchscript", check_images=mnist.test.images[:10])
    assert list(tmp_path.iterdir()) == []


def test_near_ties_alone_pass_the_check(mnist, tmp_path, monkeypatch):
    tied = {"images": 10, "same_class": 9, "near_ties": 1, "max_abs_diff": 1e-5, "tolerance": 1e-4}
    monkeypatch.setattr("lenet.export.check_parity", lambda *args, **kwargs: tied)
    spec = export(lenet.load("seed"), tmp_path / "seed.pt", "torchscript", check_images=mnist.test.images[:10])
    assert spec["parity"] == tied and (tmp_path / "seed.pt").is_file()


def test_missing_onnx_packages_say_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    assert main(["export", "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--no-check"]) == 2
    assert "pip install 'lenet[export]'" in capsys.readouterr().err


def test_bad_options(tmp_path, capsys):
    assert main(["export", "--format", "onnx", "--out", str(tmp_path), "--no-check"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["export", "--model", "nope", "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 2
    assert "unknown network 'nope'" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path / "absent"), "--format", "torchscript", "--out",
                 str(tmp_path / "m.pt")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    spec = json.loads((tmp_path / "m.pt.json").read_text()) if (tmp_path / "m.pt.json").exists() else None
    assert spec is None
