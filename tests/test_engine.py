"""The training engine (lenet/trainer/engine.py and the loop around it): the training network chosen, a real
`--compile` run, bf16 with shift augmentation, and how the loop uses the test set. Correctness only; speed is
measured in benchmarks/, never here."""

import io

import pytest
import torch
from torch import nn

import lenet
from lenet.augment import get_augmentation
from lenet.trainer import engine, fit, loop, make_config
from lenet.trainer.engine import training_network

# 2,000 training images: the rest is held out as a validation split, so each run takes a second or two.
SMALL = {"val_size": 58000, "batch_size": 64, "log_every": 0, "threads": 1}
CPU = torch.device("cpu")


def test_shift_moves_every_image_by_at_most_two_pixels_and_is_reproducible():
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 10:18, 10:18] = 1
    shift = get_augmentation("shift")
    a = shift(x, torch.Generator().manual_seed(1))
    b = shift(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert torch.equal(a.sum((1, 2, 3)), x.sum((1, 2, 3)))  # whole-pixel moves: no ink lost, no blur
    rows = torch.nonzero(a[:, 0].sum(2))[:, 1].view(64, 8)[:, 0]
    cols = torch.nonzero(a[:, 0].sum(1))[:, 1].view(64, 8)[:, 0]
    assert set((rows - 10).tolist()) <= set(range(-2, 3)) and set((cols - 10).tolist()) <= set(range(-2, 3))
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 5  # each image gets its own offset


def test_unknown_precision_is_a_config_error():
    with pytest.raises(lenet.ConfigError, match="precision"):
        make_config(precision="fp8")


def test_auto_kernels_pick_the_matrix_product_form_only_where_it_pays():
    seed, classic = lenet.get_model("seed"), lenet.get_model("classic")
    form = training_network(seed, CPU, "auto", "bf16", 128)
    assert form is not seed and any(p is q for p in form.parameters() for q in seed.parameters())  # shares them
    for precision, batch, compiled in (("fp32", 256, False), ("bf16", 127, False), ("bf16", 256, True)):
        assert training_network(seed, CPU, "auto", precision, batch, compiled) is seed
    assert training_network(seed, CPU, "conv", "bf16", 1024) is seed
    assert training_network(seed, CPU, "matmul", "fp32", 64) is not seed
    assert training_network(classic, CPU, "auto", "bf16", 1024) is classic  # it has no such form
    with pytest.raises(lenet.ConfigError, match="no matrix-product form"):
        training_network(classic, CPU, "matmul", "bf16", 1024)


def test_the_test_set_is_read_once_after_training_and_chooses_nothing(monkeypatch):
    """The recipe `fast` is fixed-length: it runs its epochs, validates on the held-out split after each, and
    evaluates the test set once, at the end; nothing in the loop reads the test set before that."""
    seen = []
    real_evaluate = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda model, split: seen.append(len(split)) or real_evaluate(model, split))
    result = fit(make_config("fast", epochs=2, **SMALL), stream=io.StringIO(), progress_bar=False)
    assert [m["epoch"] for m in result.history] == [1, 2]
    assert seen == [58000, 58000, 10000]  # validation after each epoch, then the test set
    assert result.test.count == 10000 and make_config("fast").val_size == 0


class _Counting(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_compiled_training_runs_and_matches_eager(monkeypatch):
    """`--compile` (torch.compile through inductor, ~20 s cold on 2 cores): full batches go through the compiled
    network, the last, smaller one runs eagerly, and the result is the eager run's up to rounding."""
    compiled = []
    real_compile = engine.compile_model

    def counting_compile(model: nn.Module, device: torch.device) -> nn.Module:
        compiled.append(_Counting(real_compile(model, device)))
        return compiled[-1]

    monkeypatch.setattr(engine, "compile_model", counting_compile)
    options = {"epochs": 1, "val_size": 59_650, "batch_size": 100, "log_every": 0, "threads": 1, "seed": 0}
    eager = fit(make_config(**options), stream=io.StringIO(), progress_bar=False)
    assert compiled == []
    result = fit(make_config(compile=True, **options), stream=io.StringIO(), progress_bar=False)
    assert len(compiled) == 1 and compiled[0].calls == 3  # 350 images: 3 full batches, then 50 eagerly
    assert compiled[0].inner._orig_mod is result.model  # torch.compile's wrapper around the network itself
    assert result.history[0]["train_loss"] == pytest.approx(eager.history[0]["train_loss"], rel=1e-5)
    for (name, a), b in zip(result.model.state_dict().items(), eager.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_shift_run_learns(mnist):
    result = fit(make_config(epochs=2, precision="bf16", augment="shift", lr=3e-3, **SMALL),
                 stream=io.StringIO(), progress_bar=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    # well above chance (10 %) after 60 steps: measured 70.5-76.2 % on CPU (seeds 0-2), 69.9 % on a CUDA GPU
    assert result.test.accuracy > 50


def test_bf16_shift_resume_is_bit_identical(interrupted_and_resumed):
    options = {**SMALL, "epochs": 2, "precision": "bf16", "augment": "shift", "schedule": "onecycle", "lr": 3e-3,
               "deterministic": True}
    _, _, differing = interrupted_and_resumed(options)
    assert differing == []  # bit-identical weights
