"""A run folder (`lenet train --out DIR`) belongs to one run, and every checkpoint in it is committed in one
atomic step.

    DIR/.lock                  flock'ed for the whole train / --resume; holds "PID\\ncommand\\n" of the writer
    DIR/config.json            the run's config, written at the start
    DIR/checkpoint -> ckpt-000003      THE commit point (a relative symlink)
    DIR/ckpt-000003/           model.safetensors, model.json, resume.safetensors, metrics.jsonl
    DIR/model.safetensors -> checkpoint/model.safetensors      (and the other three: the old paths work)

A commit writes a fresh generation folder (every file fsynced, then the folder), points a temporary link at
it and renames that link onto `checkpoint` (`os.replace`: atomic), fsyncs DIR, and only then makes the
stable links and removes older generations. A kill at any instruction leaves `checkpoint` on the old
generation or the new one, each complete; what a kill leaves behind (a half-written generation, temporary
files and links) is removed when the next run opens the folder. Every step calls `lenet._io.crash_point`,
so tests can kill a run before each one.

`open_run` takes the lock, refuses a folder that holds another run (unless --resume or --overwrite), cleans
up, and yields the `RunFolder` the trainer commits through. Readers resolve `checkpoint` once
(lenet.checkpoint.current_generation).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write, crash_point, fsync_path, read_json_object, write_durable
from ..checkpoint import (
    CURRENT_LINK,
    GENERATION_PREFIX,
    RUN_FILES,
    SIDECAR_NAME,
    current_generation,
)
from ..errors import CheckpointError, ConfigError
from ..shipped import MANIFEST_NAME as COMMITTEE_MANIFEST_NAME
from .config import TrainConfig, config_from_dict

LOCK_NAME, CONFIG_NAME = ".lock", "config.json"
_GENERATION = re.compile(re.escape(GENERATION_PREFIX) + r"(\d{6,})")
# Config fields that do not say which run it is: how long (epochs: --resume may raise them), where, and how the
# machine runs it (a sweep worker resumes another's run with its own thread count).
_NOT_IDENTITY = ("epochs", "out", "checkpoint_every", "threads", "device", "log_every", "compile", "kernels")


# Fields added to TrainConfig after resume states began to carry this hash, with the value every earlier run
# had: at that value they are left out of the hash, so a run started by an earlier lenet still resumes.
_ADDED_LATER = {"ema": 0.0, "val_seed": None, "digit_width": None}


def config_identity(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a run's config (TrainConfig.to_dict()), less the fields a resumed
    run may change: equal for the config.json, model.json and resume.safetensors of one run."""
    kept = {k: v for k, v in config.items()
            if k not in _NOT_IDENTITY and not (k in _ADDED_LATER and v == _ADDED_LATER[k])}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --- the folder's layout -------------------------------------------------------------------------------------

def generation_number(name: str) -> int | None:
    match = _GENERATION.fullmatch(name)
    return int(match.group(1)) if match else None


def holds_run(folder: Path) -> bool:
    """True when `folder` holds any file of a lenet run (config.json, a checkpoint, or the flat files)."""
    names = (CONFIG_NAME, CURRENT_LINK, *RUN_FILES)
    return any(os.path.lexists(folder / name) for name in names) or any(
        generation_number(p.name) is not None for p in folder.iterdir())


