"""`lenet speedrun` (lenet/speedrun.py, lenet/cli/speedrun_cmd.py): parsing a child's output, the summary's
maths and verdict, the CLI's errors, a failing child, and one real run of two tiny children."""

import json
import statistics
import sys

import pytest
from fresh_python import assert_runs_without_importing

from lenet import speedrun
from lenet.cli import main
from lenet.errors import ConfigError, TrainingError
from lenet.recipes import RECIPES
from lenet.speedrun import Plan, Run, SpeedrunResult, format_run, format_summary, make_plan, parse_child_output

# What `lenet train --recipe fast --no-progress` prints (trainer/loop.py), with a thread switch, a validation
# column and the moving-average line that must not be taken for the test accuracy.
CHILD = """\
lenet: training seed on cpu, 3 epochs
Start-up: 2.10 s from process start to the first step (imports 1.85 s)
Epoch 1/3: train loss 0.5012, train acc 88.10%, 17,820 images/s, 1.3 s
threads: 2 -> 1 in epoch 2 at step 51: steps slowed 2.9x (probe: 1 -> 20.0k images/s, 2 -> 9.9k)
Epoch 2/3: train loss 0.3001, train acc 97.95%, val acc 98.40%, 16,100 images/s, 1.25 s
Epoch 3/3: train loss 0.2710, train acc 98.90%, 18,400 images/s, 1.2 s
Test Accuracy: 99.21%
Test Accuracy without the moving average: 99.02%
Wall time: 6.3 s from process start
"""

CPU = {"model": "Test CPU", "cores": 2}


def test_parse_child_output_reads_accuracy_wall_start_up_and_the_sum_of_the_epochs():
    report = parse_child_output(CHILD)
    assert report.accuracy == 99.21
    assert report.wall_s == 6.3
    assert report.training_s == pytest.approx(1.3 + 1.25 + 1.2)
    assert report.epochs == 3
    assert (report.startup_s, report.imports_s) == (2.10, 1.85)


@pytest.mark.parametrize("drop", ["Epoch 2/3", "Test Accuracy: ", "Wall time", "Start-up"])
def test_parse_child_output_refuses_output_with_a_line_missing(drop):
    text = "".join(line for line in CHILD.splitlines(keepends=True) if not line.startswith(drop))
    with pytest.raises(ValueError):
        parse_child_output(text)


def test_progress_lines_are_not_epoch_lines():
    text = CHILD.replace("Epoch 1/3: train loss", "Epoch [1/3], Step [100/235], Loss: 0.3\nEpoch 1/3: train loss")
    assert parse_child_output(text).training_s == pytest.approx(3.75)


def _result(accuracies, walls=None, trainings=None, target=99.0):
    n = len(accuracies)
    walls = walls or [6.0] * n
    trainings = trainings or [4.0] * n
    rows = enumerate(zip(accuracies, walls, trainings, strict=True))
    runs = [Run(seed, a, w, t, w + 0.4, startup_s=1.8 + t - 4.0, imports_s=1.5) for seed, (a, w, t) in rows]
    return SpeedrunResult(Plan("speedrun", list(range(n)), target, {}, CPU), runs)


def test_summary_is_the_mean_and_the_sample_std():
    result = _result([99.1, 99.3, 99.2], walls=[6.0, 6.5, 7.0], trainings=[4.0, 4.2, 4.4])
    assert result.accuracy.mean == pytest.approx(99.2)
    assert result.accuracy.std == pytest.approx(statistics.stdev([99.1, 99.3, 99.2]))
    assert result.accuracy.std == pytest.approx(0.1)  # n - 1: the population std would be 0.0816
    assert result.wall.mean == pytest.approx(6.5) and result.wall.std == pytest.approx(0.5)
    assert result.startup_eval.mean == pytest.approx(2.3) and result.startup_eval.std == pytest.approx(0.3)
    assert result.startup.mean == pytest.approx(2.0) and result.imports.mean == pytest.approx(1.5)
    assert [r.evaluation_s for r in result.runs] == pytest.approx([0.2, 0.3, 0.4])  # wall - start-up - training
    assert result.evaluation.std == pytest.approx(0.1)
    assert result.process.mean == pytest.approx(6.9)
    assert speedrun.stat([5.0]).std is None


def test_counts_when_the_mean_reaches_the_target_even_if_one_seed_is_below():
    counted = _result([98.9, 99.2])  # mean 99.05
    assert counted.counts
    assert format_summary(counted).endswith(": counts (mean >= 99.0 %)")
    missed = _result([98.9, 99.05])  # mean 98.975
    assert not missed.counts
    assert format_summary(missed).endswith(": does not count (mean < 99.0 %)")
    assert _result([99.0, 99.0]).counts  # the target itself counts
    assert not _result([99.5], target=99.6).counts


def test_summary_line():
    result = _result([99.15, 99.21], walls=[6.0, 6.4], trainings=[4.0, 4.2])
    assert format_summary(result) == (
        "speedrun: 99.18 ± 0.04 % over 2 seeds, wall 6.20 ± 0.28 s from process start (start-up 1.9 ± 0.1 s, of "
        "which imports 1.5 ± 0.0 s; training 4.1 ± 0.1 s; evaluation 0.2 ± 0.0 s): counts (mean >= 99.0 %)")
    assert format_run(result.runs[1]) == ("seed 1: 99.21 %, wall 6.4 s (start-up 2.0 s, of which imports 1.5 s; "
                                          "training 4.2 s; evaluation 0.2 s; spawn to exit 6.80 s)")
    one = format_summary(_result([99.3]))
    assert one.startswith("speedrun: 99.30 % over 1 seed, wall 6.00 s") and "±" not in one


