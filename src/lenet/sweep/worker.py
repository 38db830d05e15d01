"""A worker: one process that claims trials from the study and trains them in-process, one after another.

Training runs through lenet's own trainer (`fit`), so a worker pays for `import torch`, the study connection
and MNIST's first load once, not once per trial. Each trial is a normal run folder, `SWEEP/runs/NAME/`
(config.json, metrics.jsonl, model.safetensors + model.json, resume.safetensors), plus `trial.json`, written
last: which trial trained it, where, and how long it took. The training's printed lines go to
`SWEEP/logs/NAME.log`.

A trial whose run folder is already complete (its worker died after training, before telling the study) is
not trained again: its metrics are read back. One left half-trained by a dead worker is resumed from its last
checkpoint (or started afresh when it has none). A per-folder lock (`SWEEP/locks/NAME.lock`) keeps two workers
of one machine from ever writing the same run folder.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import optuna
from optuna.trial import TrialState

from .._io import atomic_write_json
from ..errors import CheckpointError, ConfigError, LenetError, Terminated
from .report import TRIAL_FILE
from .spec import SPEED_ONLY, SweepSpec, label, run_name, trial_key
from .study import StudyRef, claim, counts, duplicate_of, enqueue_missing, fail_stale_trials, heartbeat, open_study

NO_OBJECTIVE = -1.0  # a grid without --val-size: trials are recorded, not ranked (never by test accuracy)


@dataclass(frozen=True)
class WorkerJob:
    """What one worker process needs (picklable: it crosses a spawn)."""

    ref: StudyRef
    spec: dict[str, Any]  # SweepSpec.to_dict()
    folder: str
    threads: int | None
    index: int


def worker_main(job: WorkerJob) -> None:
    """The worker process's entry point: SIGTERM stops it cleanly (its trial is told FAIL and re-enqueued by
    the next start); exit code 0 when the study has nothing left to run."""
    if job.threads:
        os.environ["OMP_NUM_THREADS"] = str(job.threads)  # before torch is imported in this process

    def terminate(signum: int, _frame: Any) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)
    try:
        run_worker(job)
    except (Terminated, KeyboardInterrupt):
        sys.exit(143)
    except LenetError as e:
        print(f"lenet sweep: worker {job.index}: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def sampler_for(spec: SweepSpec) -> optuna.samplers.BaseSampler | None:
    if spec.search == "tpe":
        # constant liar: running trials count as bad guesses, so parallel workers spread out
        return optuna.samplers.TPESampler(constant_liar=True, n_startup_trials=min(10, max(2, spec.trials // 4)))
    if spec.search == "random":
        return optuna.samplers.RandomSampler()
    return None


def run_worker(job: WorkerJob, stream: TextIO | None = None) -> int:
    """Claim and run trials until the study has none waiting or running; returns how many this worker ran."""
    stream = stream or sys.stdout
    spec = SweepSpec.from_dict(job.spec)
    study = open_study(job.ref, sampler=sampler_for(spec))
    done = 0
    while True:
        t0 = time.perf_counter()
        trial = next_trial(study, spec, job.ref.heartbeat)
        if trial is None:
            return done
        line = run_trial(study, trial, spec, job, claim_s=time.perf_counter() - t0)
        print(line, file=stream, flush=True)
        done += 1


def next_trial(study: optuna.Study, spec: SweepSpec, poll: float) -> optuna.Trial | None:
    """A claimed trial, or None when nothing is waiting or running anywhere. While others still run trials
    this waits: one of them may die, and its trial then comes back as WAITING."""
    while True:
        fail_stale_trials(study)
        trial = claim(study)
        if trial is not None:
            return trial
        if counts(study).get("RUNNING"):
            time.sleep(min(1.0, poll))
        elif not enqueue_missing(study, spec, after_duplicates=True):
            return None


def trial_options(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    """The training options of a trial: the grid's (recorded when enqueued), or sampled from the space."""
    if spec.search is None:
        options = dict(trial.user_attrs["options"])
        if isinstance(options.get("betas"), list):
            options["betas"] = tuple(options["betas"])
        return options
    sampled: dict[str, Any] = {}
    for dim in spec.space:
        if dim.kind == "choice":
            sampled[dim.name] = trial.suggest_categorical(dim.name, list(dim.choices))
        elif dim.kind == "int":
            sampled[dim.name] = trial.suggest_int(dim.name, int(dim.low), int(dim.high), log=dim.log)
        else:
            sampled[dim.name] = trial.suggest_float(dim.name, dim.low, dim.high, log=dim.log)
    return {**spec.fixed, "seed": spec.seeds[0], **sampled}


