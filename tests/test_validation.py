"""Issue 17, table rows 4-7: every bad number, path and input file ends in one line on stderr and exit code 2,
before any work starts (no run folder, no traceback, no hang).

Most cases run `lenet.cli.main` in this process; the ones that could hang or flood memory if the check were
missing (a FIFO, /dev/zero) run in a subprocess with a timeout, and the unreadable-file cases run in a
subprocess that lacks the root's right to read any file."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lenet.checkpoint import save_checkpoint
from lenet.cli import main
from lenet.errors import ConfigError
from lenet.export import check_parity, export
from lenet.models import get_model
from lenet.trainer.config import (
    MAX_SEED,
    THREADS_PER_CORE,
    TrainConfig,
    check_run,
    config_from_dict,
    make_config,
    usable_cores,
)
from lenet.weights import WEIGHTS_DIR

TINY = ["--train-size", "500", "--epochs", "1", "--log-every", "0", "--threads", "1"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code: int, err: str, start: str) -> None:
    """Exit code 2 and exactly one line on stderr, which starts with `start`."""
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(start), err
    assert code == 2


def run_process(*argv: str, timeout: float = 60, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "lenet", *argv], capture_output=True, text=True,
                          timeout=timeout)


def run_folder(tmp_path: Path, name: str = "run") -> Path:
    """A run folder holding a copy of the shipped seed weights and their record."""
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(WEIGHTS_DIR / "seed.safetensors", folder / "model.safetensors")
    shutil.copy(WEIGHTS_DIR / "seed.json", folder / "model.json")
    return folder


@pytest.fixture()
def digit(tmp_path, mnist) -> Path:
    from PIL import Image

    path = tmp_path / "seven.png"
    Image.fromarray(255 - mnist.test.images[0].numpy()).resize((112, 112)).save(path)
    return path


# --- row 4: non-finite numbers that used to train a NaN model, and export's parity check -------------------

@pytest.mark.parametrize("flag, value, start", [
    ("--lr", "inf", "lr must be a finite number > 0, got inf"),
    ("--weight-decay", "nan", "weight-decay must be a finite number >= 0, got nan"),
    ("--momentum", "nan", "momentum must be a finite number in [0, 1), got nan"),
])
def test_row4_non_finite_training_options_are_refused(capsys, tmp_path, flag, value, start):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", flag, value, "--optimizer", "sgd", "--out", str(out), *TINY)
    assert_refused(code, err, f"lenet train: error: {start}")
    assert not out.exists()


def nan_network() -> torch.nn.Module:
    model = get_model("seed").eval()
    with torch.no_grad():
        next(model.parameters())[0].fill_(math.nan)
    return model


def test_row4_every_command_refuses_a_network_with_nan_weights(capsys, tmp_path, digit):
    """NaN weights with a matching record: eval reported 9.80 % (class 0 everywhere), predict "0 (nan%)"."""
    folder = tmp_path / "nan-run"
    save_checkpoint(folder, nan_network())
    out = tmp_path / "nan.pt"
    refusal = (f"{folder}/model.safetensors holds NaN or infinite values (conv1.weight): its training diverged "
               "before these weights were saved; train again (a lower --lr, or --warmup-epochs)")
    for argv in (["export", "--checkpoint", str(folder), "--format", "torchscript", "--out", str(out)],
                 ["eval", str(folder)], ["predict", str(digit), "--checkpoint", str(folder)],
                 ["committee", "build", str(tmp_path / "c"), str(folder), "seed"]):
        code, _, err = run(capsys, *argv)
        assert_refused(code, err, f"lenet {argv[0]}: error: {refusal}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan-run", "seven.png"]


def test_row4_parity_check_fails_on_nan_on_either_side(mnist, tmp_path):
    """max() dropped a NaN that came second: a NaN model 'matched' with a difference of 0.0."""
    good = get_model("seed").eval()
    images = mnist.test.images[:50]
    path = tmp_path / "good.pt"
    export(good, path, "torchscript")
    assert check_parity(path, "torchscript", good, images)["same_class"] == 50

    nan_model = nan_network()
    nan_model.load_state_dict(good.state_dict() | {"conv1.weight": nan_model.state_dict()["conv1.weight"]})
    parity = check_parity(path, "torchscript", nan_model, images)  # PyTorch's side is NaN
    assert parity["same_class"] == 0 and math.isnan(parity["max_abs_diff"])

    from lenet.export import _export_torchscript

    nan_file = tmp_path / "nan.pt"
    _export_torchscript(nan_model, str(nan_file))  # the exported side is NaN (bypassing export's refusal)
    parity = check_parity(nan_file, "torchscript", good, images)
    assert parity["same_class"] == 0 and math.isnan(parity["max_abs_diff"])


class _FixedScores(torch.nn.Module):
    """Scores of `row` for every image: a stand-in network for the parity check's arithmetic."""

    def __init__(self, row: list[float]) -> None:
        super().__init__()
        self.row = torch.tensor(row)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.row.expand(len(x), -1).clone()


