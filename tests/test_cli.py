import gzip
import subprocess
import sys

import pytest

from lenet.cli import COMMANDS, build_parser, main

# Written out, not read from the parser: a command lost from the parser must fail these tests.
EXPECTED_COMMANDS = ["train", "eval", "summary", "predict", "viz", "export", "bench", "serve", "sweep", "committee",
                     "speedrun"]


def test_every_command_is_registered():
    assert COMMANDS == EXPECTED_COMMANDS
    assert list(build_parser()._subparsers._group_actions[0].choices) == EXPECTED_COMMANDS


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "eval", "summary"):
        assert command in out


@pytest.mark.parametrize("command", EXPECTED_COMMANDS)
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lenet {command}")


def test_summary_prints_the_layer_table(capsys):
    code, out, _ = run(capsys, "summary", "seed")
    assert code == 0
    assert "conv1" in out and "44,426" in out


def test_unknown_model_and_dataset(capsys):
    code, _, err = run(capsys, "train", "--model", "lenet9", "--dataset", "svhn")
    assert_one_line_error(code, err, "unknown model 'lenet9'", "unknown dataset 'svhn'")
    code, _, err = run(capsys, "summary", "lenet9")
    assert_one_line_error(code, err, "unknown model 'lenet9'; available: seed")


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_epochs_and_batch_size(capsys, tmp_path, flag, value):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", flag, value, "--out", str(out))
    assert_one_line_error(code, err, f"{flag[2:]} must be a positive integer, got {value}")
    assert not out.exists()


def test_missing_and_empty_data_root(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--data-root", str(tmp_path / "absent"))
    assert_one_line_error(code, err, "data root", "does not exist")
    code, _, err = run(capsys, "train", "--data-root", str(tmp_path))
    assert_one_line_error(code, err, "no MNIST files in", str(tmp_path))


def test_truncated_gz_wrong_magic_and_md5(capsys, raw_root):
    tmp_path = raw_root
    raw = raw_root / "MNIST" / "raw"
    out = tmp_path / "run"
    labels = raw / "train-labels-idx1-ubyte.gz"
    original = labels.read_bytes()
    labels.write_bytes(original[:1000])
    code, _, err = run(capsys, "train", "--data-root", str(tmp_path), "--out", str(out))
    assert_one_line_error(code, err, "train-labels-idx1-ubyte.gz is truncated")

    plain = gzip.decompress(original)
    labels.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + plain[4:]))
    code, _, err = run(capsys, "train", "--data-root", str(tmp_path), "--out", str(out))
    assert_one_line_error(code, err, "IDX magic number 2051, expected 2049")

    labels.write_bytes(gzip.compress(plain[:-1] + bytes([(plain[-1] + 1) % 10])))
    code, _, err = run(capsys, "train", "--data-root", str(tmp_path), "--out", str(out))
    assert_one_line_error(code, err, "MD5 mismatch", "train-labels-idx1-ubyte.gz")
    assert not out.exists()  # nothing half-written


def test_eval_bad_checkpoints(capsys, tmp_path):
    code, _, err = run(capsys, "eval", str(tmp_path / "absent"))
    assert_one_line_error(code, err, "no checkpoint at")
    junk = tmp_path / "model.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    code, _, err = run(capsys, "eval", str(tmp_path))
    assert_one_line_error(code, err, "not a readable safetensors file")


def test_train_then_eval_end_to_end(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "train", "--epochs", "1", "--batch-size", "256", "--val-size", "50000",
                          "--log-every", "0", "--no-progress", "--out", str(out))
    assert code == 0 and "Test Accuracy:" in stdout
    code, stdout, _ = run(capsys, "eval", str(out))
    assert code == 0 and "confusion matrix" in stdout and "per-class accuracy" in stdout
    code, stdout, _ = run(capsys, "eval", str(out), "--json")
    import json

    report = json.loads(stdout)
    assert report["count"] == 10_000 and len(report["confusion_matrix"]) == 10
    assert sum(map(sum, report["confusion_matrix"])) == 10_000
    code, _, err = run(capsys, "eval", str(out), "--model", "classic")
    assert_one_line_error(code, err, "holds a 'seed' network, not 'classic'")
    from lenet.weights import read_record

    record = read_record(out)  # the run folder's record: the same schema as the shipped weights'
    assert record.command == ("lenet train --epochs 1 --batch-size 256 --val-size 50000 --log-every 0 "
                              f"--no-progress --out {out}")
    assert [h["epoch"] for h in record.history] == [1]
    assert record.metrics["test_errors"] == report["errors"] and record.test_accuracy == report["accuracy"]


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "lenet", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("lenet ")


def test_eval_of_a_shipped_weights_file(capsys):
    import json

    from lenet.weights import WEIGHTS_DIR

    weights = WEIGHTS_DIR / "classic.safetensors"
    code, stdout, _ = run(capsys, "eval", str(weights), "--json")
    report = json.loads(stdout)
    assert code == 0 and report["dataset"] == "mnist" and report["accuracy"] > 98.5
    code, stdout, _ = run(capsys, "eval", "classic", "--json")  # a network's name: its shipped weights
    assert code == 0 and json.loads(stdout)["accuracy"] == report["accuracy"]


def test_eval_help_lists_every_shipped_name_and_committee_folders(capsys, monkeypatch, tmp_path):
    # the help listed "seed, classic, modern" only, though modern-committee and committee folders are accepted
    monkeypatch.setenv("COLUMNS", "1000")  # argparse would break "modern-committee" at its hyphen

    def help_text():
        with pytest.raises(SystemExit):
            main(["eval", "--help"])
        return " ".join(capsys.readouterr().out.split())

    assert ("a folder written by `lenet train --out` or its model.safetensors, a committee folder (`lenet committee "
            "build`), or the name of weights shipped with lenet (networks: seed, classic, modern; committees: "
            "modern-committee); a name never means a path") in help_text()
    # read from the weights folder, not typed in: a committee shipped there is listed
    import lenet.shipped

    for name in ("seed.safetensors", "other-committee/committee.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    monkeypatch.setattr(lenet.shipped, "WEIGHTS_DIR", tmp_path)
    assert "(networks: seed; committees: other-committee)" in help_text()
