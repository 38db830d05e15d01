"""Load test for `lenet serve`: many concurrent clients over loopback, zero errors expected.

    python benchmarks/load_test.py                         # starts its own server: 2,000 requests, 32 clients
    python benchmarks/load_test.py --requests 5000 --clients 64 --json
    python benchmarks/load_test.py --url http://127.0.0.1:8000   # a server you started yourself
    python benchmarks/load_test.py -- --checkpoint runs/seed     # options after -- go to `lenet serve`

The traffic (--payload mixed) is what the drawing page sends, alternating with API calls: even requests
post a 280x280 PNG of a real MNIST test digit with ?details=true (as the canvas does while you draw:
decoding, MNIST-style preprocessing, prediction, the 28x28 input and the feature maps in the answer),
odd requests post the same digit as JSON pixels. Each client holds one keep-alive connection and sends
its next request as soon as the previous answer is in (a closed loop), so 32 clients keep 32 requests
in flight.

Any non-200 answer, malformed response, dropped connection or timeout counts as an error; the exit
status is 1 when there was any. The client is a few lines of asyncio over raw HTTP/1.1 so that on a
small machine the measuring side costs as little CPU as possible. Loopback only: the URL must be
127.0.0.1 or localhost; nothing else is ever contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field

MAX_REQUESTS = 100_000
MAX_CLIENTS = 256
LOOPBACK = {"127.0.0.1", "localhost"}


@dataclass
class Payload:
    path: str
    content_type: str
    body: bytes
    label: int


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    correct: int = 0


def make_payloads(count: int = 64, kind: str = "mixed") -> list[Payload]:
    """For the first `count` MNIST test digits: the page's PNG upload ("page"), JSON pixels ("json"), or
    both in turn ("mixed")."""
    from PIL import Image

    import lenet

    test = lenet.load_dataset("mnist").test
    payloads = []
    boundary = "lenet-load-test-boundary"
    for i in range(count):
        pixels = test.images[i].to("cpu").numpy()
        label = int(test.labels[i])
        # The canvas: 280x280, white ink on black, what the page posts while you draw.
        png = io.BytesIO()
        Image.fromarray(pixels).resize((280, 280), Image.Resampling.BILINEAR).save(png, format="PNG")
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"digit.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + png.getvalue() + f"\r\n--{boundary}--\r\n".encode()
        if kind in ("page", "mixed"):
            payloads.append(Payload("/api/predict?details=true", f"multipart/form-data; boundary={boundary}", body,
                                    label))
        if kind in ("json", "mixed"):
            payloads.append(Payload("/api/predict", "application/json",
                                    json.dumps({"pixels": pixels.reshape(-1).tolist()}).encode(), label))
    return payloads


def check_loopback(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        raise SystemExit(f"load_test: refusing {url!r}: only http://127.0.0.1:PORT (or localhost) is allowed")
    if parts.port is None:
        raise SystemExit(f"load_test: {url!r} needs a port")
    return "127.0.0.1", parts.port


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
            raise ValueError("chunked response not supported by this client")
    if length is None:
        raise ValueError("response without Content-Length")
    return status, await reader.readexactly(length)


async def _client(host: str, port: int, payloads: list[Payload], counter: list[int], total: int,
                  result: Result, timeout: float, deadline: float) -> None:
    reader = writer = None
    try:
        while counter[0] < total and time.perf_counter() < deadline:
            n = counter[0]
            counter[0] += 1  # one event loop thread: no lock needed
            p = payloads[n % len(payloads)]
            request = (f"POST {p.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {p.content_type}\r\n"
                       f"Content-Length: {len(p.body)}\r\n\r\n").encode() + p.body
            start = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                writer.write(request)
                await writer.drain()
                status, body = await asyncio.wait_for(_read_response(reader), timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                result.errors.append(f"request {n}: {type(e).__name__}: {e}")
                if writer is not None:
                    writer.close()
                reader = writer = None  # reconnect for the next request
                continue
            result.latencies.append(time.perf_counter() - start)
            if status != 200:
                result.errors.append(f"request {n}: HTTP {status}: {body[:200]!r}")
                continue
            try:
                answer = json.loads(body)
                result.correct += answer["prediction"] == p.label
            except (ValueError, KeyError) as e:
                result.errors.append(f"request {n}: bad JSON answer ({e})")
    finally:
        if writer is not None:
            writer.close()


async def _run(host: str, port: int, payloads: list[Payload], total: int, clients: int, timeout: float,
               max_seconds: float) -> tuple[Result, float, int]:
    result, counter = Result(), [0]
    start = time.perf_counter()
    deadline = start + max_seconds
    await asyncio.gather(*(_client(host, port, payloads, counter, total, result, timeout, deadline)
                           for _ in range(clients)))
    return result, time.perf_counter() - start, min(counter[0], total)


def run_load(url: str, requests: int = 2000, clients: int = 32, payloads: list[Payload] | None = None,
             timeout: float = 30.0, max_seconds: float = 600.0, warmup: int = 20) -> dict:
    """Send `requests` requests from `clients` concurrent keep-alive connections; return the summary."""
    if not 1 <= requests <= MAX_REQUESTS or not 1 <= clients <= MAX_CLIENTS:
        raise SystemExit(f"load_test: requests must be 1..{MAX_REQUESTS:,} and clients 1..{MAX_CLIENTS}")
    host, port = check_loopback(url)
    payloads = payloads or make_payloads()
    if warmup:  # first requests pay for lazy imports and allocator growth; not what a user waits for
        asyncio.run(_run(host, port, payloads, min(warmup, requests), 1, timeout, max_seconds))
    result, wall, sent = asyncio.run(_run(host, port, payloads, requests, clients, timeout, max_seconds))
    lat = sorted(result.latencies)
    done = len(lat)

    def pct(q: float) -> float:
        return 1000 * lat[min(done - 1, int(q * done))] if done else float("nan")

    return {
        "url": url, "requests": requests, "clients": clients, "completed": done,
        # requests never sent (the --max-seconds deadline passed) count as errors too
        "errors": len(result.errors) + (requests - sent),
        "error_samples": result.errors[:5], "wall_s": round(wall, 3),
        "requests_per_s": round(done / wall, 1) if wall > 0 else float("nan"),
        "p50_ms": round(pct(0.50), 2), "p90_ms": round(pct(0.90), 2), "p99_ms": round(pct(0.99), 2),
        "max_ms": round(1000 * lat[-1], 2) if done else float("nan"),
        "mean_ms": round(1000 * statistics.fmean(lat), 2) if done else float("nan"),
        "accuracy": round(100 * result.correct / done, 2) if done else float("nan"),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(serve_args: list[str], port: int, wait_s: float = 60.0) -> subprocess.Popen:
    """`lenet serve` on 127.0.0.1:port as a subprocess, returned once /healthz answers."""
    cmd = [sys.executable, "-m", "lenet", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", *serve_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"load_test: the server exited with status {proc.returncode}: {' '.join(cmd)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"load_test: the server did not answer within {wait_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="an already running server (127.0.0.1 only); default: start one")
    ap.add_argument("--requests", type=int, default=2000, help="total requests (default 2000)")
    ap.add_argument("--clients", type=int, default=32, help="concurrent connections (default 32)")
    ap.add_argument("--payload", choices=["mixed", "page", "json"], default="mixed",
                    help="mixed (default): the page's PNG upload and JSON pixels in turn; page or json alone")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="stop sending after this long")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("serve_args", nargs=argparse.REMAINDER,
                    help="after --: options for the started `lenet serve` (e.g. -- --checkpoint runs/seed)")
    args = ap.parse_args(argv)
    serve_args = [a for a in args.serve_args if a != "--"]

    proc = None
    url = args.url
    if url is None:
        port = free_port()
        proc = start_server(serve_args, port)
        url = f"http://127.0.0.1:{port}"
    try:
        summary = run_load(url, args.requests, args.clients, make_payloads(kind=args.payload), timeout=args.timeout,
                           max_seconds=args.max_seconds)
        summary["payload"] = args.payload
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    summary["cpu_cores"] = os.cpu_count()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['completed']:,}/{summary['requests']:,} requests from {summary['clients']} clients over "
              f"loopback in {summary['wall_s']:.1f} s: {summary['requests_per_s']:,.0f} requests/s, "
              f"errors {summary['errors']}")
        print(f"latency p50 {summary['p50_ms']:.1f} ms, p90 {summary['p90_ms']:.1f} ms, "
              f"p99 {summary['p99_ms']:.1f} ms, max {summary['max_ms']:.1f} ms; "
              f"predictions matching the MNIST labels {summary['accuracy']:.2f}%")
        for line in summary["error_samples"]:
            print("  " + line)
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
