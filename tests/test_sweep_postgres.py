"""`lenet sweep` against a real PostgreSQL server (Debian's package, a throw-away cluster on loopback): two
commands joining one study (3 worker processes, as two machines would), one worker killed with SIGKILL
mid-trial; every training finishes exactly once and the report equals the run folders' records.

PostgreSQL's binaries absent: the test skips, unless LENET_REQUIRE_POSTGRES=1 (CI sets it), where it fails."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_sweep import TINY, assert_report_matches_run_folders, recorded_metrics


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_owner(command: list[str], owner: str | None) -> list[str]:
    # initdb and postgres refuse to run as root: as root, run them as the `postgres` user
    return ["runuser", "-u", owner, "--", *command] if owner else command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """The SQLAlchemy URL of a fresh database: in the server .ci/run started (LENET_TEST_POSTGRES_URL), created
    for the test and dropped afterwards; else in a cluster this fixture starts itself."""
    server = os.environ.get("LENET_TEST_POSTGRES_URL")
    if server:
        yield from _database_in(server)
        return
    yield from _own_cluster()


def _database_in(server_url: str):
    import psycopg

    name = f"lenet_test_{os.getpid()}_{int(time.time())}"
    dsn = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _own_cluster():
    """A PostgreSQL cluster initialised in a temporary folder, listening on 127.0.0.1 only; stopped and removed
    afterwards. Yields the SQLAlchemy URL of its database `lenet`."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        reason = "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql"
        if os.environ.get("LENET_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"LENET_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    owner = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="lenet-pg-"))
    if owner:
        shutil.chown(root, owner)
    data, port = root / "data", _free_port()
    subprocess.run(_as_owner([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                              "--no-sync"], owner), check=True, capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
                              "-w", "start"], owner), check=True, capture_output=True)
    try:
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "lenet"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/lenet"
    finally:
        subprocess.run(_as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], owner),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _study(url: str):
    """The sweep's study, opened as lenet opens it: while the sweeps start, this process too may race them to
    create the fresh database's tables (failed once in a CI rehearsal with Optuna's own opening)."""
    import optuna

    from lenet.sweep.study import StudyRef, open_storage

    return optuna.load_study(study_name="pg", storage=open_storage(StudyRef(url, "pg")))


def _kill_a_worker_mid_trial(url: str, folder: Path, timeout: float = 120) -> int:
    """SIGKILL the worker of a RUNNING trial once its training has started (its run folder has config.json);
    returns the trial's number."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            running = _study(url).get_trials(states=(TrialState.RUNNING,))
        except KeyError:  # no sweep has created the study yet
            running = []
        for trial in running:
            worker = trial.user_attrs.get("worker")
            started = [p for p in folder.glob("runs/*/config.json")
                       if not (p.parent / "trial.json").exists() and f"seed-{trial.params['seed']}" in p.parent.name
                       and f"lr-{trial.params['lr']:.4g}_" in p.parent.name]
            if worker and started:
                os.kill(worker["pid"], signal.SIGKILL)
                return trial.number
        time.sleep(0.05)
    raise AssertionError("no trial started training in time")


def test_three_workers_on_postgres_one_killed_every_trial_finishes_once(postgres_url, tmp_path):
    from optuna.trial import TrialState

    folder = tmp_path / "sweep"  # shared by both commands, as an NFS folder would be by two machines
    command = [sys.executable, "-m", "lenet", "sweep", *TINY, "--train-size", "3000", "--epochs", "2",
               "--lr", "1e-3,3e-3", "--seed", "0-3", "--storage", postgres_url, "--study", "pg",
               "--heartbeat-interval", "1", "--grace-period", "3", "--out", str(folder)]
    first = subprocess.Popen([*command, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    second = subprocess.Popen([*command, "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    killed = _kill_a_worker_mid_trial(postgres_url, folder)
    outputs = [p.communicate(timeout=240) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    assert "stopped with signal 9" in outputs[0][0] + outputs[1][0]

    trials = _study(postgres_url).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8 and len({t.user_attrs["key"] for t in complete}) == 8  # each exactly once
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [killed]
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].user_attrs["key"] == trials[killed].user_attrs["key"]
    assert not [t for t in trials if t.state not in (TrialState.COMPLETE, TrialState.FAIL)]
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 3  # three worker processes took trials

    runs = sorted((folder / "runs").iterdir())
    assert len(runs) == 8
    by_run = {t.user_attrs["lenet"]["run"]: t for t in complete}
    for run in runs:  # the study's value and numbers are the run folder's own
        assert by_run[run.name].value == recorded_metrics(run)["val_accuracy"]
        assert by_run[run.name].user_attrs["lenet"]["test_accuracy"] == recorded_metrics(run)["test_accuracy"]

    for source in ([str(folder)], [postgres_url, "--study", "pg", "--dir", str(folder)]):
        report_dir = tmp_path / f"report{len(source)}"
        done = subprocess.run([sys.executable, "-m", "lenet", "sweep", "report", *source, "--out", str(report_dir),
                               "--json"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert sum(row["n"] for row in report["configurations"]) == 8
        assert_report_matches_run_folders(report, folder)
        assert json.loads((report_dir / "results.json").read_text())["configurations"] == report["configurations"]
