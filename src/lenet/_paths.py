"""Checks on the files a command reads and the places it writes, made before any work starts.

Reading: `read_regular_file` opens a path only if it is a regular file (a FIFO would block the reader forever,
/dev/zero would grow it until the memory runs out, a folder or socket cannot be read as one) and reads at most
a stated number of bytes; `check_regular_file` is the same check for files a library opens itself.

Writing: `check_output_folder` (a folder the command will create or fill) and `check_output_file` (a file it
will create) refuse, in one line, a path that is a file where a folder is needed or the other way round, that
lies under a file, or whose nearest existing folder does not accept new files (read-only, no permission,
/proc): better at once than after minutes of training.

Every error is the `LenetError` subclass the caller names (ImageError, CheckpointError, DataError; default
ConfigError), so the CLI prints it as one line and exits with code 2.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from .errors import ConfigError, LenetError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def kind_of(mode: int) -> str:
    """What a file of `st_mode` is, in words ("a regular file", "a FIFO (named pipe)", ...)."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def _stat(path: Path, what: str, error: type[LenetError]) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise error(f"{_named(what, path)}: no such file") from None
    except ValueError:  # an embedded NUL byte (only possible from Python, never from a command line)
        raise error(f"{_named(what, repr(str(path)))} is not a valid path") from None
    except OSError as e:
        raise error(f"{_named(what, path)} cannot be read ({e.strerror or e})") from None


def check_regular_file(path: str | os.PathLike, what: str = "", error: type[LenetError] = ConfigError) -> Path:
    """`path` if it is a regular file (or a link to one) that this process may read; else `error` naming what
    it is instead, or why it cannot be read (no permission).

    `what` ("the image", "the weights file") starts the message; without it the path does."""
    path = Path(path)
    mode = _stat(path, what, error).st_mode
    _require_regular(path, mode, what, error)
    os.close(_open(path, what, error))  # permission bits and ACLs, as the kernel applies them to this process
    return path


def _require_regular(path: Path, mode: int, what: str, error: type[LenetError]) -> None:
    if not stat.S_ISREG(mode):
        raise error(f"{_named(what, path)} is {kind_of(mode)}, not a regular file: lenet reads only regular files")


def _open(path: Path, what: str, error: type[LenetError]) -> int:
    """A read-only descriptor of `path`, opened without blocking (a FIFO's open would wait for a writer)."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"{_named(what, path)} cannot be read ({e.strerror or e})") from None


def read_regular_file(path: str | os.PathLike, max_bytes: int, what: str = "",
                      error: type[LenetError] = ConfigError, limit_hint: str = "") -> bytes:
    """The bytes of the regular file `path`, refused (as `error`) before reading when it is anything else or
    holds more than `max_bytes`. The file is opened without blocking and checked again through the open
    descriptor, so a path swapped for a FIFO between the check and the read cannot hang the reader, and the
    read stops after `max_bytes` even if the file grows meanwhile."""
    path = Path(path)
    mode = _stat(path, what, error).st_mode
    _require_regular(path, mode, what, error)
    with os.fdopen(_open(path, what, error), "rb") as f:
        info = os.fstat(f.fileno())
        _require_regular(path, info.st_mode, what, error)
        too_large = f"{_named(what, path)} is over the limit of {max_bytes:,} bytes{limit_hint}"
        if info.st_size > max_bytes:
            raise error(f"{_named(what, path)} is {info.st_size:,} bytes, over the limit of {max_bytes:,} bytes"
                        f"{limit_hint}")
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise error(f"{_named(what, path)} cannot be read ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise error(too_large)
    return data


def check_output_folder(path: str | os.PathLike, flag: str) -> Path:
    """Refuse (ConfigError) a folder to write into that is a file, lies under a file, or cannot be created or
    written; `flag` ("--out") names the option in the message. Nothing is left behind."""
    path = Path(path)
    if _exists(path, flag) and not path.is_dir():
        raise ConfigError(f"{flag} {path} is {_kind(path)}, not a folder: give a folder (it is created if missing)")
    _check_writable(path, flag)
    return path


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """Refuse (ConfigError) a file to write that is a folder or another non-regular file, lies under a file,
    or whose folder cannot be created or written. Nothing is left behind."""
    path = Path(path)
    if _exists(path, flag) and not path.is_file():
        raise ConfigError(f"{flag} {path} is {_kind(path)}: give the name of a file to write")
    _check_writable(path.parent, flag, path)
    return path


def _named(what: str, path: Path | str) -> str:
    return f"{what} {path}" if what else str(path)


def _exists(path: Path, flag: str) -> bool:
    try:
        if os.path.lexists(path) and not path.exists():
            raise ConfigError(f"{flag} {path} is a broken symbolic link (to {os.readlink(path)}): remove it or "
                              "give another path")
        return path.exists()
    except ValueError:
        raise ConfigError(f"{flag} {path!r} is not a valid path") from None
    except OSError as e:  # e.g. a path component that is a file: ENOTDIR, or a name too long
        if e.errno == errno.ENOTDIR:
            return False  # reported below, with the file that is in the way
        raise ConfigError(f"{flag} {path} cannot be used ({e.strerror or e})") from None


def _kind(path: Path) -> str:
    return kind_of(path.stat().st_mode)


def _check_writable(folder: Path, flag: str, target: Path | None = None) -> None:
    """The nearest existing ancestor of `folder` (itself included) must be a folder that accepts a new file:
    tried for real with a temporary file, removed at once (permission bits cannot tell: root ignores them,
    and /proc or a read-only mount refuse anyway)."""
    target = target or folder
    existing = folder.absolute()
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {target} lies under {existing}, which is {_kind(existing)}, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".lenet-write-test-", suffix=".tmp")
    except OSError as e:
        where = "" if existing == folder.absolute() else ", the nearest folder of it that exists"
        raise ConfigError(f"{flag} {target} cannot be written: no file can be made in {existing}{where} "
                          f"({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)