@pytest.mark.parametrize("second, exported_second, same, near_ties", [
    (1.0 - 1e-5, 1.0 + 1e-5, 0, 50),  # two best 1e-5 apart, swapped by 2e-5 (within tolerance): a near-tie
    (0.5, 1.5, 0, 0),  # far apart and swapped: a real disagreement
    (1.0 - 1e-5, 1.0 - 1e-5, 50, 0),  # the same scores
])
def test_row4_parity_check_tells_near_ties_from_disagreements(mnist, monkeypatch, second, exported_second, same,
                                                               near_ties):
    import lenet.export as export_module

    row = [0.0] * 10
    row[3], row[5] = 1.0, second
    exported = row.copy()
    exported[5] = exported_second
    monkeypatch.setattr(export_module, "load_runner", lambda path, format: _FixedScores(exported))
    parity = check_parity("unused.onnx", "onnx", _FixedScores(row), mnist.test.images[:50])
    assert (parity["same_class"], parity["near_ties"]) == (same, near_ties)


# --- row 5: numbers out of range, paths that cannot work, broken records ---------------------------------------

@pytest.mark.parametrize("options, start", [
    (["--warmup-epochs", "nan"], "warmup-epochs must be a finite number >= 0, got nan"),
    (["--label-smoothing", "1.5"], "label-smoothing must be a finite number in [0, 1), got 1.5"),
    (["--momentum", "-1", "--optimizer", "sgd"], "momentum must be a finite number in [0, 1), got -1.0"),
    (["--seed", str(10**30)], "seed must be at most 9,223,372,036,854,775,807"),
    (["--seed", "-1"], "seed must not be negative, got -1"),
    (["--betas", "0.9", "1"], "beta2 must be a finite number in [0, 1), got 1.0"),
    (["--map-j", "inf", "--model", "classic"], "map-j must be a finite number > 0, got inf"),
    (["--warmup-epochs", "3", "--epochs", "2"], "warmup-epochs 3.0 is more than the 2 epochs of the run"),
    (["--epochs", "1000001"], "epochs must be at most 1,000,000, got 1000001"),
])
def test_row5_numbers_out_of_range(capsys, tmp_path, options, start):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", *TINY[:2], "--out", str(out), *options)
    assert_refused(code, err, f"lenet train: error: {start}")
    assert not out.exists()


def test_row5_every_bad_number_in_one_line(capsys):
    code, _, err = run(capsys, "train", "--lr", "nan", "--label-smoothing", "-0.1", "--seed", "-5")
    assert_refused(code, err, "lenet train: error: lr must be a finite number > 0, got nan; label-smoothing must "
                              "be a finite number in [0, 1), got -0.1; seed must not be negative, got -5")


