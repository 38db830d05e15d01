"""Fault injection (issue #17, "Must show"): a run killed before any write, fsync, rename, link or removal of
a checkpoint commit leaves a folder that loads the last committed checkpoint, and `lenet train --resume`
then ends bit-identical to an uninterrupted deterministic run.

The kills come from lenet._io.crash_point: with LENET_CRASH_TRACE=FILE a run lists its commit steps, and
with LENET_CRASH_AT=N it kills itself with SIGKILL at the Nth. The fast subset kills at three chosen steps
and once mid-epoch; the slow test kills at every step of epoch 2's save and of the final save, and resumes
each through `lenet.train(resume=...)`, which `lenet train --resume` calls.
"""

import contextlib
import hashlib
import io
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import lenet
from lenet.errors import CheckpointError, LenetError
from lenet.weights import load_network, read_record

FLAGS = ["--train-size", "2000", "--epochs", "2", "--threads", "1", "--deterministic", "--log-every", "0",
         "--no-progress", "--checkpoint-every", "0"]


def lenet_train(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lenet", "train", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """An uninterrupted run with its steps listed: (SHA-256 of its model.safetensors, the steps in order)."""
    root = tmp_path_factory.mktemp("traced")
    done = lenet_train(*FLAGS, "--out", str(root / "run"), env={"LENET_CRASH_TRACE": str(root / "trace")})
    assert done.returncode == 0, done.stderr
    return sha256(root / "run" / "model.safetensors"), (root / "trace").read_text().splitlines()


def saves(steps: list[str]) -> dict[str, range]:
    """The numbers (from 1, as LENET_CRASH_AT counts) of the steps of epoch 2's save and of the final save."""
    starts = [n for n, step in enumerate(steps, 1) if step.startswith("mkdir ckpt-")]
    assert len(starts) == 3, steps  # epoch 1, epoch 2, final
    return {"epoch 2": range(starts[1], starts[2]), "final": range(starts[2], len(steps) + 1)}


def kill_at(out: Path, n: int) -> None:
    """A run into `out`, killed (SIGKILL) at commit step `n`."""
    killed = lenet_train(*FLAGS, "--out", str(out), env={"LENET_CRASH_AT": str(n)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr


def check_killed_folder(out: Path, traced, save: str, n: int) -> None:
    """The folder a kill at step `n` (of `save`) left loads one whole save: the new one once it was committed."""
    _, steps = traced
    committed = n > next(m for m in saves(steps)[save] if steps[m - 1] == "replace checkpoint")
    record = read_record(out)
    load_network(out)  # its SHA-256 matches its own record: weights and record are from one save
    if save == "epoch 2":
        assert record.epoch == (2 if committed else 1)
    else:  # both the last two saves are of epoch 2; only the final one has been tested
        assert (record.epoch, "test_accuracy" in record.metrics) == (2, committed)


def kill_and_resume(out: Path, traced, save: str, n: int) -> None:
    """Kill a run at step `n` (of `save`); check what the folder holds, then that `lenet train --resume` ends
    bit-identical."""
    kill_at(out, n)
    check_killed_folder(out, traced, save, n)
    resumed = lenet_train("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert sha256(out / "model.safetensors") == traced[0]


def test_the_trace_lists_every_step_of_a_commit(traced):
    _, steps = traced
    epoch2 = [steps[n - 1] for n in saves(steps)["epoch 2"]]
    assert epoch2 == ["mkdir ckpt-000002",
                      *(f"{op} ckpt-000002/{name}" for name in ("model.safetensors", "model.json",
                                                                "resume.safetensors", "metrics.jsonl")
                        for op in ("write", "fsync")),
                      "fsync ckpt-000002/", "symlink .checkpoint.tmp", "replace checkpoint", "fsync run folder",
                      "remove ckpt-000001"]
    final = [steps[n - 1] for n in saves(steps)["final"]]
    assert "link ckpt-000003/resume.safetensors" in final and final[-1] == "remove ckpt-000002"


@pytest.mark.parametrize("save,step", [
    ("epoch 2", "write ckpt-000002/model.json"),  # the new weights written, their record not yet (row 1)
    ("epoch 2", "replace checkpoint"),  # the commit itself
    ("final", "remove ckpt-000002"),  # after the commit, before the old generation is gone
])
def test_a_kill_at_a_step_of_a_save_leaves_a_loadable_resumable_folder(tmp_path, traced, save, step):
    _, steps = traced
    n = next(m for m in saves(steps)[save] if steps[m - 1] == step)
    kill_and_resume(tmp_path / "run", traced, save, n)


def _check_and_resume(out: Path, traced, save: str, n: int) -> str | None:
    """check_killed_folder, then a resume through the API in this process; None if every check held, else
    what failed, naming the step."""
    try:
        check_killed_folder(out, traced, save, n)
        with contextlib.redirect_stdout(io.StringIO()):
            lenet.train(resume=out)
        assert sha256(out / "model.safetensors") == traced[0], "the resumed run's weights differ"
    except (AssertionError, LenetError) as e:
        return f"killed at step {n} ({traced[1][n - 1]!r} of the {save} save): {e!r}"
    return None


@pytest.mark.slow
def test_a_kill_at_every_step_of_two_saves_leaves_a_loadable_resumable_folder(tmp_path, traced):
    # The kills run two processes at a time (each one thread; most of a process's time is the interpreter's
    # and `import torch`'s start-up); the resumes then run here, through `lenet.train(resume=...)`, the code
    # `lenet train --resume` calls (the fast tests above resume through the CLI). On an AMD EPYC Zen 3: 26
    # kill-and-resume pairs took 255 s one at a time through the CLI, 139 s two at a time.
    points = [(save, n) for save, numbers in saves(traced[1]).items() for n in numbers]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda point: kill_at(tmp_path / f"run{point[1]}", point[1]), points))
    failures = [f for save, n in points if (f := _check_and_resume(tmp_path / f"run{n}", traced, save, n))]
    assert points and not failures, "\n".join(failures)


def test_a_kill_mid_epoch_resumes_bit_identical(tmp_path, traced):
    """Row 10: killed in the first epoch, long before it ends, the run continues from its last mid-epoch
    checkpoint (here one after every step) instead of starting over."""
    out = tmp_path / "run"
    flags = [*FLAGS[:-1], "1e-9"]  # --checkpoint-every 1e-9 minutes: after every step
    killed = lenet_train(*flags, "--out", str(out), env={"LENET_CRASH_AT": "40"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with pytest.raises(CheckpointError, match="holds no trained weights yet"):
        load_network(out)  # nothing of a whole epoch yet, but a mid-epoch resume state
    resumed = lenet_train("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(rf"Resuming {re.escape(str(out))} in epoch 1/2 at step [1-9]/32\n", resumed.stdout)
    assert sha256(out / "model.safetensors") == traced[0]


@pytest.mark.slow
def test_a_kill_before_the_first_checkpoint_resumes_from_the_start(tmp_path, traced):
    out = tmp_path / "run"
    killed = lenet_train(*FLAGS, "--out", str(out), env={"LENET_CRASH_AT": "2"})  # config.json written
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = lenet_train("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "no checkpoint was written yet, starting its run from the beginning" in resumed.stdout
    assert sha256(out / "model.safetensors") == traced[0]
