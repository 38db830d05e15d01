"""`lenet viz`: every figure is written as a valid PNG; without matplotlib, a LenetError, never a traceback."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image
from torch import nn

import lenet
from lenet import viz
from lenet.cli import main
from lenet.errors import ConfigError, LenetError
from lenet.models import get_model

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
    names = {"curves.png", "confusion.png", "misclassified.png", "kernels.png", "features.png", "elastic.png"}
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


def test_feature_maps_are_the_stages_of_the_network(mnist, tmp_path):
    classic = get_model("classic")
    maps = viz.layer_outputs(classic, torch.rand(1, 1, 28, 28))
    assert list(maps) == ["input", "c1", "s2", "c3", "s4", "c5", "f6", "rbf"]
    assert maps["input"].shape == (1, 1, 32, 32)  # what the network sees: padded, the paper's pixel values
    assert (maps["rbf"] <= 0).all()  # the scores: negated distances, as the network outputs them
    _valid_png(viz.feature_maps(classic, mnist.test.images[0], tmp_path / "f.png"))


def test_a_network_without_stages_gets_every_figure_but_the_feature_maps(mnist, tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 12 * 12, 10))
    with pytest.raises(ConfigError, match="does not declare its stages"):
        viz.feature_maps(model, mnist.test.images[0], tmp_path / "f.png")
    _valid_png(viz.kernels(model, tmp_path / "k.png"), min_side=100)
    _valid_png(viz.misclassified(model, mnist.test.images[:20], mnist.test.labels[:20], tmp_path / "m.png"))


def test_without_matplotlib_every_figure_is_a_lenet_error(monkeypatch, mnist, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    model = get_model("seed")
    history = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 90.0}]
    figures = [lambda: viz.training_curves(history, tmp_path / "c.png"),
               lambda: viz.confusion_matrix([[1, 0], [0, 1]], tmp_path / "m.png"),
               lambda: viz.misclassified(model, mnist.test.images[:5], mnist.test.labels[:5], tmp_path / "w.png"),
               lambda: viz.kernels(model, tmp_path / "k.png"),
               lambda: viz.feature_maps(model, mnist.test.images[0], tmp_path / "f.png")]
    for draw in figures:
        with pytest.raises(LenetError, match=r"pip install 'lenet\[viz\]'"):
            draw()
    assert not list(tmp_path.iterdir())


def test_viz_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no training metrics"):
        viz.read_history(tmp_path)
    assert main(["viz", "--only", "curves,nonsense", "--out", str(tmp_path)]) == 2
    assert "unknown figure(s) nonsense" in capsys.readouterr().err
    assert main(["viz", "--only", "features", "--index", "10000", "--out", str(tmp_path)]) == 2
    assert "--index must be between 0 and 9999" in capsys.readouterr().err


def test_a_bad_index_is_refused_before_any_figure_is_drawn(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("lenet.inference.evaluate", _must_not_run)  # it used to evaluate the network first
    monkeypatch.setattr(viz, "misclassified", _must_not_run)
    assert main(["viz", "--index", "-1", "--out", str(tmp_path / "figs")]) == 2
    assert capsys.readouterr().err == "lenet viz: error: --index must be between 0 and 9999, got -1\n"
    assert not (tmp_path / "figs").exists()


def _must_not_run(*args, **kwargs):
    raise AssertionError("a figure was drawn before --index was checked")


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_viz_limit_must_be_a_positive_integer(tmp_path, capsys, limit):
    # were an empty figure (0) and all but the last five misclassified digits (-5, Python's slicing), exit 0
    out = tmp_path / "figures"
    assert main(["viz", "--only", "misclassified", f"--limit={limit}", "--out", str(out)]) == 2
    assert capsys.readouterr().err == ("lenet viz: error: --limit must be a positive integer (the most "
                                       f"misclassified digits shown), got {limit}\n")
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize("limit", [0, -5, 2.5, True])
def test_misclassified_refuses_a_limit_that_is_not_a_positive_integer(tmp_path, limit):
    images, labels = torch.zeros(4, 28, 28, dtype=torch.uint8), torch.tensor([1, 2, 3, 4])
    with pytest.raises(ConfigError) as error:
        viz.misclassified(get_model("seed"), images, labels, tmp_path / "m.png", limit=limit)
    assert str(error.value) == ("limit must be a positive integer (the most misclassified digits shown), "
                                f"got {limit!r}")
    assert not list(tmp_path.iterdir())
