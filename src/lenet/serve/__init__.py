"""`lenet serve`: draw a digit in the browser and watch LeNet-5 read it, or show it a photo of a written
number; plus a small JSON API.

Needs the `serve` extra (`pip install 'lenet[serve]'`: fastapi, uvicorn, python-multipart); importing
this package without them raises a `LenetError` that says so.
"""

from __future__ import annotations

from ..errors import LenetError

try:
    import fastapi  # noqa: F401
    import python_multipart  # noqa: F401  (python-multipart: FastAPI cannot parse uploads without it)
    import uvicorn  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise LenetError(f"`lenet serve` needs the web server packages ({e.name} is missing): "
                     "pip install 'lenet[serve]'  (fastapi, uvicorn, python-multipart)") from None

from .app import create_app  # noqa: E402
from .settings import (  # noqa: E402
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_PENDING,
    DEFAULT_WORKERS,
)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_IMAGE_PIXELS", "DEFAULT_MAX_PENDING", "DEFAULT_WORKERS",
           "create_app"]
