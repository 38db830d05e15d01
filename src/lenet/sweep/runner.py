"""`run_sweep`: prepare the study, start the worker processes, wait for them, write the report.

The sweep folder:
    sweep.json         the sweep (options, lists, seeds, space) and where its study lives
    study.db           the study, when no --storage is given (SQLite; lenet.sweep.study says why)
    runs/NAME/         one run folder per configuration x seed (`lenet train --out`'s files + trial.json)
    logs/NAME.log      what each training printed
    results.{csv,json,png}   the report (`lenet sweep report DIR` rewrites it)

Workers are spawned processes (not forks: torch's thread pools do not survive a fork), each with
threads = cores // workers unless --threads is given, each running trials in-process until the study has
none left. Started again on the same folder, a sweep continues: finished trials stay finished.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import optuna

from .._io import atomic_write_json, read_json_object
from .._paths import check_output_folder
from ..errors import ConfigError, Terminated
from ..trainer.config import THREADS_PER_CORE, usable_cores
from .report import SWEEP_FILE, format_table, write_report
from .spec import SweepSpec, differences
from .study import StudyRef, counts, enqueue_missing, held_identity, open_study, sqlite_url
from .worker import WorkerJob, worker_main

DEFAULT_STUDY = "sweep"


@dataclass(frozen=True)
class SweepOutcome:
    states: dict[str, int]  # trials by state
    missing: int  # trainings of the sweep without a COMPLETE trial
    worker_exits: list[int | None]
    report: dict[str, Any] | None
    seconds: float


def check_workers(workers: int) -> None:
    """At least one worker, and at most as many as `lenet train --threads` may have threads: each worker runs at
    least one thread, and threads beyond the cores only wait for each other."""
    cores = usable_cores()
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if workers > THREADS_PER_CORE * cores:
        raise ConfigError(f"--workers must be at most {THREADS_PER_CORE * cores} ({THREADS_PER_CORE} x the {cores} "
                          f"core{'s' if cores > 1 else ''} this process may use; more trainings at once than that "
                          f"only wait for each other), got {workers}")


def threads_per_worker(workers: int, threads: int | None) -> int:
    """--threads if given, else the cores split evenly between the workers (at least one each)."""
    return threads or max(1, usable_cores() // workers)


def prepare_folder(folder: Path, spec: SweepSpec, ref: StudyRef) -> optuna.Study:
    """Open (or create) the study and write sweep.json; a sweep.json already there must describe the same sweep
    and study. Returns the study. Nothing is written when the study cannot be opened: a folder made here for it
    (the local study.db lives in it) is removed again."""
    path = folder / SWEEP_FILE
    if path.is_file():
        held, identity = _held_sweep(path)
        changed = differences(identity, spec.identity())
        if held.get("study") != ref.name:
            changed.append(f"study ({held.get('study')!r} there, {ref.name!r} now)")
        if changed:
            raise ConfigError(f"{folder} holds another sweep (it differs in: {', '.join(changed)}): give the same "
                              f"options to continue it, or another --out")
    with _removed_on_error(folder):
        opened = open_study(ref, spec)
    atomic_write_json(path, {"study": ref.name, "storage": ref.shown_url(), "local_storage": ref.url.startswith(
        "sqlite"), "spec": spec.to_dict()})
    return opened


@contextmanager
def _removed_on_error(folder: Path) -> Iterator[None]:
    """Make `folder` (and its missing parents) for the block; if the block fails, remove what was made here."""
    first_new = None
    existing = folder.absolute()
    while not os.path.lexists(existing) and existing != existing.parent:
        first_new, existing = existing, existing.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if first_new is not None:
            shutil.rmtree(first_new, ignore_errors=True)
        raise


def _held_sweep(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sweep.json in a sweep folder and the identity of the sweep it describes; a damaged one is refused."""
    remedy = "it was damaged or changed by hand: restore it from a copy, or give another --out"
    held = read_json_object(path, ConfigError, "a lenet sweep record", remedy)
    try:
        return held, held_identity(held["spec"])
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as e:
        problem = f"no {e}" if isinstance(e, KeyError) else str(e)
        raise ConfigError(f"{path} does not describe a sweep ({problem}); {remedy}") from None


def run_sweep(spec: SweepSpec, folder: str | Path, *, storage: str | None = None, study: str | None = None,
              workers: int = 1, threads: int | None = None, heartbeat: int = 5, grace: int = 20,
              stream: TextIO | None = None) -> SweepOutcome:
    """Run (or continue, or join) the sweep `spec`, with run folders under `folder`."""
    stream = stream or sys.stdout
    check_workers(workers)
    if heartbeat < 1 or grace <= heartbeat:
        raise ConfigError(f"the grace period ({grace} s) must exceed the heartbeat interval ({heartbeat} s), "
                          f"which must be at least 1 s")
    folder = check_output_folder(folder, "--out")
    spec.check(threads)
    ref = StudyRef(storage or sqlite_url(folder), study or DEFAULT_STUDY, heartbeat, grace)
    t0 = time.perf_counter()
    opened = prepare_folder(folder, spec, ref)
    added = enqueue_missing(opened, spec)
    each = threads_per_worker(workers, threads)
    print(f"sweep {folder}: {spec.size} training(s) ({spec.size_text() if not spec.search else spec.search}), "
          f"study {ref.name!r} in {ref.shown_url()}; {added} enqueued now, {_states(counts(opened))}; "
          f"{workers} worker(s) x {each} thread(s)", file=stream, flush=True)
    exits = run_workers([WorkerJob(ref, spec.to_dict(), str(folder), each, i) for i in range(workers)], stream)
    states = counts(opened)
    missing = _missing(opened, spec)
    report = None
    try:
        report = write_report(folder)
        print(format_table(report["configurations"]), file=stream)
        print(f"results: {', '.join(report['files'].values())}", file=stream)
    except ConfigError as e:
        print(f"no report: {e}", file=stream)
    return SweepOutcome(states, missing, exits, report, time.perf_counter() - t0)


def _states(found: dict[str, int]) -> str:
    return ", ".join(f"{n} {state.lower()}" for state, n in sorted(found.items())) or "no trials yet"


def _missing(study: Any, spec: SweepSpec) -> int:
    from optuna.trial import TrialState

    done = {t.user_attrs.get("key") for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    if spec.search is None:
        from .spec import trial_key

        return sum(trial_key(options) not in done for options in spec.trials_of_grid())
    return sum(f"slot-{i}" not in done for i in range(spec.trials))


def run_workers(jobs: list[WorkerJob], stream: TextIO) -> list[int | None]:
    """Start one spawned process per job and wait for all; on SIGTERM or Ctrl-C stop them (each tells its trial
    FAIL, so the next start re-runs it) and re-raise. Returns their exit codes (-9: killed by SIGKILL)."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker_main, args=(job,), name=f"lenet-sweep-worker-{job.index}")
                 for job in jobs]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    except (Terminated, KeyboardInterrupt) as e:
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            process.join(timeout=60)
        if isinstance(e, Terminated):
            raise Terminated("; finished trials are kept: run the same command again to continue") from None
        raise
    for process in processes:
        if process.exitcode not in (0, None):
            how = f"signal {-process.exitcode}" if process.exitcode < 0 else f"exit code {process.exitcode}"
            print(f"worker {process.name.rsplit('-', 1)[1]} (pid {process.pid}) stopped with {how}", file=stream)
    return [process.exitcode for process in processes]

