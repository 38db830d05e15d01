"""The study: Optuna's record of every trial of a sweep, in a database that processes and machines share.

Local default: an SQLite file in the sweep folder (`study.db`). Why SQLite and not Optuna's journal file:
Optuna detects dead workers (heartbeats, `fail_stale_trials`) only on its RDB storage, and SQLite commits are
atomic under SIGKILL (the kernel drops a dead process's file locks; its rollback journal undoes a half-done
write at the next open). Every transaction here begins IMMEDIATE (it takes the write lock first), so two
processes never deadlock upgrading read locks, and waits are bounded by a 120 s busy timeout instead of
failing with "database is locked". Across machines: any SQLAlchemy URL, e.g. postgresql+psycopg://...

How a trial moves: the sweep enqueues WAITING trials (grid: one per configuration x seed, keyed by
`spec.trial_key`; search: one empty "slot" per trial to sample). A worker claims one by recording its
heartbeat first and then switching it WAITING -> RUNNING (a single-row update that only one process can win),
so a claimed trial always has a heartbeat and a worker killed at any instant is detected. A trial whose
heartbeat stops for `grace` seconds is failed and re-enqueued as WAITING with the same options
(Optuna's retry callback). Every trial carries a `key`; a key counts once: a claimed trial whose key already
has a COMPLETE or another RUNNING trial is pruned as a duplicate (this happens only when two machines
enqueue at the same moment).
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from ..errors import ConfigError
from .spec import SweepSpec, canonical, differences, trial_key

SPEC_ATTR = "lenet_sweep"  # the study's user attribute holding the sweep's identity
ALIVE = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextmanager
def _quiet() -> Iterator[None]:
    """Without Optuna's "experimental feature" warnings (heartbeats have been experimental since 2.8)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the trials whose heartbeat stopped (their retries are enqueued as WAITING)."""
    with _quiet():
        optuna.storages.fail_stale_trials(study)


