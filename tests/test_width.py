"""Width normalisation (`--digit-width`, models/width.py) and the validation split's own seed (`--val-seed`):
what committees of differently normalised members need."""

from __future__ import annotations

import json

import pytest
import torch

import lenet
from lenet import committee
from lenet.cli import main
from lenet.models import get_model
from lenet.models.width import WidthNormalization
from lenet.trainer import make_config
from lenet.trainer.engine import build_engine
from lenet.trainer.runfolder import config_identity

TINY = {"model": "modern", "train_size": 1024, "epochs": 1, "batch_size": 128, "threads": 1, "deterministic": True,
        "log_every": 0, "optimizer": "adamw", "lr": 3e-3}


def _inputs(images: torch.Tensor) -> torch.Tensor:
    return images.float()[:, None] / 255


@pytest.mark.parametrize("width", [10, 16, 20])
def test_every_digit_comes_out_its_width_wide_and_centred(mnist, width):
    x = _inputs(mnist.test.images[:500])
    normalize = WidthNormalization(width)
    left, right, has_ink = normalize.ink_columns(normalize(x))
    assert has_ink.all()
    widths = right - left + 1
    # bilinear resampling can lift a faint column over the ink threshold on either side, more often where a thin
    # stroke (a "1", 4 pixels) is stretched several times over
    off = (widths - width).abs()
    assert widths.median().item() == width and (off <= 1).float().mean() >= 0.85 and off.max() <= 4
    centre_off = ((left + right) / 2 - 13.5).abs()
    assert centre_off.median().item() <= 0.5 and centre_off.max().item() <= 2.0  # the same faint columns


def test_rows_are_untouched_only_columns_move(mnist):
    x = _inputs(mnist.test.images[:200])
    y = WidthNormalization(12)(x)
    inked_after, inked_before = y.sum(dim=3) > 1e-4, x.sum(dim=3) > 0  # rounding leaks ~1e-7
    assert not (inked_after & ~inked_before).any()  # no ink moves to another row
    # every row's strokes stay in it (only faint pixels far outside the box may leave the frame)
    assert inked_after[x.amax(dim=3) > 0.5].all()


def test_a_digit_already_that_wide_and_centred_and_a_blank_image_pass_unchanged():
    bar = torch.zeros(2, 1, 28, 28)
    bar[0, 0, 5:20, 9:19] = torch.rand(15, 10) * 0.5 + 0.5  # columns 9-18: 10 wide, centred on 13.5
    torch.testing.assert_close(WidthNormalization(10)(bar), bar, atol=1e-6, rtol=0)


def test_width_normalisation_adds_no_parameters_and_is_recorded_with_the_network():
    plain, normalised = get_model("modern"), get_model("modern", digit_width=16)
    assert normalised.state_dict().keys() == plain.state_dict().keys()
    assert sum(p.numel() for p in normalised.parameters()) == 56_714
    assert normalised.model_kwargs == {"digit_width": 16}
    assert "bounding box is 16 pixels wide" in normalised.summary_notes()
    with pytest.raises(lenet.ConfigError, match="digit width must be a whole number of pixels from 4 to 28, got 29"):
        get_model("modern", digit_width=29)


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "seed", "--digit-width", "16"], "model 'seed' has no digit-width (networks that offer it: modern)"),
    (["--model", "modern", "--digit-width", "3"], "digit-width must be a whole number of pixels from 4 to 28, got 3"),
    (["--model", "modern", "--val-seed", "-1"], "val-seed"),
])
def test_bad_width_or_split_seed_is_one_clear_error(capsys, argv, message):
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_runs_from_before_these_options_keep_their_config_hash():
    now = make_config(model="modern").to_dict()
    before = {k: v for k, v in now.items() if k not in ("val_seed", "digit_width")}
    assert config_identity(before) == config_identity(now)
    assert config_identity({**now, "digit_width": 16}) != config_identity(now)
    assert config_identity({**now, "val_seed": 0}) != config_identity(now)