def test_row5_seed_range_is_what_torch_takes_as_distinct_seeds():
    """torch takes -2**63 .. 2**64-1, but folds negatives onto the top half, so lenet takes 0 .. 2**63-1."""
    torch.Generator().manual_seed(MAX_SEED)
    assert TrainConfig(seed=0).seed == 0 and TrainConfig(seed=MAX_SEED).seed == MAX_SEED
    assert torch.Generator().manual_seed(-1).initial_seed() == torch.Generator().manual_seed(2**64 - 1).initial_seed()
    for seed in (-1, MAX_SEED + 1, 10**5000):
        with pytest.raises(ConfigError, match="^seed must"):
            TrainConfig(seed=seed)


def test_row5_the_largest_seed_trains(tmp_path):
    """The per-epoch generators are seeded from the run's seed: they must take the largest seed too."""
    import lenet

    result = lenet.train(seed=MAX_SEED, train_size=200, epochs=1, log_every=0, threads=1, batch_size=100)
    assert result.config.seed == MAX_SEED


@pytest.mark.parametrize("where, start", [
    ("file", "--out {file} is a regular file, not a folder"),
    ("under", "--out {file}/run lies under {file}, which is a regular file, not a folder"),
    ("proc", "--out /proc/lenet-run cannot be written: no file can be made in /proc"),
])
def test_row5_out_that_cannot_be_a_run_folder(capsys, tmp_path, where, start):
    file = tmp_path / "notes.txt"
    file.write_text("not a folder\n")
    out = {"file": file, "under": file / "run", "proc": Path("/proc/lenet-run")}[where]
    code, _, err = run(capsys, "train", "--out", str(out), *TINY)
    assert_refused(code, err, "lenet train: error: " + start.format(file=file))
    assert file.read_text() == "not a folder\n"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]  # the write test left nothing behind


def test_row5_out_that_cannot_be_written_as_a_user(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    result = run_process("train", "--out", str(folder / "run"), *TINY, prefix=without_root_privileges())
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"lenet train: error: --out {folder / 'run'} cannot be written: no file can be "
                                    f"made in {folder}, the nearest folder of it that exists (Permission denied)")


