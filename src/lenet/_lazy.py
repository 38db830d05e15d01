"""Names a package loads on first use (PEP 562), so that importing it stays cheap: `import lenet`,
`lenet.trainer` and `lenet.sweep` load neither torch nor optuna until a name that needs them is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(namespace: dict[str, Any],
               table: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for the package whose globals are `namespace`: each name in `table` is
    imported from its module (absolute, or relative to the package: ".loop") when first used, then kept in
    the package's globals, so later lookups never come here again."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name], package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *table})

    return __getattr__, __dir__