@dataclass(frozen=True)
class StudyRef:
    """Where a sweep's study lives, and how dead workers are detected (seconds, whole)."""

    url: str
    name: str
    heartbeat: int = 5
    grace: int = 20
    max_retry: int = 3

    def shown_url(self) -> str:
        """The URL without its password, for messages and files."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - an unparsable URL is reported by open_storage
            return self.url


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{(folder / 'study.db').resolve()}"


def _retry_callback(max_retry: int) -> dict[str, Any]:
    try:
        from optuna.storages import RetryHeartbeatStaleTrialCallback
    except ImportError:  # optuna < 4.9
        from optuna.storages import RetryFailedTrialCallback

        return {"failed_trial_callback": RetryFailedTrialCallback(max_retry=max_retry)}
    return {"heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=max_retry)}


# Two processes opening a fresh database at once both create Optuna's tables; the slower one's CREATE TABLE
# fails on the type the faster one just committed ("duplicate key ... pg_type_typname_nsp_index" on PostgreSQL).
# Opening again then finds the tables: machines that start one sweep together must not fail for it.
SCHEMA_RACE_RETRIES = 5
SCHEMA_RACE_WAIT_S = 0.5


def open_storage(ref: StudyRef) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at `ref.url` with heartbeats on; SQLite transactions serialised (see above)."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    sqlite = ref.url.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": 120, "isolation_level": None}} if sqlite else {}
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            with _quiet():
                storage = optuna.storages.RDBStorage(ref.url, engine_kwargs=engine_kwargs, grace_period=ref.grace,
                                                     heartbeat_interval=ref.heartbeat, **_retry_callback(ref.max_retry))
            break
        except (IntegrityError, ProgrammingError) as e:  # another process created the schema meanwhile
            if attempt == SCHEMA_RACE_RETRIES:
                raise ConfigError(f"cannot open the study storage {ref.shown_url()}: {_first_line(e)}") from None
            time.sleep(SCHEMA_RACE_WAIT_S)
        except (ImportError, ValueError, optuna.exceptions.StorageInternalError) as e:
            raise ConfigError(f"cannot open the study storage {ref.shown_url()}: {e}") from None
        except Exception as e:  # sqlalchemy's OperationalError and friends: server down, bad password, ...
            raise ConfigError(f"cannot reach the study storage {ref.shown_url()}: {_first_line(e)}") from None
    if sqlite:
        from sqlalchemy import event

        event.listen(storage.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    return storage


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def open_study(ref: StudyRef, spec: SweepSpec | None = None, sampler: optuna.samplers.BaseSampler | None = None
               ) -> optuna.Study:
    """The study `ref.name`, created with `spec` when it does not exist yet. A study that exists must hold the
    same sweep (the options, lists, seeds and space of `spec`), else ConfigError: a second machine joins a
    sweep only with the same command."""
    storage = open_storage(ref)
    if spec is None:
        try:
            return optuna.load_study(study_name=ref.name, storage=storage, sampler=sampler)
        except KeyError:
            raise ConfigError(f"no study {ref.name!r} in {ref.shown_url()}") from None
    study = optuna.create_study(study_name=ref.name, storage=storage, sampler=sampler, direction="maximize",
                                load_if_exists=True)
    held = study.user_attrs.get(SPEC_ATTR)
    if held is None:
        study.set_user_attr(SPEC_ATTR, spec.to_dict())
    else:
        changed = differences(held_identity(held), spec.identity())
        if changed:
            raise ConfigError(f"study {ref.name!r} in {ref.shown_url()} holds another sweep (it differs in: "
                              f"{', '.join(changed)}): run the same options to join it, or give another --study")
    return study


def held_identity(held: dict[str, Any]) -> dict[str, Any]:
    return SweepSpec.from_dict(held).identity()


def _grid_trial(spec: SweepSpec, options: dict[str, Any]) -> optuna.trial.FrozenTrial:
    """A WAITING trial of the grid; its varying options and seed are also Optuna params (for dashboards)."""
    def shown(value: Any) -> Any:
        return json.dumps(list(value)) if isinstance(value, tuple) else value

    names = [*spec.lists, "seed"]
    choices = {**spec.lists, "seed": spec.seeds}
    return optuna.trial.create_trial(
        state=TrialState.WAITING, params={n: shown(options[n]) for n in names},
        distributions={n: CategoricalDistribution([shown(v) for v in choices[n]]) for n in names},
        user_attrs={"key": trial_key(options), "options": json.loads(canonical(options))})


def enqueue_missing(study: optuna.Study, spec: SweepSpec, after_duplicates: bool = False) -> int:
    """Enqueue every trial of `spec` that the study does not hold as WAITING, RUNNING or COMPLETE (idempotent:
    a second call, or a second machine, adds nothing), so a new start also retries failed trainings. Stale
    trials are failed (and retried) first. `after_duplicates`: only keys lost because two machines pruned each
    other's duplicate at once (what workers check before they stop; a training that failed is not retried
    within the same start, or a deterministic failure would loop)."""
    fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    present = {t.user_attrs.get("key") for t in trials if t.state in ALIVE}
    if after_duplicates:  # missing: the keys whose only trials are pruned duplicates
        present = {t.user_attrs.get("key") for t in trials if t.state != TrialState.PRUNED}
        present |= {t.user_attrs.get("key") for t in trials} - {
            t.user_attrs.get("key") for t in trials if "duplicate_of" in t.user_attrs}
    if spec.search is None:
        wanted = [_grid_trial(spec, options) for options in spec.trials_of_grid()
                  if trial_key(options) not in present]
    else:
        wanted = [optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={"key": f"slot-{i}"})
                  for i in range(spec.trials) if f"slot-{i}" not in present]
    study.add_trials(wanted)
    return len(wanted)


def claim(study: optuna.Study) -> optuna.Trial | None:
    """The next WAITING trial (lowest number first), now RUNNING for this process; None when none waits."""
    storage = study._storage
    for frozen in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        storage.record_heartbeat(frozen._trial_id)  # before RUNNING: a claimed trial always has a heartbeat
        try:
            if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, frozen._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def duplicate_of(study: optuna.Study, trial: optuna.Trial, key: str) -> int | None:
    """The number of another trial with `key` that is COMPLETE or RUNNING (so this one must not run)."""
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if other.number != trial.number and other.user_attrs.get("key") == key:
            return other.number
    return None


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state name."""
    found: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        found[t.state.name] = found.get(t.state.name, 0) + 1
    return found


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat every `heartbeat_interval` seconds while the block runs."""
    storage, trial_id = study._storage, trial._trial_id
    interval = storage.get_heartbeat_interval()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            # a missed beat is retried at the next one; a database gone for good fails the trial at tell
            with suppress(Exception):
                storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
