"""`lenet bench`: the keys and sanity of its JSON, with tiny repetition counts (no timing asserted)."""

import json

import pytest

from lenet.cli import main


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


def test_bench_rejects_non_positive_counts(capsys):
    assert main(["bench", "--repeats", "0"]) == 2
    assert "repeats" in capsys.readouterr().err
