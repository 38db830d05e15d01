"""The web app behind `lenet serve`: one page to draw a digit on or read a photo with, and a small JSON API.

    GET  /                 the page: draw a digit, or read a photo (static files shipped in this package, no CDN)
    POST /api/predict      multipart `image` file, or JSON {"pixels": [784 values 0-255, ink bright], "model"?}
    POST /api/read         multipart `image` file of a written number (a photo): each digit, its box, the number
    GET  /api/models       every registered network, its test accuracy and whether weights are available
    GET  /healthz          liveness
    GET  /openapi.json     the schema (no /docs: Swagger UI would load its scripts from a CDN)

Safe by default: the CLI binds to loopback; request bodies and image dimensions are capped; inference runs
on a bounded thread pool with a bounded queue (a full queue answers 503 at once instead of piling up
work); models are picked by registered name only, so no request ever names a file. Every error is a
JSON object `{"error": "..."}` that says what was wrong.

The parts: schema.py (requests, answers, all checks on a request body), store.py (the networks),
pool.py (the worker pool), reading.py (the work a worker does), routes.py (the URLs), middleware.py
(Host check, headers, body limit), http_errors.py (errors as JSON), settings.py (the limits).
"""

from __future__ import annotations

import contextlib
import os
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from torch import nn

from .._version import __version__
from .http_errors import install_error_handlers
from .middleware import add_middleware
from .pool import InferencePool
from .routes import router
from .settings import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_PENDING,
    DEFAULT_WORKERS,
    Settings,
)
from .store import ModelStore


def static_dir() -> Path:
    return Path(str(resources.files("lenet.serve") / "static"))


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    # Load the default network before the first request, so that request is not the slow one.
    await app.state.pool.run(app.state.store.preload)
    yield
    app.state.pool.shutdown()


def create_app(model: str | None = None, checkpoint: str | os.PathLike | None = None, *,
               models: dict[str, nn.Module] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               workers: int = DEFAULT_WORKERS,
               max_pending: int = DEFAULT_MAX_PENDING,
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The `lenet serve` app.

    model: registered name served by default (shipped weights); checkpoint: a run folder or weights file
    to serve instead (loaded now, its SHA-256 checked: CheckpointError when it does not match); models:
    ready networks by name (for tests and embedding). allowed_hosts: Host header values to accept (the CLI
    passes the loopback names when bound to loopback, which stops DNS-rebinding pages from talking to the
    server); None accepts any."""
    settings = Settings(workers, max_pending, max_body_bytes, max_image_pixels, tuple(allowed_hosts or ()))
    store = ModelStore.build(model, checkpoint, models)
    app = FastAPI(title="lenet serve", version=__version__,
                  description="LeNet-5 reads a handwritten digit: POST an image or 784 pixels to /api/predict; or "
                              "a number written on a photo: POST it to /api/read.",
                  docs_url=None, redoc_url=None, lifespan=_lifespan)
    app.state.settings, app.state.store = settings, store
    app.state.pool = InferencePool(settings.workers, settings.max_pending)
    app.state.index_html = (static_dir() / "index.html").read_text(encoding="utf-8")
    app.include_router(router)
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    add_middleware(app, settings)
    return app