def _swap_link(folder: Path, name: str, target: str) -> None:
    """Point `folder/name` at `target` in one step: a temporary link renamed onto it."""
    tmp = folder / f".{name}.tmp"
    crash_point(f"symlink .{name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    crash_point(f"replace {name}")
    os.replace(tmp, folder / name)


def make_links(folder: Path, generation: Path) -> None:
    """The stable links DIR/NAME -> checkpoint/NAME for the files `generation` holds (idempotent; flat files
    of an older lenet are replaced by links once a generation holds their successors)."""
    for name in RUN_FILES:
        target = f"{CURRENT_LINK}/{name}"
        if (generation / name).exists() and not (os.path.islink(folder / name)
                                                 and os.readlink(folder / name) == target):
            _swap_link(folder, name, target)


def remove_stale(folder: Path, keep: Path | None) -> None:
    """Remove generations other than `keep` and temporaries (`.NAME.tmp`, `.NAME.XXXX.tmp`) that a kill left."""
    for path in sorted(folder.iterdir()):
        if generation_number(path.name) is not None and path != keep and not path.is_symlink():
            crash_point(f"remove {path.name}")
            shutil.rmtree(path)
        elif path.name.startswith(".") and path.name.endswith(".tmp"):
            crash_point(f"remove {path.name}")
            path.unlink() if not path.is_dir() or path.is_symlink() else shutil.rmtree(path)


def commit(folder: Path, files: Mapping[str, bytes], keep: Iterable[str] = (),
           on_committed: Callable[[], None] | None = None) -> Path:
    """Commit a new generation holding `files` (name -> bytes) and hard links of the current generation's
    files named in `keep` (or of the flat files an older lenet wrote); then make the stable links and remove
    older generations. `on_committed` runs as soon as the generation is the current one, before the tidying
    after it: a SIGTERM during that tidying must still report the checkpoint. Returns the generation."""
    previous = current_generation(folder) or folder
    numbers = [n for n in map(generation_number, os.listdir(folder)) if n is not None]
    generation = folder / f"{GENERATION_PREFIX}{max(numbers, default=0) + 1:06d}"
    crash_point(f"mkdir {generation.name}")
    generation.mkdir()
    for name, data in files.items():
        write_durable(generation / name, data, f"{generation.name}/{name}")
    for name in keep:
        if (previous / name).is_file() and not (previous / name).is_symlink():
            crash_point(f"link {generation.name}/{name}")
            os.link(previous / name, generation / name)
    crash_point(f"fsync {generation.name}/")
    fsync_path(generation)
    _swap_link(folder, CURRENT_LINK, generation.name)  # the commit
    if on_committed is not None:
        on_committed()
    crash_point("fsync run folder")
    fsync_path(folder)
    make_links(folder, generation)
    remove_stale(folder, generation)
    return generation


def remove_run(folder: Path) -> None:
    """Delete the files of the run in `folder` (--overwrite): lenet's own files only, the lock kept."""
    for name in (CONFIG_NAME, CURRENT_LINK, *RUN_FILES):
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()
    remove_stale(folder, None)


def write_config(folder: Path, cfg: TrainConfig) -> None:
    text = json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n"
    crash_point(f"write {CONFIG_NAME}")
    atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), durable=True)


# --- one writer ----------------------------------------------------------------------------------------------

def _open_lock_file(folder: Path) -> int:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise CheckpointError(f"cannot write the run folder {folder}: {e.strerror or e} (--out must be a folder "
                              "you can write)") from None


