"""The ASGI layers around the routes: the Host check, security headers on every answer, and the body limit.

Plain ASGI, not Starlette's BaseHTTPMiddleware: no extra task per request under load."""

from __future__ import annotations

import json

from fastapi import FastAPI

from .settings import Settings

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


async def _send_error(send, status: int, message: str, extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + list(extra_headers)})
    await send({"type": "http.response.body", "body": body})


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
            too_big = too_big or seen > self.max_bytes
            if too_big:
                if seen > self.max_bytes * _DRAIN_FACTOR:
                    break
                continue
            body += chunk
        if too_big:
            size = f"{int(declared):,} bytes" if declared and declared.isdigit() else "more than that"
            await _send_error(send, 413, f"request body too large: {size}; the limit is {self.max_bytes:,} bytes",
                              [(b"connection", b"close")] if more else [])
            return
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive):
    """A `receive` that hands the app the body already read, then passes on to the real one."""
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def host_name(host: str) -> str:
    """The Host header without its port: "[::1]:8000" keeps its brackets, "localhost:8000" loses the port."""
    host = host.lower()
    return host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]


class HostCheckMiddleware:
    """Refuses a Host header not in `allowed_hosts` (port ignored): a web page that rebinds its own DNS
    name to 127.0.0.1 must not be able to use a server on loopback."""

    def __init__(self, app, allowed_hosts: tuple[str, ...]) -> None:
        self.app, self.allowed = app, {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            if host_name(host) not in self.allowed:
                await _send_error(send, 400, f"host {host!r} not allowed; use one of {sorted(self.allowed)}")
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


def add_middleware(app: FastAPI, settings: Settings) -> None:
    """The layers, innermost first: the Host check runs before anything reads a byte of the body."""
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    if settings.allowed_hosts:
        app.add_middleware(HostCheckMiddleware, allowed_hosts=settings.allowed_hosts)
