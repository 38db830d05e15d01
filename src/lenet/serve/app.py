"""The web app behind `lenet serve`: one page to draw on, and a small JSON API.

    GET  /                 the drawing page (static files shipped in this package, no CDN)
    POST /api/predict      multipart `image` file, or JSON {"pixels": [784 values 0-255, ink bright], "model"?}
    GET  /api/models       every registered network, its test accuracy and whether weights are available
    GET  /healthz          liveness
    GET  /openapi.json     the schema (no /docs: Swagger UI would load its scripts from a CDN)

Safe by default: the CLI binds to loopback; request bodies and image dimensions are capped; inference runs
on a bounded thread pool with a bounded queue (a full queue answers 503 at once instead of piling up
work); models are picked by registered name only, so no request ever names a file. Every error is a
JSON object `{"error": "..."}` that says what was wrong.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from torch import nn

from ..errors import ConfigError, LenetError

log = logging.getLogger("lenet.serve")

SIDE = 28
PIXELS = SIDE * SIDE
# A drawing from the page is a ~5 KB PNG and a phone photo a few MB; 8 MiB leaves room for both.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
# Checked from the image header before decoding, so a tiny "decompression bomb" PNG costs nothing.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
# Requests admitted at once (running + waiting for a worker); more get 503 instead of an ever-growing queue.
DEFAULT_MAX_PENDING = 64
# Beyond the limit, an oversized upload is still read (and dropped) up to this many bytes, so that the
# client gets to read the 413 instead of a reset connection; past it the connection is simply closed.
_DRAIN_FACTOR = 8

SECURITY_HEADERS = [
    # The page needs nothing outside this server; canvases read images from data: and blob: URLs.
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
     b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


# ---------------------------------------------------------------------------------------------------------------
# API schema (also what /openapi.json describes)


class PixelsRequest(BaseModel):
    pixels: list[float] = Field(..., min_length=PIXELS, max_length=PIXELS,
                                description="784 grey values 0-255, row by row, ink bright on a dark background "
                                            "(MNIST polarity); fed to the network as they are")
    model: str | None = Field(None, description="a name from GET /api/models; default: the server's model")


class FeatureMap(BaseModel):
    layer: str
    channels: int
    height: int
    width: int
    data: str = Field(..., description="base64 of channels*height*width bytes, each map scaled to 0-255 "
                                       "with the layer's min and max")


class Prediction(BaseModel):
    prediction: int = Field(..., description="the most likely digit")
    probabilities: list[float] = Field(..., description="10 probabilities, for the digits 0-9")
    model: str
    input: list[int] | None = Field(None, description="with ?details=true: the 784 pixels the network saw")
    feature_maps: list[FeatureMap] | None = Field(None, description="with ?details=true: the first layers' maps")


class ModelEntry(BaseModel):
    name: str
    description: str
    test_accuracy: float | None = Field(None, description="percent on the MNIST test set")
    available: bool = Field(..., description="whether weights are there to serve it")
    source: str = Field(..., description="pretrained, checkpoint, or none")


class ModelsResponse(BaseModel):
    default: str
    models: list[ModelEntry]


class ErrorBody(BaseModel):
    error: str


_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 404, 409, 413, 415, 422, 503)}

_PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["image"],
            "properties": {"image": {"type": "string", "format": "binary",
                                     "description": "PNG, JPEG, ... of one digit; preprocessed like `lenet predict`"},
                           "model": {"type": "string"}}}},
        "application/json": {"schema": PixelsRequest.model_json_schema()},
    },
}


class ApiError(HTTPException):
    """An HTTP error whose detail is the one-line message the client sees as {"error": ...}."""


# ---------------------------------------------------------------------------------------------------------------
# Models


@dataclass
class _Entry:
    name: str
    description: str
    test_accuracy: float | None
    source: str  # "pretrained", "checkpoint" or "none"
    loader: Callable[[], nn.Module] | None
    model: nn.Module | None = None


class ModelStore:
    """The networks a server offers, by registered name. Pretrained weights load on first use."""

    def __init__(self, model: str | None = None, checkpoint: str | os.PathLike | None = None,
                 models: dict[str, nn.Module] | None = None) -> None:
        from ..models import list_models, model_info

        pretrained = _pretrained_table()
        self._entries: dict[str, _Entry] = {}
        for name in list_models():
            row = pretrained.get(name)
            self._entries[name] = _Entry(
                name, model_info(name).description, _accuracy(row),
                "pretrained" if row is not None else "none",
                (lambda n=name: _load_pretrained(n)) if row is not None else None)
        default = model
        if checkpoint is not None:
            net = _load_checkpoint(checkpoint)
            name = net.model_name
            entry = self._entries.get(name) or _Entry(name, name, None, "none", None)
            entry.model, entry.source, entry.loader = net, "checkpoint", None
            entry.test_accuracy = _checkpoint_accuracy(checkpoint)
            self._entries[name] = entry
            if model is not None and model != name:
                raise ConfigError(f"--model {model} does not match the checkpoint, which holds {name!r}")
            default = name
        for name, net in (models or {}).items():
            entry = self._entries.get(name) or _Entry(name, name, None, "none", None)
            entry.model, entry.loader = net.eval(), None
            entry.source = "checkpoint" if entry.source == "none" else entry.source
            self._entries[name] = entry
        if default is None:
            default = "seed" if self._entries.get("seed") and self.available("seed") else next(
                (n for n in self._entries if self.available(n)), None)
        if default is None:
            raise ConfigError("no network to serve: no pretrained weights found; train one with "
                              "`lenet train --out runs/seed` and run `lenet serve --checkpoint runs/seed`")
        if default not in self._entries:
            raise ConfigError(f"unknown model {default!r}; available: {', '.join(self._entries)}")
        if not self.available(default):
            raise ConfigError(f"no pretrained weights for {default!r}; give a trained one with --checkpoint DIR")
        self.default = default
        self._lock = threading.Lock()

    def available(self, name: str) -> bool:
        entry = self._entries[name]
        return entry.model is not None or entry.loader is not None

    def describe(self) -> dict[str, Any]:
        return {"default": self.default, "models": [
            {"name": e.name, "description": e.description, "test_accuracy": e.test_accuracy,
             "available": self.available(e.name), "source": e.source} for e in self._entries.values()]}

    def check(self, name: str | None) -> str:
        """The name to use for a request, or an ApiError saying why it cannot be served."""
        if name is None:
            return self.default
        if not isinstance(name, str) or name not in self._entries:
            shown = name if isinstance(name, str) else type(name).__name__
            raise ApiError(404, f"unknown model {shown!r}; available: {', '.join(self._entries)}")
        if not self.available(name):
            raise ApiError(409, f"model {name!r} has no weights on this server (no pretrained weights shipped); "
                                f"serve a trained one with `lenet serve --checkpoint DIR`")
        return name

    def get(self, name: str) -> nn.Module:
        entry = self._entries[name]
        if entry.model is None:
            # One loader at a time: two first requests must not both read the weights.
            with self._lock:
                if entry.model is None:
                    try:
                        entry.model = entry.loader().eval()
                    except LenetError as e:  # e.g. a damaged weights file: the server's fault, not the request's
                        raise ApiError(503, f"model {name!r} cannot be loaded: {e}") from None
        return entry.model

    def preload(self) -> None:
        """Load the default network now; a LenetError (missing or damaged weights) propagates as it is."""
        entry = self._entries[self.default]
        with self._lock:
            if entry.model is None:
                entry.model = entry.loader().eval()


def _pretrained_table() -> dict[str, dict]:
    try:
        from ..pretrained import list_pretrained
    except ImportError:  # a build without shipped weights: only --checkpoint models can be served
        return {}
    return {row["name"]: row for row in list_pretrained()}


def _accuracy(row: dict | None) -> float | None:
    if not row:
        return None
    for key in ("test_accuracy", "accuracy"):
        if isinstance(row.get(key), (int, float)):
            return float(row[key])
    return None


def _load_pretrained(name: str) -> nn.Module:
    # Straight to the shipped weights: `lenet.load(name)` would prefer a folder that happens to be called
    # `name` in the working directory.
    from ..pretrained import load_pretrained

    return load_pretrained(name, device="cpu")


def _load_checkpoint(path: str | os.PathLike) -> nn.Module:
    from ..checkpoint import load_checkpoint

    return load_checkpoint(path, device="cpu")


def _checkpoint_accuracy(path: str | os.PathLike) -> float | None:
    from ..checkpoint import read_info

    try:
        value = read_info(path).get("metrics", {}).get("test_accuracy")
    except (LenetError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


# ---------------------------------------------------------------------------------------------------------------
# Inference (runs on the worker pool, never on the event loop)


def _predict(model: nn.Module, images: torch.Tensor, name: str, details: bool) -> dict[str, Any]:
    """`images`: uint8 (1, 28, 28), ink bright."""
    from ..predict import predict_images

    probs = torch.as_tensor(predict_images(model, images)).float()[0]
    out: dict[str, Any] = {"prediction": int(probs.argmax()),
                           "probabilities": [round(float(p), 6) for p in probs], "model": name}
    if details:
        out["input"] = images[0].reshape(-1).tolist()
        out["feature_maps"] = first_feature_maps(model, images)
    return out


def first_feature_maps(model: nn.Module, images: torch.Tensor, layers: int = 2) -> list[dict[str, Any]]:
    """The maps of the first `layers` convolution stages, as bytes for the page to paint.

    One entry per stage: the first map-shaped output of each new channel count (seed: conv1 6x24x24 and
    conv2 16x8x8; the paper's network: c1 and c3), since the pooling layer after a convolution shows the
    same maps at half the size."""
    from ..train import to_input
    from ..viz import layer_outputs  # the model's `feature_maps`, or every layer's output caught by hooks

    x = to_input(images)
    maps = list(layer_outputs(model, x).items())
    # Starting from the input's channel count skips an "input" entry (the paper's net shows its 32x32 padding).
    chosen, widths = [], {x.shape[1]}
    for layer, value in maps:
        if value.dim() != 4 or value.shape[1] in widths:
            continue
        widths.add(value.shape[1])
        a = value[0].float()
        lo, hi = float(a.min()), float(a.max())
        scaled = ((a - lo) / (hi - lo) * 255) if hi > lo else torch.zeros_like(a)
        data = scaled.round().clamp(0, 255).to(torch.uint8).contiguous().numpy().tobytes()
        chosen.append({"layer": layer, "channels": a.shape[0], "height": a.shape[1], "width": a.shape[2],
                       "data": base64.b64encode(data).decode("ascii")})
        if len(chosen) == layers:
            break
    return chosen


def _image_to_pixels(data: bytes, max_pixels: int) -> torch.Tensor:
    """The same decoding and MNIST-style preprocessing as `lenet predict`."""
    from ..predict import open_image, preprocess

    return torch.as_tensor(preprocess(open_image(data, max_pixels=max_pixels))).to(torch.uint8).reshape(1, SIDE, SIDE)


def _parse_json(body: bytes) -> tuple[torch.Tensor, str | None]:
    try:
        payload = json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "malformed JSON: the body is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ApiError(400, f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(payload, dict):
        raise ApiError(422, f'JSON body must be an object like {{"pixels": [784 values]}}, '
                            f"not {type(payload).__name__}")
    unknown = sorted(set(payload) - {"pixels", "model"})
    if unknown:
        raise ApiError(422, f"unknown JSON field(s): {', '.join(unknown)}; expected pixels and optional model")
    if "pixels" not in payload:
        raise ApiError(422, 'JSON body has no "pixels": give 784 grey values 0-255 (28x28, ink bright)')
    pixels = payload["pixels"]
    if not isinstance(pixels, list):
        raise ApiError(422, f'"pixels" must be a list of 784 numbers, not {type(pixels).__name__}')
    if len(pixels) != PIXELS:
        raise ApiError(422, f'"pixels" must hold {PIXELS} values (28x28, row by row), got {len(pixels)}')
    for i, v in enumerate(pixels):
        # bool is an int in Python but never a pixel
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 255:
            raise ApiError(422, f'"pixels"[{i}] is {json.dumps(v)}: every value must be a number from 0 to 255')
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(422, f'"model" must be a string, not {type(model).__name__}')
    images = torch.tensor(pixels, dtype=torch.float32).round().to(torch.uint8).reshape(1, SIDE, SIDE)
    return images, model


async def _read_form(request: Request) -> tuple[str | None, bytes]:
    """(model name or None, image bytes) from a multipart form, closing its spooled files."""
    form = await request.form(max_files=1, max_fields=4)
    try:
        upload = form.get("image")
        if upload is None:
            raise ApiError(422, f"multipart form has no 'image' file field (fields: {', '.join(form) or 'none'})")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "form field 'image' must be a file upload, not text")
        name = form.get("model")
        if name is not None and not isinstance(name, str):
            raise ApiError(422, "form field 'model' must be text")
        data = await upload.read()
    finally:
        await form.close()
    if not data:
        raise ApiError(400, "the uploaded 'image' file is empty")
    return name or None, data


# ---------------------------------------------------------------------------------------------------------------
# ASGI middleware (plain ASGI, not BaseHTTPMiddleware: no extra task per request under load)


def _json_bytes(status: int, message: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": message}).encode()
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())], body


class BodyLimitMiddleware:
    """Reads the whole request body up front, refusing more than `max_bytes` with 413.

    Checking while reading (not only the Content-Length header) also covers chunked uploads."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        body, seen, more = bytearray(), 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            more = message.get("more_body", False)
            if seen > self.max_bytes:
                too_big = True
            if too_big:
                if seen > self.max_bytes * _DRAIN_FACTOR:
                    break
                continue
            body += chunk
        if too_big:
            size = f"{int(declared):,} bytes" if declared and declared.isdigit() else "more than that"
            headers, payload = _json_bytes(413, f"request body too large: {size}; the limit is "
                                                f"{self.max_bytes:,} bytes")
            await send({"type": "http.response.start", "status": 413,
                        "headers": headers + ([(b"connection", b"close")] if more else [])})
            await send({"type": "http.response.body", "body": payload})
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class HostCheckMiddleware:
    """Refuses a Host header not in `allowed_hosts` (port ignored): a web page that rebinds its own DNS
    name to 127.0.0.1 must not be able to use a server on loopback."""

    def __init__(self, app, allowed_hosts: list[str]) -> None:
        self.app, self.allowed = app, {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            # "[::1]:8000" keeps its brackets; "localhost:8000" loses the port
            name = host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
            if name not in self.allowed:
                headers, payload = _json_bytes(400, f"host {host!r} not allowed; use one of {sorted(self.allowed)}")
                await send({"type": "http.response.start", "status": 400, "headers": headers})
                await send({"type": "http.response.body", "body": payload})
                return
        await self.app(scope, receive, send)


class SecurityHeadersMiddleware:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + SECURITY_HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---------------------------------------------------------------------------------------------------------------
# The app


def _static_dir() -> Path:
    return Path(str(resources.files("lenet.serve") / "static"))


def create_app(model: str | None = None, checkpoint: str | os.PathLike | None = None, *,
               models: dict[str, nn.Module] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               workers: int = DEFAULT_WORKERS,
               max_pending: int = DEFAULT_MAX_PENDING,
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The `lenet serve` app.

    model: registered name served by default (pretrained weights); checkpoint: a trained folder or
    weights file to serve instead; models: ready networks by name (for tests and embedding).
    allowed_hosts: Host header values to accept (the CLI passes the loopback names when bound to
    loopback, which stops DNS-rebinding pages from talking to the server); None accepts any.
    """
    from .. import __version__

    if workers < 1 or max_pending < 1 or max_body_bytes < 1 or max_image_pixels < 1:
        raise ConfigError("workers, max_pending, max_body_bytes and max_image_pixels must be positive")
    store = ModelStore(model, checkpoint, models)
    static = _static_dir()
    index_html = (static / "index.html").read_text(encoding="utf-8")
    pools: list[ThreadPoolExecutor] = []  # at most one; made on first use, so the app can start again after a stop

    def pool() -> ThreadPoolExecutor:
        if not pools:
            pools.append(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lenet-infer"))
        return pools[0]

    pending = 0  # requests admitted and not yet answered; touched only on the event loop thread

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        # Load the default network before the first request, so that request is not the slow one.
        await asyncio.get_running_loop().run_in_executor(pool(), store.preload)
        yield
        if pools:
            pools.pop().shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="lenet serve", version=__version__,
                  description="LeNet-5 reads a handwritten digit. POST an image or 784 pixels to /api/predict.",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.store = store

    def release(_future=None) -> None:
        nonlocal pending
        pending -= 1

    async def run_job(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        nonlocal pending
        if pending >= max_pending:
            raise ApiError(503, f"server busy: {max_pending} requests already in progress; retry shortly")
        loop = asyncio.get_running_loop()
        pending += 1
        try:
            future = pool().submit(fn)
        except RuntimeError:  # the pool is shutting down with the server
            release()
            raise ApiError(503, "server shutting down") from None
        # The slot is freed when the work is really over, not when the client gives up waiting: a client
        # that hangs up must not leave its job running outside the count.
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(release, f))
        return await asyncio.wrap_future(future)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(index_html)

    @app.get("/healthz", summary="liveness")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "default_model": store.default}

    @app.get("/api/models", response_model=ModelsResponse, summary="the networks this server can run")
    async def api_models() -> dict[str, Any]:
        return store.describe()

    @app.post("/api/predict", response_model=Prediction, response_model_exclude_none=True, responses=_ERRORS,
              summary="read one digit", openapi_extra={"requestBody": _PREDICT_BODY})
    async def api_predict(request: Request, details: bool = Query(
            False, description="also return the 28x28 input the network saw and its first feature maps")) -> Any:
        body = await request.body()
        ctype = request.headers.get("content-type", "")
        mime = ctype.split(";", 1)[0].strip().lower()
        if not body:
            raise ApiError(400, "empty request body: send multipart/form-data with an 'image' file, "
                                'or JSON {"pixels": [784 values]}')
        if mime == "application/json":
            images, name = _parse_json(body)
            name = store.check(name)
            return await run_job(lambda: _predict(store.get(name), images, name, details))
        if mime == "multipart/form-data":
            name, data = await _read_form(request)
            name = store.check(name)
            return await run_job(
                lambda: _predict(store.get(name), _image_to_pixels(data, max_image_pixels), name, details))
        raise ApiError(415, f"unsupported content type {mime or '(none)'!r}: use multipart/form-data with an "
                            "'image' file, or application/json with 784 pixels")

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and not isinstance(exc, ApiError):
            message = "not found: the API is GET /api/models, POST /api/predict, GET /healthz, GET /openapi.json"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()]
        return JSONResponse({"error": "invalid request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(LenetError)
    async def bad_input(_request: Request, exc: LenetError) -> JSONResponse:
        # ImageError (not an image, corrupt, too many pixels, no ink) and friends: the client's input
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def bug(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    app.mount("/static", StaticFiles(directory=static), name="static")

    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    if allowed_hosts:
        app.add_middleware(HostCheckMiddleware, allowed_hosts=allowed_hosts)
    return app
