"""Committees (lenet.committee, `lenet committee`): the mean of the members' probabilities, one network everywhere
(eval, predict, export, the API), every member's SHA-256 checked on load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lenet
from lenet import committee, weights
from lenet._io import file_digest
from lenet.cli import main
from lenet.committee import MANIFEST_NAME, Committee
from lenet.errors import CheckpointError, ConfigError
from lenet.export import export, load_runner
from lenet.inference import probabilities, to_input

MEMBERS = ["seed", "classic"]  # the shipped weights: two different networks, no training needed


@pytest.fixture(scope="module")
def built(tmp_path_factory, mnist) -> committee.BuildResult:
    """A committee of the shipped seed and classic weights, built once for the module (tests copy it to change it)."""
    out = tmp_path_factory.mktemp("committees") / "shipped"
    return committee.build(out, [weights.read_record(name) for name in MEMBERS], mnist.test, sources=MEMBERS,
                           command="test_committee")


@pytest.fixture()
def copy(built, tmp_path) -> Path:
    """A copy of the built committee folder, free to damage."""
    return Path(shutil.copytree(built.folder, tmp_path / "committee"))


def _one_error_line(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert all(n in lines[0] for n in needles), lines[0]
    assert captured.out == ""
    return lines[0]


# --- the mean of the members' probabilities ------------------------------------------------------------------

def test_probabilities_are_the_mean_of_the_members(built, mnist):
    net = weights.load_network(built.folder)
    assert isinstance(net, Committee) and len(net.members) == 2 and not net.training
    members = [probabilities(weights.load_network(name), mnist.test.images) for name in MEMBERS]
    combined = probabilities(net, mnist.test.images)
    torch.testing.assert_close(combined, (members[0] + members[1]) / 2, atol=1e-6, rtol=0)
    # ... and it is a real combination: it disagrees with each member somewhere
    assert all((combined.argmax(1) != m.argmax(1)).any() for m in members)


def test_forward_is_the_log_of_the_mean(built, mnist):
    net = weights.load_network(built.folder)
    x = to_input(mnist.test.images[:256])
    with torch.no_grad():
        scores = net(x)
        mean = torch.stack([torch.softmax(m(x), 1) for m in net.members]).mean(0)
    torch.testing.assert_close(scores, mean.log(), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(scores.exp().sum(1), torch.ones(256), atol=1e-5, rtol=0)


def test_the_recorded_metrics_are_measured_on_the_test_set(built, mnist):
    manifest = built.manifest
    result = lenet.evaluate(built.folder, device="cpu")
    assert manifest["metrics"]["test_errors"] == result.errors
    assert manifest["metrics"]["test_accuracy"] == pytest.approx(result.accuracy, abs=1e-4)
    for entry, name in zip(manifest["members"], MEMBERS, strict=True):
        # each member measured anew, equal to what its own record says
        assert entry["test_accuracy"] == pytest.approx(weights.read_record(name).test_accuracy, abs=1e-9)
        assert entry["test_errors"] == lenet.evaluate(name, device="cpu").errors


# --- the folder and its manifest -----------------------------------------------------------------------------

def test_manifest_round_trip(built):
    folder = built.folder
    manifest = committee.read_manifest(folder)
    assert manifest == json.loads(json.dumps(built.manifest))
    assert (manifest["schema"], manifest["schema_version"], manifest["dataset"]) == ("lenet-committee", 1, "mnist")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "committee.json", "members/00/model.json", "members/00/model.safetensors",
        "members/01/model.json", "members/01/model.safetensors"]
    for entry, name in zip(manifest["members"], MEMBERS, strict=True):
        shipped = weights.resolve(name)
        assert (folder / entry["path"]).read_bytes() == shipped.read_bytes()  # the very bytes, hash and all
        assert entry["sha256"] == file_digest(shipped, "sha256") == weights.read_record(name).sha256
        assert (entry["model"], entry["source"], entry["source_path"]) == (name, name, str(shipped.resolve()))
    record = weights.read_record(folder)
    assert (record.model, record.dataset, record.command) == ("committee", "mnist", "test_committee")
    assert record.sha256 == file_digest(folder / MANIFEST_NAME, "sha256")
    assert record.num_params == sum(weights.read_record(n).num_params for n in MEMBERS)
    assert record.metrics == manifest["metrics"] and record.test_accuracy == manifest["metrics"]["test_accuracy"]
    assert weights.resolve(folder) == folder / MANIFEST_NAME
    assert weights.read_record(folder / MANIFEST_NAME) == weights.read_record(str(folder)) == record


def test_the_folder_appears_whole_or_not_at_all(mnist, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(committee, "atomic_write_json", fail)
    with pytest.raises(OSError, match="disk full"):
        committee.build(tmp_path / "c", [weights.read_record("seed")], mnist.test)
    assert list(tmp_path.iterdir()) == []  # no OUT, no temporary folder left


def test_an_existing_out_is_kept_unless_overwritten(copy, mnist, tmp_path):
    records = [weights.read_record("seed")]
    with pytest.raises(ConfigError, match="already exists"):
        committee.build(copy, records, mnist.test)
    committee.build(copy, records, mnist.test, overwrite=True)
    assert len(committee.read_manifest(copy)["members"]) == 1 and not (copy / "members" / "01").exists()
    (tmp_path / "notes").mkdir()
    with pytest.raises(ConfigError, match="is not a committee folder"):
        committee.build(tmp_path / "notes", records, mnist.test, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["committee", "notes"]


# --- damaged or tampered folders are refused -----------------------------------------------------------------

def _tamper(path: Path) -> None:
    """Change one weight, keeping a valid safetensors file with the same header."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    state = load_file(str(path))
    name = sorted(state)[0]
    state[name].view(-1)[0] += 0.001
    save_file(state, str(path), metadata=header)


