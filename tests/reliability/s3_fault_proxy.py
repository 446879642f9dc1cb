"""A fault-injecting HTTP proxy for S3 tests, on loopback in front of the moto server.

boto3 talks to the proxy as if it were the S3 endpoint (`data.s3.endpoint_url`); the proxy
forwards each request to the real (moto) server, except while a fault rule matches it:

- `fail(status)`: answer with an S3-style error (500 InternalError, 503 SlowDown, 403
  AccessDenied...) without forwarding;
- `delay(seconds)`: hold the request that long before forwarding (beyond the client's read
  timeout, the client gives up: a timeout as boto3 sees it).

A rule lasts for its next `times` matching requests, or for `seconds` of wall time, or until
`clear()`; it can be limited to one HTTP method and to paths containing a string. The proxy
counts what it forwarded and what it injected, so a test can prove the fault really happened.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

# Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), plus the ones the
# proxy sets itself.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
}
ERROR_CODES = {
    403: ("AccessDenied", "Access Denied"),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    502: ("BadGateway", "Bad gateway (injected)"),
    503: ("SlowDown", "Please reduce your request rate."),
    504: ("GatewayTimeout", "Gateway timeout (injected)"),
}


@dataclass
class FaultRule:
    kind: str  # "status" or "delay"
    status: int = 503
    delay_seconds: float = 0.0
    times: int | None = None  # matching requests left; None: no count limit
    until: float | None = None  # time.monotonic() deadline; None: no time limit
    method: str | None = None
    path_contains: str | None = None

    def matches(self, method: str, path: str, now: float) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.until is not None and now >= self.until:
            return False
        if self.method is not None and method != self.method:
            return False
        return self.path_contains is None or self.path_contains in path


class S3FaultProxy:
    """Forwards HTTP to `upstream` (e.g. the moto server's URL) with injectable faults."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self.forwarded = 0
        self.injected = 0
        self.injected_log: list[tuple[str, str, str]] = []  # (kind, method, path)
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True  # a held (delayed) request must not block shutdown
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> S3FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- faults -------------------------------------------------------------------------
    def fail(
        self,
        status: int = 503,
        times: int | None = None,
        seconds: float | None = None,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer matching requests with `status` (persistent unless `times` or `seconds`)."""
        self._add(FaultRule("status", status=status), times, seconds, method, path_contains)

    def delay(
        self,
        delay_seconds: float,
        times: int | None = None,
        seconds: float | None = None,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Hold matching requests `delay_seconds` before forwarding them."""
        self._add(FaultRule("delay", delay_seconds=delay_seconds), times, seconds, method, path_contains)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def _add(
        self,
        rule: FaultRule,
        times: int | None,
        seconds: float | None,
        method: str | None,
        path_contains: str | None,
    ) -> None:
        rule.times = times
        rule.until = time.monotonic() + seconds if seconds is not None else None
        rule.method = method
        rule.path_contains = path_contains
        with self._lock:
            self._rules.append(rule)

    def _take_rule(self, method: str, path: str) -> FaultRule | None:
        """The first rule matching this request, its count spent; None: forward it."""
        now = time.monotonic()
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path, now):
                    if rule.times is not None:
                        rule.times -= 1
                    self.injected += 1
                    self.injected_log.append((rule.kind, method, path))
                    return rule
            self.forwarded += 1
        return None

    # -- the HTTP side ------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as boto3's connection pool expects

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: thousands of requests in a test

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rule = proxy._take_rule(self.command, self.path)
                if rule is not None and rule.kind == "status":
                    self._send_error(rule.status)
                    return
                if rule is not None and rule.kind == "delay":
                    time.sleep(rule.delay_seconds)
                self._forward(body)

            def _send_error(self, status: int) -> None:
                code, message = ERROR_CODES.get(status, ("InternalError", "injected fault"))
                payload = (
                    b'<?xml version="1.0" encoding="UTF-8"?>\n'
                    + f"<Error><Code>{code}</Code><Message>{message}</Message>"
                    f"<Resource>{self.path}</Resource></Error>".encode()
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _forward(self, body: bytes) -> None:
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    if body or self.command in {"PUT", "POST"}:
                        headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in HOP_BY_HOP:
                            self.send_header(key, value)
                    if self.command == "HEAD":
                        # HEAD announces the object's length without sending it
                        length = response.getheader("Content-Length")
                        if length is not None:
                            self.send_header("Content-Length", length)
                    else:
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                finally:
                    upstream.close()

            def _handle(self) -> None:
                try:
                    self._serve()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout): nothing to answer

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        return Handler
