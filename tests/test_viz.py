"""`lenet viz` (issue 5): every figure is written as a valid PNG."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

import lenet
from lenet import viz
from lenet.cli import main
from lenet.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _valid_png(path, min_side: int = 300) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= min_side, image.size
        return image.size


def test_viz_writes_every_figure_for_the_pretrained_network(tmp_path, capsys):
    assert main(["viz", "--out", str(tmp_path)]) == 0
    names = {"curves.png", "confusion.png", "misclassified.png", "kernels.png", "features.png"}
    assert {p.name for p in tmp_path.iterdir()} == names
    assert set(capsys.readouterr().out.split()) == {str(tmp_path / n) for n in names}
    for name in names:
        _valid_png(tmp_path / name, min_side=150)


def test_feature_maps_of_a_users_image_and_of_a_run(mnist, tmp_path, capsys):
    digit = tmp_path / "three.png"
    Image.fromarray(255 - mnist.test.images[18].numpy()).resize((200, 200)).save(digit)
    run = tmp_path / "run"
    lenet.checkpoint.save_checkpoint(run, lenet.load("seed"))
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "train_loss": 1 / e, "train_accuracy": 90 + e, "val_accuracy": 89 + e}) + "\n"
        for e in range(1, 4)))
    out = tmp_path / "figures"
    assert main(["viz", "--checkpoint", str(run), "--only", "features,curves", "--image", str(digit),
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "features.png"]
    _valid_png(out / "features.png")


def test_feature_maps_without_a_feature_maps_method_use_hooks(mnist, tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 12 * 12, 10))
    maps = viz.layer_outputs(model, torch.rand(1, 1, 28, 28))
    assert list(maps) == ["0", "1", "2", "3", "4"] and maps["2"].shape == (1, 4, 12, 12)
    _valid_png(viz.feature_maps(model, mnist.test.images[0], tmp_path / "f.png"))
    _valid_png(viz.kernels(model, tmp_path / "k.png"), min_side=100)


def test_viz_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no training metrics"):
        viz.read_history(tmp_path)
    assert main(["viz", "--only", "curves,nonsense", "--out", str(tmp_path)]) == 2
    assert "unknown figure(s) nonsense" in capsys.readouterr().err
    assert main(["viz", "--only", "features", "--index", "10000", "--out", str(tmp_path)]) == 2
    assert "--index must be between 0 and 9999" in capsys.readouterr().err