def test_a_tampered_member_is_refused(copy, capsys):
    member = copy / "members" / "01" / "model.safetensors"
    _tamper(member)
    with pytest.raises(CheckpointError, match="SHA-256 mismatch") as caught:
        lenet.load(copy)
    assert str(member) in str(caught.value)
    _one_error_line(capsys, ["eval", str(copy)], str(member), "SHA-256 mismatch")
    _one_error_line(capsys, ["export", "--checkpoint", str(copy), "--format", "onnx", "--out",
                             str(copy.parent / "c.onnx")], "SHA-256 mismatch")
    assert not (copy.parent / "c.onnx").exists()
    _one_error_line(capsys, ["committee", "show", str(copy)], str(member), "SHA-256 mismatch")  # it printed the table


def test_a_member_swapped_with_its_record_is_refused(copy):
    # weights and record replaced together: each agrees with the other, not with the manifest
    for name in ("model.safetensors", "model.json"):
        shutil.copy(copy / "members" / "00" / name, copy / "members" / "01" / name)
    with pytest.raises(CheckpointError, match=r"committee member 1: .* the manifest .* says 'classic'"):
        weights.load_network(copy)


def test_a_changed_manifest_hash_is_refused(copy):
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["members"][0]["sha256"] = "0" * 64
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="committee member 0: .*a member was replaced or damaged"):
        weights.read_record(copy)


@pytest.mark.parametrize("change, message", [
    (lambda m: m["members"][0].update(path="../../etc/model.safetensors"), "leaves the committee folder"),
    (lambda m: m.update(members=[]), "members is not a non-empty list"),
    (lambda m: m.update(schema_version=7), "newer lenet"),
    (lambda m: m.update(schema="lenet-weights"), "schema is 'lenet-weights'"),
    (lambda m: m["members"][1].pop("sha256"), "member 1: sha256 is missing"),
])
def test_a_malformed_manifest_is_refused(copy, change, message):
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    change(manifest)
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=message):
        lenet.load(copy)


