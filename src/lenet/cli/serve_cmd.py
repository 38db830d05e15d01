"""`lenet serve`: a local web page to draw a digit on and watch LeNet-5 read it, plus a JSON API."""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import math
import os
import signal
import socket
import sys

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "[::1]"]
# On SIGTERM or Ctrl+C, requests in progress get this long to finish before they are cancelled.
SHUTDOWN_GRACE_S = 10


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="draw digits or show photos of numbers in the browser and watch the network read them",
        description="Serve a page to draw a digit on (mouse, pen or touch) with the live prediction, the 28x28 "
                    "image the network saw and its first feature maps, or to read a number from a photo; and a "
                    "JSON API: POST /api/predict, POST /api/read, GET /api/models, GET /healthz, GET /openapi.json.",
        epilog="examples:\n  lenet serve                          # pretrained seed on http://127.0.0.1:8000\n"
               "  lenet serve --model classic\n  lenet serve --checkpoint runs/seed --port 8080\n"
               "  curl -F image=@digit.png http://127.0.0.1:8000/api/predict\n"
               "  curl -F image=@photo.jpg http://127.0.0.1:8000/api/read",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", help="registered network whose shipped weights to serve by default (default seed)")
    which.add_argument("--checkpoint", metavar="DIR", help="serve this trained checkpoint folder (or weights file)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; anything else exposes the server)")
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    p.add_argument("--workers", type=int, default=None, help="inference threads (default: min(4, CPU cores))")
    p.add_argument("--max-pending", type=int, default=None,
                   help="requests in progress at once before answering 503 busy (default 64)")
    p.add_argument("--max-body-mb", type=float, default=None, help="request body limit in MiB (default 8)")
    p.add_argument("--max-image-pixels", type=int, default=None,
                   help="refuse larger images before decoding them (default 4096x4096 = 16,777,216)")
    p.add_argument("--header-timeout", type=float, default=None, metavar="SECONDS",
                   help="a request's line and headers must arrive within this time of the connection opening (or "
                        "of its first byte on a kept-alive connection), else 408 and the connection is closed "
                        "(default 5)")
    p.add_argument("--body-timeout", type=float, default=None, metavar="SECONDS",
                   help="a request's body must arrive within this time of its headers, else 408 and the connection "
                        "is closed (default 30)")
    p.add_argument("--keep-alive-timeout", type=float, default=None, metavar="SECONDS",
                   help="close a kept-alive connection idle this long after an answer (default 5)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(run=run_serve)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """`host` as it appears in a URL and a Host header: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_hosts_for(host: str) -> list[str] | None:
    """The Host headers a server bound to `host` accepts: on loopback, the loopback names and the bound address
    itself (127.0.0.2 is loopback too); elsewhere no check (None)."""
    if not is_loopback(host):
        return None
    return list(dict.fromkeys([*LOOPBACK_NAMES, url_host(host).lower()]))


def _checked(flag: str, value: float | None, upper: float) -> float | None:
    """`value` if it is None or a finite number in (0, upper]; else ConfigError naming `flag`."""
    from ..errors import ConfigError

    if value is not None and not (math.isfinite(value) and 0 < value <= upper):
        raise ConfigError(f"{flag} must be a number above 0 and at most {upper:g}, got {value!r}")
    return value


def _limits(args: argparse.Namespace) -> dict:
    """The limit flags that were given, as `create_app` keywords (the others keep the app's defaults)."""
    most_workers = 8 * (os.cpu_count() or 1)
    body_mb = _checked("--max-body-mb", args.max_body_mb, 4096)
    given = {"workers": _checked("--workers", args.workers, most_workers),
             "max_pending": _checked("--max-pending", args.max_pending, 100_000),
             "max_body_bytes": None if body_mb is None else max(1, int(body_mb * 1024 * 1024)),
             "max_image_pixels": _checked("--max-image-pixels", args.max_image_pixels, 1 << 32)}
    return {k: v for k, v in given.items() if v is not None}


def _timeouts(args: argparse.Namespace) -> dict:
    """The connection deadlines in seconds: the flags given, else the defaults."""
    from ..serve.protocol import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_KEEP_ALIVE_TIMEOUT

    day = 24 * 3600.0
    return {"header": _checked("--header-timeout", args.header_timeout, day) or DEFAULT_HEADER_TIMEOUT,
            "body": _checked("--body-timeout", args.body_timeout, day) or DEFAULT_BODY_TIMEOUT,
            "keep_alive": _checked("--keep-alive-timeout", args.keep_alive_timeout, day) or DEFAULT_KEEP_ALIVE_TIMEOUT}


def run_serve(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port number (0-65535)")
    from ..serve import create_app  # raises a LenetError naming a missing web package

    limits, timeouts = _limits(args), _timeouts(args)  # every flag checked before anything is loaded
    sock = _bind(args.host, args.port)  # a port in use or a host that is not this machine's: before the loading
    import torch

    # Parallelism comes from the worker pool; torch's own intra-op threads would only fight it for the
    # cores when each request is one 28x28 image.
    torch.set_num_threads(1)
    allowed_hosts = allowed_hosts_for(args.host)
    # A damaged or tampered weights file fails here, as one line and exit 2, before the port is bound.
    app = create_app(args.model, args.checkpoint, allowed_hosts=allowed_hosts, **limits)
    app.state.store.preload()
    if allowed_hosts is None:
        print(f"lenet serve: warning: binding to {args.host} exposes the server beyond this machine; it has no "
              "authentication", file=sys.stderr)
    port = sock.getsockname()[1]  # --port 0: the one the system chose
    print(f"lenet serve: {app.state.store.default} on http://{url_host(args.host)}:{port}  (Ctrl+C to stop)",
          flush=True)
    _serve(app, args, timeouts, sock)
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to HOST:PORT (not yet listening), or ConfigError in one line."""
    from ..errors import ConfigError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise ConfigError(f"--host {host} is neither an address nor a name this machine resolves ({e.strerror})") \
            from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart reuses the port at once
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        hint = "another program serves on it: choose another --port" if e.errno == errno.EADDRINUSE else \
            "give an address of this machine with --host"
        raise ConfigError(f"cannot serve on {url_host(host)}:{port}: {e.strerror or e}; {hint}") from None
    return sock


def _serve(app, args: argparse.Namespace, timeouts: dict, sock: socket.socket) -> None:
    """Runs uvicorn until SIGINT (KeyboardInterrupt) or SIGTERM (errors.Terminated), after a graceful stop:
    no new connections, and requests in progress answered (up to SHUTDOWN_GRACE_S)."""
    import uvicorn

    from ..errors import ConfigError, Terminated
    from ..serve.protocol import guarded_protocol, raise_open_files_limit

    raise_open_files_limit()  # each connection is a file: held ones must not crowd out the rest
    # No limit_concurrency: uvicorn counts open connections against it, so clients holding connections
    # open (slowloris) could make it refuse every real request. Deadlines on reading requests free held
    # connections instead, and the inference pool bounds the work (503 when full).
    config = uvicorn.Config(app, host=args.host.strip("[]"), port=sock.getsockname()[1], log_level=args.log_level,
                            http=guarded_protocol(timeouts["header"], timeouts["body"]),
                            timeout_keep_alive=timeouts["keep_alive"], timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                            ws="none", server_header=False)  # no WebSocket routes: upgrades are plain requests
    server = _server_class()(config)
    try:
        server.run(sockets=[sock])
    except SystemExit as e:  # uvicorn's way out when it cannot start, after logging why
        if e.code in (0, None):
            raise
        raise ConfigError(f"could not serve on {args.host}:{args.port} (uvicorn's message above says why)") from None
    if signal.SIGTERM in server.signals:
        raise Terminated(f"; stopped taking connections and let the requests in progress finish "
                         f"({SHUTDOWN_GRACE_S} s at most)")
    if signal.SIGINT in server.signals:
        raise KeyboardInterrupt


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, reporting the signals that stopped it instead of raising them again once stopped
        (uvicorn's way), so that the CLI says what happened and exits 143 (SIGTERM) or 130 (SIGINT)."""

        signals: list[int]

        @contextlib.contextmanager
        def capture_signals(self):
            self.signals = []
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self._stop) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def _stop(self, sig: int, frame) -> None:
            self.signals.append(sig)
            self.handle_exit(sig, frame)

    return Server
