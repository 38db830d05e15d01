"""`lenet bench`: the keys and sanity of its JSON, with tiny repetition counts (no timing asserted)."""

import json

import pytest

from lenet.bench import BenchResult, format_result
from lenet.cli import main
from lenet.hardware import Cpu


def test_bench_json_keys_and_sane_values(capsys):
    code = main(["bench", "--json", "--repeats", "1", "--tutorial-steps", "5", "--epochs", "1",
                 "--train-size", "1024", "--inference-batch", "256", "--threads", "1"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("tutorial_train_images_per_s", "lenet_train_images_per_s", "speedup", "inference_images_per_s",
                "latency_ms"):
        assert result[key] > 0, key
    ratio = result["lenet_train_images_per_s"] / result["tutorial_train_images_per_s"]
    assert result["speedup"] == pytest.approx(ratio)
    assert result["latency_ms"] < 1000
    # against the hardware: the seed network's counted FLOPs (tests/test_flops.py), this CPU's detected peak
    assert result["flops_per_image"] == {"forward": 567_974, "training_step": 1_526_428, "other_forward": 9_164,
                                         "other_backward": 9_164}
    assert result["achieved_gflops"] == pytest.approx(result["lenet_train_images_per_s"] * 1_526_428 / 1e9)
    cpu = result["cpu"]
    assert set(cpu["how"]) == {"model", "vector_bits", "fma", "cores", "ghz"} and cpu["cores"] >= 1
    assert result["peak_gflops"] == pytest.approx(cpu["cores"] * cpu["ghz"] * cpu["flops_per_cycle"])
    assert result["fraction_of_peak"] == pytest.approx(result["achieved_gflops"] / result["peak_gflops"])


def test_bench_cpu_overrides_reach_the_peak(capsys):
    code = main(["bench", "--json", "--repeats", "1", "--tutorial-steps", "2", "--epochs", "1", "--train-size",
                 "512", "--inference-batch", "64", "--threads", "1", "--fma-units", "1", "--cpu-ghz", "2"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["cpu"]["fma_units"], result["cpu"]["ghz"]) == (1, 2.0)
    assert result["peak_gflops"] == result["cpu"]["cores"] * 2.0 * (result["cpu"]["fma_bits"] // 32) * 2


def test_text_output_has_one_hardware_line_and_how_each_factor_was_found():
    cpu = Cpu(model="AMD EPYC", vector_bits=512, fma_units=2, fma_bits=512, cores=2, logical_cpus=2, ghz=2.5,
              how={"model": "m", "vector_bits": "v", "fma": "f", "cores": "c", "ghz": "g"})
    result = BenchResult(device="cpu", threads=2, tutorial_threads=2, tutorial_train_images_per_s=8_000.0,
                         lenet_train_images_per_s=40_000.0, speedup=5.0, inference_images_per_s=1.0,
                         latency_ms=0.2, lenet_settings={"batch_size": 1024, "precision": "bf16", "compile": False,
                                                         "kernels": "matmul"},
                         cpu=cpu.to_dict(), peak_gflops=cpu.peak_gflops,
                         flops_per_image={"forward": 567_974, "training_step": 1_526_428, "other_forward": 9_164,
                                          "other_backward": 9_164},
                         achieved_gflops=40_000 * 1_526_428 / 1e9, fraction_of_peak=40_000 * 1_526_428 / 1e9 / 320)
    lines = format_result(result).splitlines()
    assert lines[-3] == ("hardware: 1.53 MFLOP per training image (forward 0.57) x 40,000 images/s = 61.1 GFLOP/s, "
                         "19.1% of 320 GFLOP/s fp32 peak (AMD EPYC, 2 cores; lenet used 2 threads)")
    assert lines[-2] == ("  peak: AMD EPYC: 2 cores x 2.50 GHz x 2 FMA x 512-bit (64 fp32 FLOP/cycle/core; AVX "
                         "width 512) = fp32 peak 320 GFLOP/s")
    assert lines[-1] == "  detected: model from m; vector_bits from v; fma from f; cores from c; ghz from g"


def test_bench_rejects_non_positive_counts(capsys):
    assert main(["bench", "--repeats", "0"]) == 2
    assert "repeats" in capsys.readouterr().err


@pytest.fixture
def nothing_measured(monkeypatch):
    """The tutorial's side fails the test if it starts: every refusal must come before the minutes of measuring
    (and a value that slips through fails fast instead of running the bench)."""
    def measured(*args, **kwargs):
        raise AssertionError("bench started measuring")

    monkeypatch.setattr("lenet.bench.bench_tutorial", measured)


@pytest.mark.parametrize(("argv", "message"), [
    (["--cpu-ghz", "nan"], "--cpu-ghz must be a finite positive number, got nan"),
    (["--cpu-ghz", "inf"], "--cpu-ghz must be a finite positive number, got inf"),
    (["--cpu-ghz=-inf"], "--cpu-ghz must be a finite positive number, got -inf"),
    (["--cpu-ghz", "0"], "--cpu-ghz must be a finite positive number, got 0.0"),
    (["--train-size", "100000"], "--train-size 100000 is more than the 60000 training images; give --train-size "
                                 "60000 or less"),
    (["--epochs", "1000000"], "--epochs 1000000: lenet trains at most 1,000,000 epochs, its warm-up epoch "
                              "included; give --epochs 999999 or less"),
    (["--repeats", "1000000"], "--repeats 1000000: lenet trains at most 1,000,000 epochs, its warm-up epoch "
                               "included; give --repeats 999999 or less"),
])
def test_bench_refuses_a_bad_value_by_its_flag_before_measuring(capsys, nothing_measured, argv, message):
    assert main(["bench", *argv]) == 2
    assert capsys.readouterr().err == f"lenet bench: error: {message}\n"


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("LENET_CPU_GHZ", "nan", "a finite positive number; give --cpu-ghz or LENET_CPU_GHZ a finite positive number"),
    ("LENET_CPU_GHZ", "inf", "a finite positive number; give --cpu-ghz or LENET_CPU_GHZ a finite positive number"),
    ("LENET_FMA_UNITS", "inf", "a positive integer; give --fma-units or LENET_FMA_UNITS a positive integer"),
    ("LENET_FMA_UNITS", "2.5", "a positive integer; give --fma-units or LENET_FMA_UNITS a positive integer"),
])
def test_bench_refuses_a_non_finite_environment_override(capsys, monkeypatch, nothing_measured, variable, value,
                                                          message):
    monkeypatch.setenv(variable, value)
    assert main(["bench", "--repeats", "1"]) == 2
    assert capsys.readouterr().err == f"lenet bench: error: {variable}={value!r}: must be {message}\n"


def test_bench_says_too_large_a_train_size_as_train_does(capsys, nothing_measured):
    assert main(["train", "--train-size", "100000", "--epochs", "1"]) == 2
    train = capsys.readouterr().err.removeprefix("lenet train: error: ")
    assert main(["bench", "--train-size", "100000"]) == 2
    bench = capsys.readouterr().err.removeprefix("lenet bench: error: ")
    assert train == bench.replace("\n", " (0: all of them)\n")  # bench refuses --train-size 0


def test_bench_help_says_what_threads_does_in_bench(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--deterministic" not in out  # train's text; bench has no such flag
    assert ("--threads N CPU threads of both sides, pinned; default: the tutorial runs at torch's default count, "
            "as its script does, and lenet's engine adapts its count during the run by timing its steps at "
            "1..cores threads (the output gives both counts) ") in out
