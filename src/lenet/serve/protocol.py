"""The HTTP/1.1 connection handling behind `lenet serve`: uvicorn's h11 protocol with read deadlines.

Uvicorn closes a keep-alive connection that stays idle after a response, but it sets no deadline on reading a
request: a client that opens a connection and sends nothing, or half a header, or a header and then a body a
byte a minute, holds its connection (and a file descriptor) for as long as it likes. A few thousand such
clients ("slowloris") used to exhaust uvicorn's connection limit, so that every real request got 503.

`guarded_protocol(header_timeout, body_timeout)` adds the deadlines:

- a request's head (request line and headers) must be complete within `header_timeout` seconds of the
  connection opening, or of its first byte on a kept-alive connection (where uvicorn's keep-alive timeout
  covers the idle time before it);
- its body must be complete within `body_timeout` seconds of the head.

A connection that misses a deadline gets 408 and a JSON {"error": ...} (nothing, when it sent nothing) and is
closed. The server then needs no connection limit: a held connection costs a file descriptor and a few KB,
never a slot that a complete request would need (`raise_open_files_limit` makes room for many descriptors).
Once a request is complete no deadline applies: the work itself is bounded by the inference pool.
"""

from __future__ import annotations

import asyncio
import json
import resource

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT = 5.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE_TIMEOUT = 5.0


class DeadlineH11Protocol(H11Protocol):
    """H11Protocol with deadlines on reading each request; `guarded_protocol` sets the two timeouts."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading = "head"  # what the deadline waits for: "head", "body", or "" (nothing)
        self._got_bytes = False
        self._arm("head", self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        self._follow_request(new_bytes=True)  # the first byte of a request on a kept-alive connection starts its clock
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start the next (pipelined) request from buffered bytes
        if not self.transport.is_closing():
            self._follow_request()

    def _follow_request(self, new_bytes: bool = False) -> None:
        """Moves the deadline along with the request being read: head, then body, then none until the next
        request's first byte. A phase keeps the deadline it started with."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:  # also a body still arriving after an early answer (413, 400)
            phase = "body"
        elif state is h11.IDLE and (new_bytes or self._reading == "head" or self.conn.trailing_data[0]):
            phase = "head"
        else:  # the request is all read (the work is bounded by the pool), or the connection is closing
            phase = ""
        if phase != self._reading:
            if phase:
                self._arm(phase, self.header_timeout if phase == "head" else self.body_timeout)
            else:
                self._reading = ""
                self._disarm()

    def _arm(self, reading: str, seconds: float) -> None:
        self._disarm()
        self._reading = reading
        self._deadline = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._reading == "head":
            if self._got_bytes:
                message = (f"request timeout: the request line and headers did not arrive within "
                           f"{self.header_timeout:g} s")
                self.transport.write(_raw_error(408, b"Request Timeout", message))
        elif self._reading == "body":
            self._answer_408(f"request timeout: the request body did not arrive within {self.body_timeout:g} s")
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers a request h11 cannot parse in text/plain; every error of this server is JSON.
        self._disarm()
        self.transport.write(_raw_error(400, b"Bad Request", "malformed HTTP request (its request line, headers "
                                        "or Content-Length): send a valid HTTP/1.1 request"))
        self.transport.close()

    def _answer_408(self, message: str) -> None:
        """408 through h11 while the app waits for the rest of the body (which now never comes)."""
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            return
        cycle.disconnected = True  # the app's receive() gets http.disconnect; its late answer goes nowhere
        cycle.message_event.set()
        body = json.dumps({"error": message}).encode()
        try:
            out = self.conn.send(h11.Response(status_code=408, reason=b"Request Timeout", headers=[
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close")]))
            out += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        self.transport.write(out)


def _raw_error(status: int, reason: bytes, message: str) -> bytes:
    # No request was parsed, so h11 cannot frame an answer: the bytes are written as they are.
    body = json.dumps({"error": message}).encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, reason, len(body)) + body)


def guarded_protocol(header_timeout: float = DEFAULT_HEADER_TIMEOUT,
                     body_timeout: float = DEFAULT_BODY_TIMEOUT) -> type[DeadlineH11Protocol]:
    """The protocol class to hand uvicorn (`http=`), with these deadlines in seconds."""
    return type("GuardedH11Protocol", (DeadlineH11Protocol,),
                {"header_timeout": float(header_timeout), "body_timeout": float(body_timeout)})


def raise_open_files_limit() -> int:
    """Raises this process's soft limit on open files to its hard limit (each connection is one file), and
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):  # e.g. above the kernel's nr_open: keep what we have
            pass
    return soft