def run_trial(study: optuna.Study, trial: optuna.Trial, spec: SweepSpec, job: WorkerJob, claim_s: float) -> str:
    """Train one claimed trial (or reuse its finished run folder) and tell the study; returns a summary line."""
    t0 = time.perf_counter()
    key = trial.user_attrs.get("key", "")
    try:
        with heartbeat(study, trial):
            # who runs it, for operators (and the fault tests, which kill this process mid-trial)
            trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "index": job.index})
            earlier = duplicate_of(study, trial, key)
            if earlier is not None:
                trial.set_user_attr("duplicate_of", earlier)
                study.tell(trial, state=TrialState.PRUNED)
                return f"trial {trial.number}: same training as trial {earlier}, skipped"
            options = trial_options(trial, spec)
            names = [*spec.varying, "seed"]
            run_dir = Path(job.folder) / "runs" / run_name(options, names)
            with folder_lock(Path(job.folder) / "locks" / f"{run_dir.name}.lock"):
                record = finished(run_dir) or train(run_dir, options, spec, trial, job, claim_s)
            info = {"run": run_dir.name, "host": socket.gethostname(), "worker": job.index,
                    **{k: record[k] for k in ("cell", "cell_key", "seed", "options", "train_s", "epochs_s")},
                    "val_accuracy": record.get("val_accuracy"), "test_accuracy": record["test_accuracy"],
                    "wall_s": record.get("wall_s"), "claim_s": claim_s, "reused": record["trial"] != trial.number}
            trial.set_user_attr("lenet", info)
        t1 = time.perf_counter()
        value = info["val_accuracy"] if info["val_accuracy"] is not None else NO_OBJECTIVE
        study.tell(trial, value)
        trial_tell_s = time.perf_counter() - t1
        _note_tell(run_dir, trial.number, trial_tell_s)
    except (Terminated, KeyboardInterrupt):
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)  # the next start runs it again
        raise
    except optuna.exceptions.UpdateFinishedTrialError:
        # this process stalled past the grace period and the study re-queued the trial: the retry will find
        # the run folder finished (or resume it) instead of training it again
        return f"trial {trial.number}: given up on by the study (no heartbeat for {job.ref.grace} s); re-queued"
    except Exception as e:  # noqa: BLE001 - one bad trial must not stop the sweep; the error is recorded
        trial.set_user_attr("error", f"{type(e).__name__}: {e}")
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        detail = str(e) if isinstance(e, LenetError) else traceback.format_exc(limit=3)
        return f"trial {trial.number}: FAILED: {detail}"
    val = f"val {info['val_accuracy']:.2f} %, " if info["val_accuracy"] is not None else ""
    took = "already trained, reused" if info["reused"] else f"{time.perf_counter() - t0:.1f} s"
    return (f"trial {trial.number} [worker {job.index}]: {label(options, names)}: {val}"
            f"test {info['test_accuracy']:.2f} % ({took})")


@contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (waiting for it): one writer per run folder on this machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def finished(run_dir: Path) -> dict[str, Any] | None:
    """The trial record of a completely trained run folder (trial.json is written last), else None."""
    from ..weights import read_record

    path = run_dir / TRIAL_FILE
    if not path.is_file():
        return None
    try:
        metrics = read_record(run_dir).metrics
        record = json.loads(path.read_text())
    except (LenetError, ValueError, OSError):
        return None
    if "test_accuracy" not in metrics:
        return None
    return {**record, "val_accuracy": metrics.get("val_accuracy"), "test_accuracy": metrics["test_accuracy"]}


def cell_label(options: dict[str, Any], spec: SweepSpec) -> str:
    """The configuration's name in reports: its varying options; with only seeds varying, the options given."""
    given = [name for name in spec.fixed if name not in SPEED_ONLY]
    return label(options, spec.varying) or label(options, given) or "defaults"


def train_command(options: dict[str, Any], run_dir: Path) -> str:
    """The `lenet train` command that makes the same run folder (recorded in model.json)."""
    words = ["lenet", "train"]
    for name, value in options.items():
        if value is None or value is False or name == "out":
            continue
        words.append(f"--{name.replace('_', '-')}")
        if isinstance(value, tuple):
            words.extend(str(v) for v in value)
        elif value is not True:
            words.append(str(value))
    return shlex.join([*words, "--out", str(run_dir)])


def train(run_dir: Path, options: dict[str, Any], spec: SweepSpec, trial: optuna.Trial, job: WorkerJob,
          claim_s: float) -> dict[str, Any]:
    """Train the trial into `run_dir` (resuming a run a dead worker left there), then write trial.json."""
    from ..trainer import fit, make_config, resume_config

    threads = {"threads": job.threads} if job.threads else {}
    log = Path(job.folder) / "logs" / f"{run_dir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a") as stream:
        resumed = False
        if (run_dir / "resume.safetensors").exists():
            try:
                cfg = dataclasses.replace(resume_config(run_dir), **threads)
                result = fit(cfg, resume=run_dir, stream=stream, progress_bar=False,
                             command=train_command(options, run_dir))
                resumed = True
            except (CheckpointError, ConfigError) as e:
                print(f"cannot resume {run_dir} ({e}); training it afresh", file=stream)
        if not resumed:
            shutil.rmtree(run_dir, ignore_errors=True)
            cfg = make_config(**{**options, **threads, "out": str(run_dir)})
            result = fit(cfg, stream=stream, progress_bar=False, command=train_command(options, run_dir))
    train_s = time.perf_counter() - t0
    cell = {k: v for k, v in options.items() if k != "seed"}
    record = {"trial": trial.number, "study": job.ref.name, "storage": job.ref.shown_url(), "key": trial_key(options),
              "cell": cell_label(options, spec), "cell_key": trial_key(cell), "seed": options["seed"],
              "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
              "host": socket.gethostname(), "pid": os.getpid(), "worker": job.index,
              "threads": result.config.threads, "resumed": resumed, "claim_s": claim_s, "train_s": train_s,
              "epochs_s": sum(m["seconds"] for m in result.history), "wall_s": train_s}
    atomic_write_json(run_dir / TRIAL_FILE, record)
    metrics = result.history[-1] if result.history else {}
    return {**record, "val_accuracy": metrics.get("val_accuracy"), "test_accuracy": result.test.accuracy}


def _note_tell(run_dir: Path, number: int, tell_s: float) -> None:
    """Add the study round trip of telling the result to trial.json (for the overhead benchmark)."""
    path = run_dir / TRIAL_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if record.get("trial") == number and "tell_s" not in record:
        atomic_write_json(path, {**record, "tell_s": tell_s})
