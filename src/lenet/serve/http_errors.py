"""Every error leaves the server as a JSON object `{"error": "..."}` with the status that fits it."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import LenetError

log = logging.getLogger("lenet.serve")

NOT_FOUND = ("not found: the API is GET /api/models, POST /api/predict, POST /api/read, GET /healthz, "
             "GET /openapi.json")


def _printable(message: str) -> str:
    # A message may quote a client's text, which JSON can carry as a lone surrogate ("\\ud800") that UTF-8
    # cannot encode: escaped, it cannot turn a 4xx into a 500.
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(message: str, status_code: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": _printable(message)}, status_code=status_code, headers=headers)


class ApiError(HTTPException):
    """An HTTP error whose detail is the one-line message the client sees as {"error": ...}."""


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 404 and not isinstance(exc, ApiError):  # a URL outside the API, not a missing model
        message = NOT_FOUND
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {request.url.path}: use {allowed or 'another method'}"
    return error_response(message, exc.status_code, exc.headers)


async def _invalid_parameter(_request: Request, exc: RequestValidationError) -> JSONResponse:
    # Query parameters (?details=...): the JSON body is checked by the schema, not by FastAPI.
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()]
    return error_response("invalid request: " + "; ".join(parts), 422)


async def _bad_input(_request: Request, exc: LenetError) -> JSONResponse:
    # ImageError (not an image, corrupt, too many pixels, no ink) and friends: the client's input
    return error_response(str(exc), 400)


async def _bug(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_parameter)
    app.add_exception_handler(LenetError, _bad_input)
    app.add_exception_handler(Exception, _bug)