@contextlib.contextmanager
def locked(folder: Path, command: str | None) -> Iterator[None]:
    """Hold `folder`'s lock for the block; another holder makes this a CheckpointError naming its PID."""
    created = not folder.exists()
    fd = _open_lock_file(folder)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").split("\n")[0].strip() or "unknown"
            raise CheckpointError(f"{folder} is being written by another lenet process (PID {holder}): wait for "
                                  "it or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{command or ''}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            if created and os.listdir(folder) == [LOCK_NAME]:  # the run wrote nothing: leave no trace
                os.unlink(folder / LOCK_NAME)
                os.rmdir(folder)
    finally:
        os.close(fd)


# --- the run --------------------------------------------------------------------------------------------------

def describe(folder: Path) -> str:
    """A few words about the run in `folder`, for a refusal ("model seed, seed 0, lr 0.001, 10 epochs")."""
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        return f"model {config['model']}, seed {config['seed']}, lr {config['lr']}, {config['epochs']} epochs"
    except (OSError, ValueError, KeyError, TypeError):
        return "its config.json is missing or unreadable"


def prepare(folder: Path, resume: Path | None, overwrite: bool) -> None:
    """Refuse a folder holding another run (without --resume / --overwrite), or clear it; then clean up."""
    if overwrite and resume is not None:
        raise ConfigError("--overwrite starts a new run in the folder and --resume continues the one there: "
                          "give one of them")
    continuing = resume is not None and resume.exists() and os.path.samefile(resume, folder)
    if not continuing and holds_run(folder):
        if not overwrite:
            raise CheckpointError(f"{folder} already holds a run ({describe(folder)}): continue it with --resume "
                                  f"{folder}, or replace it with --overwrite")
        remove_run(folder)
    generation = current_generation(folder)
    remove_stale(folder, generation)
    if generation is not None:
        make_links(folder, generation)


def check_agreement(folder: Path, cfg: TrainConfig, progress: Mapping[str, Any]) -> None:
    """Refuse a resume whose config.json, model.json and resume.safetensors are not from one run."""
    identity = config_identity(cfg.to_dict())
    problems = []
    if progress.get("config_sha256") not in (None, identity):
        problems.append("resume.safetensors was written by a run with another config")
    generation = current_generation(folder)
    sidecar = (generation or folder) / SIDECAR_NAME
    record = (read_json_object(sidecar, CheckpointError, "a lenet weights record", "restore the run folder from a copy")
              if sidecar.is_file() else None)
    if record and record.get("config"):
        try:
            recorded = config_from_dict(record["config"], str(sidecar)).to_dict()
        except ConfigError:
            recorded = None
        if recorded is None or config_identity(recorded) != identity:
            problems.append("model.json records another config")
        if generation is not None and record.get("epoch") != progress.get("epoch"):
            problems.append(f"model.json is of epoch {record.get('epoch')}, resume.safetensors of epoch "
                            f"{progress.get('epoch')}")
    if problems:
        raise CheckpointError(f"{folder}: config.json, model.json and resume.safetensors are not from one run "
                              f"({'; '.join(problems)}): the folder was reused or changed by hand; start a new "
                              "run elsewhere, or here with --overwrite")


@dataclass
class RunFolder:
    """Where a run commits its checkpoints (`path` None: a run without --out, which saves nothing) and what
    the last committed one holds (`committed`, e.g. "epoch 2" or "epoch 3, step 120/938")."""

    path: Path | None
    every_seconds: float = 0.0  # between mid-epoch checkpoints; 0: epoch ends only
    committed: str | None = None
    next_due: float = field(default=float("inf"))

    def __post_init__(self) -> None:
        self.restart_clock()

    def restart_clock(self) -> None:
        due = self.path is not None and self.every_seconds > 0
        self.next_due = time.monotonic() + self.every_seconds if due else float("inf")

    def due(self) -> bool:
        """True when a mid-epoch checkpoint is due (one clock read: no device sync)."""
        return time.monotonic() >= self.next_due

    def commit(self, files: Mapping[str, bytes], keep: Iterable[str], what: str) -> None:
        assert self.path is not None

        def committed() -> None:
            self.committed = what

        commit(self.path, files, keep, on_committed=committed)
        self.restart_clock()

    def kept(self) -> str:
        """Where the last good checkpoint is, for an error message."""
        if self.path is None:
            return "nothing was saved (no --out)"
        if self.committed is None:
            return f"no checkpoint was written to {self.path} yet"
        return f"the last good checkpoint ({self.committed}) is kept in {self.path}"

    def terminated_detail(self) -> str:
        if self.path is None:
            return "; nothing was saved (no --out)"
        if self.committed is None:
            return f"; no checkpoint was written to {self.path} yet"
        return (f"; the last checkpoint in {self.path} ({self.committed}) is complete: continue with --resume "
                f"{self.path}")


@contextlib.contextmanager
def open_run(cfg: TrainConfig, resume: str | os.PathLike | None, overwrite: bool,
             command: str | None) -> Iterator[RunFolder]:
    """The run folder of `cfg` (cfg.out), locked, checked and cleaned for this run, for the block."""
    if not cfg.out:
        if overwrite:
            raise ConfigError("--overwrite replaces the run in the --out folder: give --out")
        yield RunFolder(None)
        return
    folder = Path(cfg.out)
    if (folder / COMMITTEE_MANIFEST_NAME).exists():  # before the lock file, which would be written into it
        raise CheckpointError(f"{folder} holds a committee ({COMMITTEE_MANIFEST_NAME}); lenet will not train "
                              "into it, even with --overwrite: give another --out")
    with locked(folder, command):
        prepare(folder, Path(resume) if resume is not None else None, overwrite)
        yield RunFolder(folder, cfg.checkpoint_every * 60)
