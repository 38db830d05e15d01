"""The `modern` network (the paper's parameter budget, its stages), the moving average of the weights (--ema)
and test-time augmentation (--tta)."""

from __future__ import annotations

import pytest
import torch

import lenet
from lenet.cli import main
from lenet.data import Split
from lenet.inference import TTA_SHIFTS, evaluate, scores_in_chunks, shifted, tta_scores
from lenet.models import get_model, layer_table

PAPER_BUDGET = 60_000  # LeNet-5's trainable parameters (LeCun et al. 1998, section II.B)


def test_modern_is_within_the_papers_parameter_budget():
    net = get_model("modern")
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable == 56_714 <= PAPER_BUDGET
    assert sum(row.params for row in layer_table(net)) == trainable


def test_modern_keeps_lenet5s_shape_three_convolutions_then_one_small_classifier():
    rows = layer_table(get_model("modern"))
    kinds = [row.kind.split()[0] for row in rows]
    assert kinds.count("Conv2d") == 3 and kinds.count("Linear") == 1 and kinds[-1] == "Linear"
    assert [row.output_shape for row in rows if row.kind.startswith("Conv2d")] == [(32, 28, 28), (48, 14, 14),
                                                                                   (80, 7, 7)]


def test_modern_feature_maps_and_batch_statistics():
    net = get_model("modern").eval()
    maps = lenet.models.feature_maps(net, torch.rand(3, 1, 28, 28))
    assert list(maps)[:4] == ["input", "c1", "bn1", "s2"] and maps["f6"].shape == (3, 10)
    assert (maps["bn1"] >= 0).all()  # batch norm, then ReLU
    net.train()
    net(torch.rand(16, 1, 28, 28))  # one training-mode pass moves the running statistics
    assert not torch.equal(net.bn1.running_mean, torch.zeros(32))


# --- the moving average of the weights ---------------------------------------------------------------------

EMA_RUN = {"model": "modern", "train_size": 1024, "val_size": 1000, "epochs": 2, "batch_size": 128, "threads": 1,
           "deterministic": True, "log_every": 0, "optimizer": "adamw", "lr": 3e-3, "seed": 1}


def test_ema_is_what_is_evaluated_and_saved_and_the_raw_weights_are_reported(tmp_path, capsys):
    result = lenet.train(out=tmp_path / "run", ema=0.9, **EMA_RUN)
    out = capsys.readouterr().out
    assert "Test Accuracy without the moving average: " in out
    last = result.history[-1]
    assert {"val_accuracy", "val_accuracy_raw"} <= set(last)
    saved = lenet.load(tmp_path / "run")
    assert all(torch.equal(saved.state_dict()[k], v) for k, v in result.model.state_dict().items())
    record = lenet.weights.read_record(tmp_path / "run")
    assert record.metrics["test_accuracy"] == pytest.approx(result.test.accuracy)
    assert "test_accuracy_raw" in record.metrics
    # the average is not the last step's weights: it differs from the raw network's
    assert lenet.evaluate(tmp_path / "run").accuracy == pytest.approx(result.test.accuracy)


def test_an_interrupted_ema_run_resumes_bit_identical(interrupted_and_resumed):
    """resume.safetensors holds the moving average: a run stopped after epoch 1 ends as an uninterrupted one."""
    whole, resumed, differing = interrupted_and_resumed({**EMA_RUN, "ema": 0.9})
    assert differing == []
    assert resumed.history[-1]["val_accuracy_raw"] == whole.history[-1]["val_accuracy_raw"]


def test_runs_of_a_lenet_before_ema_keep_their_config_hash():
    """A resume state written before TrainConfig had `ema` must still match its run's config."""
    from lenet.trainer import make_config
    from lenet.trainer.runfolder import config_identity

    now = make_config(model="modern").to_dict()
    before = {k: v for k, v in now.items() if k != "ema"}
    assert config_identity(before) == config_identity(now)
    assert config_identity({**now, "ema": 0.99}) != config_identity(now)


def test_ema_out_of_range_is_one_clear_error(capsys):
    assert main(["train", "--model", "modern", "--ema", "1"]) == 2
    assert "ema must be a finite number in [0, 1), got 1.0" in capsys.readouterr().err