def test_row5_data_root_missing_or_a_file(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--data-root", str(tmp_path / "absent"), "--out", str(tmp_path / "run"))
    assert_refused(code, err, f"lenet train: error: data root {tmp_path / 'absent'} does not exist")
    (tmp_path / "file").write_text("")
    code, _, err = run(capsys, "train", "--data-root", str(tmp_path / "file"))
    assert_refused(code, err, f"lenet train: error: --data-root {tmp_path / 'file'} is not a folder")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_row5_an_unknown_device_lists_the_devices(capsys, digit, command):
    argv = ["predict", str(digit)] if command == "predict" else ["eval", "seed"]
    code, _, err = run(capsys, *argv, "--device", "tpu")
    assert_refused(code, err, f"lenet {command}: error: unknown device 'tpu'; available: auto, cpu, cuda, mps")


def test_row5_train_device_tpu(capsys):
    code, _, err = run(capsys, "train", "--device", "tpu")
    assert_refused(code, err, "lenet train: error: unknown device 'tpu' (available: auto, cpu, cuda, mps")


def test_row5_save_preprocessed_on_a_file(capsys, tmp_path, digit):
    file = tmp_path / "seen"
    file.write_text("")
    code, out, err = run(capsys, "predict", str(digit), "--save-preprocessed", str(file))
    assert_refused(code, err, f"lenet predict: error: --save-preprocessed {file} is a regular file, not a folder")
    assert out == ""
    code, _, err = run(capsys, "predict", str(digit), "--save-preprocessed", str(file / "sub"))
    assert_refused(code, err, f"lenet predict: error: --save-preprocessed {file}/sub lies under {file}")


def test_row5_export_under_a_file_or_onto_a_folder(capsys, tmp_path):
    file = tmp_path / "file"
    file.write_text("")
    code, _, err = run(capsys, "export", "--format", "torchscript", "--out", str(file / "m.pt"), "--no-check")
    assert_refused(code, err, f"lenet export: error: --out {file}/m.pt lies under {file}, which is a regular file")
    (tmp_path / "m.pt.json").mkdir()
    code, _, err = run(capsys, "export", "--format", "torchscript", "--out", str(tmp_path / "m.pt"), "--no-check")
    assert_refused(code, err, f"lenet export: error: --out's specification file {tmp_path}/m.pt.json is a folder")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("target", ["model.safetensors", "model.json", "sub/../model.safetensors"])
def test_row5_an_export_never_replaces_its_own_source(capsys, tmp_path, target):
    folder = run_folder(tmp_path)
    (folder / "sub").mkdir()
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    for source in (["--checkpoint", str(folder)], ["--checkpoint", str(folder / "model.safetensors")]):
        code, _, err = run(capsys, "export", *source, "--format", "onnx", "--out", str(folder / target), "--no-check")
        assert_refused(code, err, f"lenet export: error: --out {folder / target} is one of the files the network "
                                  "is exported from; give another file name")
    code, _, err = run(capsys, "export", "--checkpoint", str(folder), "--format", "torchscript", "--out",
                       str(folder / "model"), "--no-check")  # its specification file would be model.json
    assert_refused(code, err, f"lenet export: error: --out's specification file {folder}/model.json is one of")
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("content, start", [
    (b"[1, 2]", "model.json is not a lenet weights record (not a JSON object)"),
    (b'"a string"', "model.json is not a lenet weights record (not a JSON object)"),
    (b"null", "model.json is not a lenet weights record (not a JSON object)"),
    (b'{"model": "\xff\xfe"}', "model.json is not valid JSON ('utf-8' codec can't decode byte 0xff"),
])
def test_row5_a_record_that_is_not_an_object(capsys, tmp_path, content, start):
    folder = run_folder(tmp_path)
    (folder / "model.json").write_bytes(content)
    code, _, err = run(capsys, "eval", str(folder), "--device", "cpu")
    assert_refused(code, err, f"lenet eval: error: {folder}/{start}")


def without_root_privileges() -> tuple[str, ...]:
    """A command prefix that runs without the rights to read and write any file (root's CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH): as a plain user, the process stays as it is."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop the right to read unreadable files")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


@pytest.mark.parametrize("name, start", [
    ("model.safetensors", "the weights file {folder}/model.safetensors cannot be read (Permission denied)"),
    ("model.json", "the weights record {folder}/model.json cannot be read (Permission denied)"),
])
def test_row5_unreadable_weights_or_record(tmp_path, name, start):
    folder = run_folder(tmp_path)
    (folder / name).chmod(0)
    result = run_process("eval", str(folder), "--device", "cpu", prefix=without_root_privileges())
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"lenet eval: error: {start.format(folder=folder)}\n"


# --- row 6: threads -----------------------------------------------------------------------------------------

def test_row6_threads_beyond_the_cores_are_refused(capsys, tmp_path):
    limit = THREADS_PER_CORE * usable_cores()
    code, _, err = run(capsys, "train", "--threads", "10000", "--out", str(tmp_path / "run"))
    assert_refused(code, err, f"lenet train: error: threads must be at most {limit} ({THREADS_PER_CORE} x the "
                              f"{usable_cores()} core")
    assert not (tmp_path / "run").exists()
    assert make_config(threads=limit + 1).threads == limit + 1  # a value, valid as such: another machine may run it
    code, _, err = run(capsys, "bench", "--threads", str(limit + 1))
    assert_refused(code, err, f"lenet bench: error: threads must be at most {limit}")


# --- row 7: non-regular input files ---------------------------------------------------------------------------

def test_row7_predict_on_a_fifo_or_dev_zero_is_refused_unread(tmp_path):
    fifo = tmp_path / "digit.png"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO (named pipe)"), ("/dev/zero", "a character device")):
        result = run_process("predict", str(path), timeout=60)
        assert result.returncode == 2
        assert result.stderr == (f"lenet predict: error: {path} is {kind}, not an image file or a folder: lenet "
                                 "reads only regular files\n")


def test_row7_non_regular_files_are_refused_wherever_lenet_reads(tmp_path, digit, raw_root):
    from lenet.data import load_dataset
    from lenet.errors import CheckpointError, DataError, ImageError
    from lenet.predict import open_image, predict_files
    from lenet.weights import load_network

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for source in (fifo, "/dev/zero"):
        with pytest.raises(ImageError, match="not a regular file"):
            open_image(source)
        with pytest.raises(CheckpointError, match="^the weights file .* not a regular file"):
            load_network(Path(source))
    folder = run_folder(tmp_path)
    (folder / "model.json").unlink()
    os.mkfifo(folder / "model.json")
    with pytest.raises(CheckpointError, match="^the weights record .* is a FIFO"):
        load_network(folder)
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(digit, images / "a.png")
    os.mkfifo(images / "b.png")  # in a folder, only regular files are picked up
    assert [Path(r.path).name for r in predict_files(get_model("seed"), [str(images)])] == ["a.png"]
    labels = raw_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    os.mkfifo(labels)
    with pytest.raises(DataError, match="^MNIST file .*t10k-labels-idx1-ubyte is a FIFO"):
        load_dataset("mnist", raw_root)


def test_row7_a_gzip_bomb_is_refused_after_the_size_it_promises(raw_root):
    import gzip

    from lenet.data import load_dataset
    from lenet.errors import DataError

    labels = raw_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    plain = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(plain + bytes(50_000_000)))  # 50 MB of zeros in a 49 kB file
    with pytest.raises(DataError, match="is truncated or padded: more than the 10008 bytes expected"):
        load_dataset("mnist", raw_root)
    labels.write_bytes(gzip.compress(plain + bytes(100_000_000)))  # over what the compressed file can be
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz is \d{3},\d{3} bytes, over the limit of 75,644 "
                                        "bytes: an MNIST file is 10,008 bytes uncompressed"):
        load_dataset("mnist", raw_root)


def test_row7_image_files_over_the_documented_limit_are_refused_unread(tmp_path):
    from lenet.errors import ImageError
    from lenet.predict import max_file_bytes, open_image

    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(max_file_bytes(1000) + 1)  # sparse: no disk space used
    with pytest.raises(ImageError, match=f"is {max_file_bytes(1000) + 1:,} bytes, over the limit of "
                                         f"{max_file_bytes(1000):,} bytes, too large for an image of at most 1,000"):
        open_image(big, max_pixels=1000)
    assert max_file_bytes() == 161_048_576


# --- the config's own fields, by type ------------------------------------------------------------------------

@pytest.mark.parametrize("options, start", [
    ({"lr": "0.1"}, "lr must be a number, got '0.1'"),
    ({"epochs": 2.0}, "epochs must be an integer, got 2.0"),
    ({"deterministic": "yes"}, "deterministic must be true or false, got 'yes'"),
    ({"betas": 0.9}, "betas must be two numbers, got 0.9"),
    ({"model": ["seed"]}, "unknown model ['seed'] (available: "),
    ({"lr": 10**400}, "lr must be a finite number > 0, got an integer of about 401 digits"),
])
def test_wrong_types_are_config_errors_not_type_errors(options, start):
    with pytest.raises(ConfigError) as error:
        TrainConfig(**options)
    assert str(error.value).startswith(start)


def test_numpy_numbers_are_taken_as_python_numbers():
    import numpy as np

    cfg = TrainConfig(epochs=np.int64(3), lr=np.float32(0.5))
    assert type(cfg.epochs) is int and type(cfg.lr) is float
    json.dumps(cfg.to_dict(), allow_nan=False)


def test_a_config_from_another_machine_with_more_threads_still_reads():
    many = THREADS_PER_CORE * usable_cores() + 1
    assert config_from_dict({"threads": many}).threads == many
    with pytest.raises(ConfigError, match=f"^threads must be at most {many - 1}"):
        check_run(config_from_dict({"threads": many}))