def test_members_with_one_val_seed_hold_out_the_same_images_whatever_their_seeds():
    def held_out(**options):
        return build_engine(make_config(model="modern", val_size=1000, **options), torch.device("cpu")).data.val

    a, b = held_out(seed=0, val_seed=5), held_out(seed=1, val_seed=5)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(held_out(seed=0).images, held_out(seed=1).images)  # by default the seed chooses
    assert torch.equal(held_out(seed=5).images, a.images)  # and --val-seed S is the split --seed S holds out


def _committee(width_runs, tmp_path, mnist, names=("w16", "plain")):
    sources = [str(width_runs / name) for name in names]
    return committee.build(tmp_path / "c", [lenet.weights.read_record(s) for s in sources], mnist.test,
                           sources=sources, command="test_width").folder


@pytest.fixture(scope="module")
def width_runs(tmp_path_factory):
    """Two tiny trained runs holding out the same 1,000 images (--val-seed 3), one of them width-normalised."""
    root = tmp_path_factory.mktemp("width")
    lenet.train(out=root / "w16", digit_width=16, seed=0, val_size=1000, val_seed=3, **TINY)
    lenet.train(out=root / "plain", seed=1, val_size=1000, val_seed=3, **TINY)
    return root


def test_a_normalised_run_reloads_as_the_same_network(width_runs, mnist):
    loaded = lenet.load(width_runs / "w16")
    assert loaded.digit_width == 16 and isinstance(loaded.normalize_width, WidthNormalization)
    x = _inputs(mnist.test.images[:64])
    features = lenet.models.feature_maps(loaded, x)
    torch.testing.assert_close(features["input"], WidthNormalization(16)(x))  # what the first stage reads


def test_a_committee_of_widths_exports_to_one_graph_with_parity(width_runs, mnist, tmp_path):
    pytest.importorskip("onnxruntime")
    from lenet.export import export

    net = lenet.load(_committee(width_runs, tmp_path, mnist))
    assert [getattr(m, "digit_width", None) for m in net.members] == [16, None]
    spec = export(net, tmp_path / "c.onnx", "onnx", check_images=mnist.test.images)
    parity = spec["parity"]
    assert (parity["images"], parity["same_class"]) == (10_000, 10_000) and parity["max_abs_diff"] <= 1e-4


def _eval_json(capsys, *argv) -> dict:
    assert main(["eval", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_on_the_images_a_run_or_a_committee_held_out(width_runs, mnist, tmp_path, capsys):
    from lenet.data import load_dataset
    from lenet.inference import evaluate

    held_out = load_dataset("mnist", None, 1000, 3).val
    run = _eval_json(capsys, str(width_runs / "w16"), "--split", "val")
    assert (run["split"], run["count"]) == ("val", 1000)
    assert run["accuracy"] == pytest.approx(evaluate(lenet.load(width_runs / "w16"), held_out).accuracy)
    folder = _committee(width_runs, tmp_path, mnist)
    both = _eval_json(capsys, str(folder), "--split", "val")
    assert both["count"] == 1000 and both["accuracy"] == pytest.approx(evaluate(lenet.load(folder), held_out).accuracy)
    assert _eval_json(capsys, str(folder))["count"] == 10_000  # the test set stays the default


def test_validating_what_has_no_shared_held_out_images_is_one_clear_error(width_runs, mnist, tmp_path, capsys):
    assert main(["eval", "modern", "--split", "val"]) == 2
    assert ("modern was trained on all of its training images (no --val-size), so it has no validation split"
            in capsys.readouterr().err)
    lenet.train(out=tmp_path / "other", seed=2, val_size=1000, **TINY)  # held out by its own seed, 2
    mixed = committee.build(tmp_path / "mixed", [lenet.weights.read_record(p) for p in
                                                  (width_runs / "w16", tmp_path / "other")],
                            mnist.test, sources=["w16", "other"], command="test_width").folder
    assert main(["eval", str(mixed), "--split", "val"]) == 2
    err = capsys.readouterr().err
    assert "hold out different images (--val-size 1000 chosen by seed 2; --val-size 1000 chosen by seed 3)" in err
    assert "train its members with one --val-seed" in err and "Traceback" not in err
