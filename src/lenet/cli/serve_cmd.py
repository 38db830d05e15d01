"""`lenet serve`: a local web page to draw a digit on and watch LeNet-5 read it, plus a JSON API."""

from __future__ import annotations

import argparse
import ipaddress
import sys

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "[::1]"]


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
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(run=run_serve)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _limits(args: argparse.Namespace) -> dict:
    """The limit flags that were given, as `create_app` keywords (the others keep the app's defaults)."""
    given = {"workers": args.workers, "max_pending": args.max_pending,
             "max_body_bytes": None if args.max_body_mb is None else int(args.max_body_mb * 1024 * 1024),
             "max_image_pixels": args.max_image_pixels}
    return {k: v for k, v in given.items() if v is not None}


def run_serve(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port number (0-65535)")
    import torch
    import uvicorn

    from ..serve import create_app  # raises a LenetError naming a missing web package

    # Parallelism comes from the worker pool; torch's own intra-op threads would only fight it for the
    # cores when each request is one 28x28 image.
    torch.set_num_threads(1)
    loopback = is_loopback(args.host)
    # A damaged or tampered weights file fails here, as one line and exit 2, before the port is bound.
    app = create_app(args.model, args.checkpoint, allowed_hosts=LOOPBACK_NAMES if loopback else None,
                     **_limits(args))
    app.state.store.preload()
    if not loopback:
        print(f"lenet serve: warning: binding to {args.host} exposes the server beyond this machine; it has no "
              "authentication", file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host
    print(f"lenet serve: {app.state.store.default} on http://{shown}:{args.port}  (Ctrl+C to stop)", flush=True)
    # limit_concurrency: connections beyond it get 503 from uvicorn itself, before any request parsing.
    uvicorn.run(app, host=args.host.strip("[]"), port=args.port, log_level=args.log_level,
                limit_concurrency=1024, timeout_keep_alive=5, server_header=False)
    return 0