def test_a_missing_member_or_unreadable_manifest_is_refused(copy):
    (copy / "members" / "01" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="committee member 1, .* is missing"):
        lenet.load(copy)
    (copy / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON .*; rebuild the committee with `lenet committee"):
        lenet.load(copy)
    (copy / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"committee.json is not a committee manifest \(not a JSON object\)"):
        lenet.load(copy)


def test_expected_model_refuses_a_committee_of_other_networks(built):
    with pytest.raises(CheckpointError, match="a committee of classic, seed networks, not only 'seed'"):
        weights.load_network(built.folder, expected_model="seed")


# --- export: one graph, parity-checked ----------------------------------------------------------------------

def test_onnx_export_matches_pytorch_on_the_whole_test_set(built, mnist, tmp_path):
    pytest.importorskip("onnxruntime")
    net = weights.load_network(built.folder)
    out = tmp_path / "committee.onnx"
    spec = export(net, out, "onnx", check_images=mnist.test.images)
    parity = spec["parity"]
    assert (parity["images"], parity["same_class"]) == (10_000, 10_000)
    assert parity["max_abs_diff"] <= 1e-4 and spec["model"] == "committee"
    import onnx

    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["scores"]
    # the exported scores' softmax is the mean of the members' probabilities
    run = load_runner(out, "onnx")
    x = to_input(mnist.test.images[:1000])
    members = [probabilities(weights.load_network(name), mnist.test.images[:1000]) for name in MEMBERS]
    torch.testing.assert_close(torch.softmax(run(x), 1), sum(members) / 2, atol=1e-5, rtol=0)


# --- the command line ----------------------------------------------------------------------------------------

def test_cli_build_prints_members_and_the_committee(tmp_path, capsys, built):
    out = tmp_path / "c"
    assert main(["committee", "build", str(out), "seed", "classic"]) == 0
    lines = capsys.readouterr().out.splitlines()
    metrics = built.manifest["metrics"]
    assert lines[0] == f"committee of 2 in {out} (mean of the members' softmax probabilities)"
    assert lines[2].split()[:4] == ["0", "seed", "seed", "0"]
    assert lines[3].split()[:4] == ["1", "classic", "classic", "0"]
    assert lines[2].split()[5:7] == ["99.29%", "71"] and lines[3].split()[5:7] == ["99.09%", "91"]
    assert lines[4] == (f"committee on mnist test set: {metrics['test_accuracy']:.2f}% accuracy "
                        f"({metrics['test_errors']} errors)")
    manifest = committee.read_manifest(out)
    assert manifest["command"] == f"lenet committee build {out} seed classic"
    assert [m["sha256"] for m in manifest["members"]] == [m["sha256"] for m in built.manifest["members"]]
    _one_error_line(capsys, ["committee", "build", str(out), "seed"], f"{out} already exists", "--overwrite")
    assert main(["committee", "build", str(out), "seed", "--overwrite", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["members"]) == 1


def test_cli_refusals(tmp_path, capsys, built):
    _one_error_line(capsys, ["committee", "build", str(tmp_path / "c"), str(built.folder)],
                    "is itself a committee")
    _one_error_line(capsys, ["committee", "build", str(tmp_path / "c"), "seed", "classic", "--best", "1"],
                    "--best chooses by validation accuracy", "--val-size")
    _one_error_line(capsys, ["committee", "build", str(tmp_path / "c"), "seed", "classic", "--best", "3"],
                    "--best 3 chooses from 2 runs: give --best 2 or less, or more runs")
    _one_error_line(capsys, ["committee", "build", str(tmp_path / "c"), str(tmp_path / "nothing")],
                    "no checkpoint at")
    assert not (tmp_path / "c").exists()
    assert main(["committee"]) == 2 and "build" in capsys.readouterr().out
    _one_error_line(capsys, ["committee", "show", str(tmp_path / "nowhere")],
                    f"lenet committee: error: {tmp_path}/nowhere does not exist")


def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(committee, "measure", _must_not_run)
    _one_error_line(capsys, ["committee", "build", str(tmp_path / "file" / "c"), "seed", "classic"],
                    f"lenet committee: error: OUT {tmp_path}/file/c lies under {tmp_path}/file, which is a "
                    "regular file, not a folder")
    _one_error_line(capsys, ["committee", "train", "--members", "2", "--train-size", "500", "--epochs", "1",
                             "--out", str(tmp_path / "file" / "c")],
                    f"--out {tmp_path}/file/c lies under {tmp_path}/file")
    with pytest.raises(ConfigError, match=f"out {tmp_path}/file/c lies under"):
        lenet.build_committee(tmp_path / "file" / "c", MEMBERS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def _must_not_run(*args, **kwargs):
    raise AssertionError("the committee was measured before its folder was checked")


def test_a_member_given_twice_is_refused(tmp_path, capsys):
    _one_error_line(capsys, ["committee", "build", str(tmp_path / "c"), "seed", "classic", "seed"],
                    "seed and seed are the same network (SHA-256 ", "give each member once")
    shipped = str(weights.read_record("seed").weights_path)
    with pytest.raises(ConfigError, match=f"{shipped} and seed are the same network"):
        lenet.build_committee(tmp_path / "c", ["seed", shipped])
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("members", ["seed", Path("runs/r0"), [], ["seed", 3], None])
def test_build_committee_wants_a_list_of_members(tmp_path, members):
    with pytest.raises(TypeError, match="members must be a (non-empty )?list of names, run folders or weights files"):
        lenet.build_committee(tmp_path / "c", members)
    assert not (tmp_path / "c").exists()


def test_cli_eval_show_and_predict_take_a_committee_folder(built, mnist, tmp_path, capsys):
    folder = str(built.folder)
    metrics = built.manifest["metrics"]
    assert main(["eval", folder]) == 0
    assert capsys.readouterr().out.startswith(f"committee on mnist test set: {metrics['test_accuracy']:.2f}% "
                                              f"accuracy ({metrics['test_errors']} errors in 10,000")
    assert main(["eval", folder, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["model"], report["errors"]) == ("committee", metrics["test_errors"])
    assert report["sha256"] == file_digest(built.folder / MANIFEST_NAME, "sha256")
    assert main(["committee", "show", folder]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"committee on mnist test set: "
                                                               f"{metrics['test_accuracy']:.2f}%")
    paths = []
    for i in range(5):  # real test digits, dark ink on white, 4x the size
        path = tmp_path / f"{i}.png"
        Image.fromarray(255 - mnist.test.images[i].numpy()).resize((112, 112)).save(path)
        paths.append(str(path))
    assert main(["predict", *paths, "--checkpoint", folder, "--json"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["prediction"] for a in answers] == mnist.test.labels[:5].tolist()
    assert all(abs(sum(a["probabilities"]) - 1) < 1e-4 for a in answers)
    _one_error_line(capsys, ["predict", paths[0], "--checkpoint", folder, "--model", "seed"],
                    "a committee of classic, seed networks, not only 'seed'")


def test_cli_train_trains_members_with_seeds_then_builds(tmp_path, capsys, mnist):
    out, runs = tmp_path / "c", tmp_path / "runs"
    argv = ["committee", "train", "--members", "3", "--out", str(out), "--runs", str(runs), "--first-seed", "4",
            "--train-size", "2000", "--epochs", "1", "--log-every", "0", "--val-size", "1000"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert [line for line in printed.splitlines() if line.startswith("member ")] == [
        f"member {i + 1}/3: seed {4 + i} -> {runs / f'seed-{4 + i}'}" for i in range(3)]
    manifest = committee.read_manifest(out)
    assert [m["seed"] for m in manifest["members"]] == [4, 5, 6]
    assert [m["source"] for m in manifest["members"]] == [str(runs / f"seed-{s}") for s in (4, 5, 6)]
    records = [weights.read_record(runs / f"seed-{s}") for s in (4, 5, 6)]
    assert [m["sha256"] for m in manifest["members"]] == [r.sha256 for r in records]
    assert [r.config["seed"] for r in records] == [4, 5, 6] and {r.config["train_size"] for r in records} == {2000}
    # three different networks; the committee's probabilities are the mean of theirs
    net = lenet.load(out)
    member_probs = [probabilities(lenet.load(runs / f"seed-{s}"), mnist.test.images) for s in (4, 5, 6)]
    assert not torch.equal(member_probs[0], member_probs[1])
    torch.testing.assert_close(probabilities(net, mnist.test.images), sum(member_probs) / 3, atol=1e-6, rtol=0)

    # the best 2 by validation accuracy (never test accuracy)
    best = sorted(records, key=lambda r: -r.metrics["val_accuracy"])[:2]
    assert main(["committee", "build", str(tmp_path / "best2"), *[str(runs / f"seed-{s}") for s in (4, 5, 6)],
                 "--best", "2"]) == 0
    chosen = committee.read_manifest(tmp_path / "best2")["members"]
    assert {m["sha256"] for m in chosen} == {r.sha256 for r in best}


def test_members_can_differ_by_distortion_in_consecutive_groups(tmp_path, capsys, mnist):
    from lenet.cli.committee_cmd import member_groups

    assert member_groups(10, ["affine", "elastic-mild+affine"]) == ["affine"] * 5 + ["elastic-mild+affine"] * 5
    assert member_groups(10, ["a", "b", "c"]) == ["a"] * 4 + ["b"] * 3 + ["c"] * 3
    assert member_groups(2, ["a", "b"]) == ["a", "b"]
    out, runs = tmp_path / "c", tmp_path / "runs"
    argv = ["committee", "train", "--members", "3", "--out", str(out), "--runs", str(runs), "--augments", "none",
            "elastic-mild+affine", "--train-size", "500", "--epochs", "1", "--log-every", "0"]
    assert main(argv) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("member ")]
    assert printed == [f"member 1/3: seed 0 --augment none -> {runs / 'seed-0'}",
                       f"member 2/3: seed 1 --augment none -> {runs / 'seed-1'}",
                       f"member 3/3: seed 2 --augment elastic-mild+affine -> {runs / 'seed-2'}"]
    records = [weights.read_record(runs / f"seed-{s}") for s in range(3)]
    assert [r.config["augment"] for r in records] == ["none", "none", "elastic-mild+affine"]
    assert [m["seed"] for m in committee.read_manifest(out)["members"]] == [0, 1, 2]
    # a member folder started with another distortion is refused, not silently continued into this committee
    _one_error_line(capsys, [*argv[:9], "affine", "none", *argv[11:], "--overwrite"],
                    f"{runs / 'seed-0'} holds a member started with other options than this committee gives it "
                    "(--augment none there, affine here): give the options it was started with, another --runs, or "
                    "delete that folder")
    # so is one started with another learning rate (it used to be continued with its own)
    _one_error_line(capsys, [*argv, "--lr", "0.5", "--overwrite"],
                    f"{runs / 'seed-0'} holds a member started with other options than this committee gives it "
                    "(--lr 0.001 there, 0.5 here)")


def test_members_can_differ_by_digit_width_and_by_distortion_at_once(tmp_path, capsys):
    out, runs = tmp_path / "c", tmp_path / "runs"
    base = ["committee", "train", "--members", "3", "--out", str(out), "--runs", str(runs), "--model", "modern",
            "--train-size", "300", "--epochs", "1", "--batch-size", "100", "--log-every", "0"]
    assert main([*base, "--digit-widths", "none", "12", "16", "--augments", "affine", "none"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("member ")]
    assert printed == [f"member 1/3: seed 0 --augment affine -> {runs / 'seed-0'}",
                       f"member 2/3: seed 1 --augment affine --digit-width 12 -> {runs / 'seed-1'}",
                       f"member 3/3: seed 2 --augment none --digit-width 16 -> {runs / 'seed-2'}"]
    assert [getattr(m, "digit_width", None) for m in lenet.load(out).members] == [None, 12, 16]
    # a member folder started with another width is refused, not silently continued into this committee
    _one_error_line(capsys, [*base, "--digit-widths", "none", "14", "16", "--augments", "affine", "none",
                             "--overwrite"],
                    f"{runs / 'seed-1'} holds a member started with other options than this committee gives it "
                    "(--digit-width 12 there, 14 here)")
    _one_error_line(capsys, [*base, "--digit-widths", "12", "--digit-width", "12", "--overwrite"],
                    "--digit-widths gives each group of members its --digit-width: give one of them, not both")
    _one_error_line(capsys, [*base, "--digit-widths", "10", "12", "14", "16", "--overwrite"],
                    "--digit-widths names 4 widths for 3 members: give at least one member to each")
    with pytest.raises(SystemExit):
        main([*base, "--digit-widths", "wide"])
    assert "a digit width is a whole number of pixels or none, got 'wide'" in capsys.readouterr().err


def test_one_augment_for_every_member_is_passed_once(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["committee", "train", "--members", "1", "--out", str(tmp_path / "c"), "--runs", str(runs),
                 "--augment", "shift", "--train-size", "300", "--epochs", "1", "--log-every", "0"]) == 0
    assert weights.read_record(runs / "seed-0").config["augment"] == "shift"


def test_every_member_is_checked_before_the_first_trains(tmp_path, capsys):
    _one_error_line(capsys, ["committee", "train", "--members", "2", "--model", "modern", "--out", str(tmp_path / "c"),
                             "--digit-widths", "14", "3", "--epochs", "1", "--train-size", "300"],
                    "digit-width must be a whole number of pixels from 4 to 28, got 3")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_distortion_groups_are_refused_before_training(tmp_path, capsys):
    base = ["committee", "train", "--out", str(tmp_path / "c"), "--train-size", "500", "--epochs", "1"]
    _one_error_line(capsys, [*base, "--members", "2", "--augments", "affine", "none", "elastic"],
                    "--augments names 3 distortions for 2 members: give at least one member to each")
    _one_error_line(capsys, [*base, "--members", "2", "--augments", "affine", "--augment", "none"],
                    "--augments gives each group of members its --augment: give one of them, not both")
    with pytest.raises(SystemExit):
        main([*base, "--members", "2", "--augments", "affine", "wobbly"])
    assert "invalid choice: 'wobbly'" in capsys.readouterr().err
    assert not (tmp_path / "c-runs").exists()


def test_cli_build_takes_a_sweep_folder(tmp_path, capsys):
    """A sweep folder (lenet.sweep's layout, made by hand: sweep.json, runs/NAME/ with trial.json once finished)
    stands for its finished runs, or with --best K for the K with the highest validation accuracy."""
    from lenet.checkpoint import save_checkpoint
    from lenet.models import get_model

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    runs = []
    for trial, val in enumerate((90.0, 95.0, 93.0, 99.0)):
        torch.manual_seed(trial)
        run = sweep / "runs" / f"t{trial}"
        save_checkpoint(run, get_model("seed"), {"config": {"model": "seed", "dataset": "mnist", "seed": trial},
                                                 "metrics": {"val_accuracy": val, "test_accuracy": 50.0}})
        if trial < 3:  # the last one has not finished: no trial.json yet
            (run / "trial.json").write_text(json.dumps({"trial": trial, "cell": "all", "cell_key": "all",
                                                        "seed": trial, "wall_s": 1.0}))
        runs.append(run)
    assert main(["committee", "build", str(tmp_path / "all"), str(sweep)]) == 0
    assert [m["source"] for m in committee.read_manifest(tmp_path / "all")["members"]] == [str(r) for r in runs[:3]]
    assert main(["committee", "build", str(tmp_path / "best2"), str(sweep), "--best", "2"]) == 0
    assert [m["seed"] for m in committee.read_manifest(tmp_path / "best2")["members"]] == [1, 2]
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    _one_error_line(capsys, ["committee", "build", str(tmp_path / "c"), str(tmp_path / "empty")],
                    "is not a sweep folder")


def test_a_committee_of_one_is_its_member(mnist, tmp_path):
    result = committee.build(tmp_path / "one", [weights.read_record("seed")], mnist.test)
    images = mnist.test.images[:500]
    torch.testing.assert_close(probabilities(lenet.load(tmp_path / "one"), images),
                               probabilities(lenet.load("seed"), images), atol=1e-6, rtol=0)
    assert result.manifest["metrics"]["test_errors"] == result.manifest["members"][0]["test_errors"]
    assert np.isclose(result.manifest["metrics"]["test_accuracy"], 99.29)


def test_serve_serves_a_committee_folder(built, mnist):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lenet.serve import create_app

    image = mnist.test.images[0]
    with TestClient(create_app(checkpoint=built.folder)) as client:
        models = client.get("/api/models").json()
        entry = next(m for m in models["models"] if m["name"] == "committee")
        assert models["default"] == "committee"
        assert entry["source"] == "checkpoint" and entry["test_accuracy"] == built.manifest["metrics"]["test_accuracy"]
        answer = client.post("/api/predict?details=true", json={"pixels": image.flatten().tolist()})
    assert answer.status_code == 200, answer.text
    expected = probabilities(built.committee, image[None])[0]
    assert answer.json()["prediction"] == int(expected.argmax()) == int(mnist.test.labels[0])
    assert answer.json()["probabilities"] == pytest.approx(expected.tolist(), abs=1e-5)
    assert [m["layer"] for m in answer.json()["feature_maps"]]  # the first member's maps
