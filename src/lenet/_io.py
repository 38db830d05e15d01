"""Small file helpers shared by every module that writes: nothing is ever left half-written.

`crash_point(label)` marks each step of a checkpoint commit (lenet.runfolder) for the fault-injection tests:
with the environment variable LENET_CRASH_TRACE=FILE every label is appended to FILE, one per line, and with
LENET_CRASH_AT=N the Nth call in the process kills it with SIGKILL (as `kill -9` or a power cut would), so a
test can stop a run before every write, fsync, rename and link in turn.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, durable: bool = False) -> Path:
    """Call `write(tmp_path)`, then rename the temporary file onto `path`.

    The temporary file lives in the destination folder, so the rename is atomic; on any error it is
    removed and `path` keeps its old content (or stays absent). `durable`: fsync the file before the rename
    and the folder after it, so the new content survives a power cut too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_path(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json_object(path: str | os.PathLike, error: type[Exception], kind: str, remedy: str = "") -> dict[str, Any]:
    """The JSON object in `path`. Raises `error` when the file cannot be read, is not valid JSON, or holds JSON
    that is not an object (`kind` says what it should be: "a lenet training config"); `remedy`, what to do,
    ends the message. A missing file raises FileNotFoundError, for callers that say more about it."""
    path = Path(path)
    tail = f"; {remedy}" if remedy else ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON ({e}){tail}") from None
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise error(f"{path} is not {kind} (not a JSON object){tail}")
    return data


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a folder's content to the disk (a folder: the names in it, e.g. after a rename)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: str | os.PathLike, data: bytes, label: str) -> None:
    """Write `data` to a new file `path` and fsync it, with a crash point before each of the two."""
    crash_point(f"write {label}")
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        crash_point(f"fsync {label}")
        os.fsync(f.fileno())


_crash_calls = 0


def crash_point(label: str) -> None:
    """A step of a commit where a crash must leave the run folder consistent (see the module docstring)."""
    global _crash_calls
    trace, at = os.environ.get("LENET_CRASH_TRACE"), os.environ.get("LENET_CRASH_AT")
    if trace is None and at is None:
        return
    _crash_calls += 1
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(f"{label}\n")
    if at and int(at) == _crash_calls:
        os.kill(os.getpid(), signal.SIGKILL)


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
