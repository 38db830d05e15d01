"""Run code in a fresh interpreter and check what it imported: the tests that hold lenet's lazy imports (a
`--help`, the registry, a speedrun's parent must not pay for `import torch`) all need a process of their own,
since this one has torch loaded already."""

from __future__ import annotations

import subprocess
import sys


def assert_runs_without_importing(code: str, modules: tuple[str, ...] = ("torch",), timeout: float = 60) -> str:
    """Run `code` in a fresh `python -c`, then fail unless it exited 0 and left every one of `modules` (a
    top-level name or a dotted submodule) unimported. Returns its stdout."""
    checks = "".join(f"assert {name!r} not in sys.modules, '{name} was imported'\n" for name in modules)
    result = subprocess.run([sys.executable, "-c", f"import sys\n{code}\n{checks}"], capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