# --- test-time augmentation ---------------------------------------------------------------------------------

def test_shifted_moves_the_image_and_blanks_what_it_uncovers():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    right = shifted(x, 0, 1)
    assert torch.equal(right[..., :, 1:], x[..., :, :3]) and (right[..., :, 0] == 0).all()
    down = shifted(x, 1, 0)
    assert torch.equal(down[..., 1:, :], x[..., :3, :]) and (down[..., 0, :] == 0).all()
    assert torch.equal(shifted(x, 0, 0), x)


def test_tta_scores_are_the_log_of_the_mean_probability_of_the_five_views():
    net = get_model("seed").eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        expected = torch.stack([net(shifted(x, dy, dx)).softmax(1) for dy, dx in TTA_SHIFTS]).mean(0)
        torch.testing.assert_close(tta_scores(net, x).exp(), expected)
    assert len(TTA_SHIFTS) == 5


def test_tta_evaluation_on_real_mnist(mnist):
    net = lenet.load("seed")
    test = Split(mnist.test.images[:2000], mnist.test.labels[:2000])
    plain, averaged = evaluate(net, test), evaluate(net, test, tta=True)
    assert averaged.count == plain.count == 2000
    assert abs(averaged.accuracy - plain.accuracy) < 1.0  # five views of a trained network mostly agree
    scores = scores_in_chunks(net, test.images, tta=True)
    assert torch.equal(scores.argmax(1), averaged.predictions)


def test_cli_eval_tta_is_reported_beside_the_plain_accuracy(capsys, mnist):
    import json

    net = lenet.load("seed")
    plain, averaged = evaluate(net, mnist.test), evaluate(net, mnist.test, tta=True)
    assert main(["eval", "seed", "--tta", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tta"] is True and report["count"] == 10_000
    assert (report["accuracy"], report["errors"]) == (plain.accuracy, plain.errors)  # the headline: one view
    assert (report["tta_accuracy"], report["tta_errors"]) == (averaged.accuracy, averaged.errors)
    assert main(["eval", "seed", "--tta"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"seed on mnist test set: {plain.accuracy:.2f}% accuracy ({plain.errors} errors")
    assert (f"with test-time augmentation (the mean of the image and its four one-pixel shifts), beside: "
            f"{averaged.accuracy:.2f}% accuracy ({averaged.errors} errors in 10,000)") in text


# --- the shipped weights: `modern` and the committee `modern-committee` ---------------------------------------

def test_the_shipped_modern_committee_is_a_name_like_a_network(capsys):
    assert "modern-committee" in lenet.weights.shipped_committees()
    assert lenet.weights.is_name("modern-committee")
    record = lenet.weights.read_record("modern-committee")
    net = lenet.load("modern-committee")
    assert 2 <= len(net.members) <= 10
    assert all(m.model_name == "modern" and sum(p.numel() for p in m.parameters()) <= PAPER_BUDGET
               for m in net.members)
    folder = lenet.weights.WEIGHTS_DIR / "modern-committee"
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 5 * 2**20  # under 5 MB
    assert main(["eval", "modern-committee", "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == record.metrics["test_errors"]
    assert report["accuracy"] == pytest.approx(record.test_accuracy)


def test_a_shipped_committee_name_works_as_model_option_and_is_listed():
    from lenet.weights import list_shipped, source_from_options

    assert source_from_options("modern-committee", None) == ("modern-committee", None)
    committees = [r for r in list_shipped() if r.model == "committee"]
    assert [r.weights_path.parent.name for r in committees] == ["modern-committee"]


def test_the_shipped_committee_exports_to_one_onnx_graph_with_parity(mnist, tmp_path):
    pytest.importorskip("onnxruntime")
    from lenet.export import export

    spec = export(lenet.load("modern-committee"), tmp_path / "modern-committee.onnx", "onnx",
                  check_images=mnist.test.images)
    parity = spec["parity"]
    assert (parity["images"], parity["same_class"]) == (10_000, 10_000)
    assert parity["max_abs_diff"] <= 1e-4 and spec["model"] == "committee"