def test_option_flags():
    assert speedrun.option_flags({"threads": 1, "deterministic": True, "compile": False, "betas": (0.7, 0.9),
                         "model": None}) == ["--threads", "1", "--deterministic", "--betas", "0.7", "0.9"]


def test_the_speedrun_recipe_is_fast_at_batch_512_with_muon_in_2_passes_over_50000_images():
    assert list(RECIPES)[-1] == "speedrun"
    assert RECIPES["speedrun"] == {**RECIPES["fast"], "batch_size": 512, "optimizer": "muon", "lr": 4e-2,
                                   "momentum": 0.9, "epochs": 2, "train_size": 50000}


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "speedrun", "--val-size", "20000"],
     "--train-size 50000 (recipe speedrun's) is more than the 40000 training images left after --val-size 20000; "
     "give --train-size 40000 or less (0: all of them)"),
    (["--train-size", "70000"],
     "--train-size 70000 is more than the 60000 training images; give --train-size 60000 or less (0: all of them)"),
])
def test_a_training_set_larger_than_the_split_says_where_the_size_came_from(argv, message, capsys):
    assert main(["train", *argv]) == 2
    assert capsys.readouterr().err == f"lenet train: error: {message}\n"


@pytest.mark.parametrize("argv, message", [
    (["--runs", "0"], "--runs must be at least 1, got 0"),
    (["--recipe", "nope"], "unknown recipe 'nope'"),
    (["--first-seed", "-1"], "--first-seed must be an integer >= 0, got -1"),
    (["--target", "0"], "--target must be a percentage in (0, 100]"),
    (["--target", "100.5"], "--target must be a percentage in (0, 100]"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--epochs", "0"], "epochs must be a positive integer"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(["speedrun", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("lenet speedrun: error: ") and message in err


def test_options_the_speedrun_sets_itself_are_refused():
    with pytest.raises(ConfigError, match="sets seed, out itself"):
        make_plan(options={"seed": 3, "out": "runs/x"})


def test_help_imports_no_torch():
    out = assert_runs_without_importing("from lenet.cli import main\ntry:\n    main(['speedrun', '--help'])\n"
                                        "except SystemExit:\n    pass\nimport lenet.speedrun")
    assert "usage: lenet speedrun" in out


def test_a_failing_child_is_an_error_naming_its_seed_with_its_stderr(tmp_path):
    # a data root without MNIST passes the parent's checks (it exists) and fails in the child, after torch loads
    with pytest.raises(TrainingError) as caught:
        speedrun.run_speedrun(runs=2, first_seed=7,
                              options={"data_root": str(tmp_path), "epochs": 1, "train_size": 100})
    message = str(caught.value)
    assert message.startswith("seed 7: ") and "exited with code 2" in message
    assert f"lenet train: error: no MNIST files in {tmp_path}" in message


def test_a_child_without_a_result_is_an_error(monkeypatch):
    plan = make_plan(runs=1, first_seed=3, options={"epochs": 1})
    monkeypatch.setattr(Plan, "command", lambda self, seed: [sys.executable, "-c", "print('Test Accuracy: 99.5%')"])
    with pytest.raises(TrainingError, match=r"^seed 3: .* not understood .*Wall time.*Test Accuracy: 99.5%"):
        speedrun.run_plan(plan)


def test_two_tiny_seeds_end_to_end(capsys):
    """Two real children through the CLI (~3 s each, most of it start-up): rows, JSON and timings agree."""
    argv = ["speedrun", "--runs", "2", "--first-seed", "5", "--train-size", "6000", "--epochs", "1",
            "--threads", "1", "--json"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    rows = result["runs"]
    assert [r["seed"] for r in rows] == [5, 6]
    for r in rows:
        assert 20 < r["accuracy"] <= 100  # a trained network, read from the child's line
        assert r["wall_s"] > r["training_s"] > 0
        assert r["startup_eval_s"] == pytest.approx(r["wall_s"] - r["training_s"])
        # start-up holds the imports, and comes before the training: the three add up to no more than the wall
        assert 0 < r["imports_s"] < r["startup_s"] < r["wall_s"] - r["training_s"]
        assert r["evaluation_s"] == pytest.approx(r["wall_s"] - r["startup_s"] - r["training_s"])
        # the parent's spawn-to-exit holds the child's whole life (its wall time is printed to 0.1 s)
        assert r["process_s"] > r["wall_s"] - 0.1
    assert result["accuracy"]["mean"] == pytest.approx(statistics.mean(r["accuracy"] for r in rows))
    assert result["wall"]["std"] == pytest.approx(statistics.stdev(r["wall_s"] for r in rows))
    assert result["counts"] is False  # one epoch on 6,000 images does not reach 99 %
    assert result["command"].endswith("--recipe speedrun --seed SEED --no-progress --threads 1 --train-size 6000 "
                                      "--epochs 1")
    assert result["cpu"]["model"] and result["cpu"]["cores"] >= 1
    lines = err.splitlines()
    assert lines[0].startswith("speedrun on ") and "seeds 5-6" in lines[0]
    assert [line.split(":")[0] for line in lines[1:]] == ["seed 5", "seed 6"]
