"""pytest plugin: a real S3 (moto's server) on 127.0.0.1, and a fault-injecting proxy.

Use it with `pytest_plugins = ["tests.s3_server"]`. Fixtures:

* `s3_endpoint` (session): starts moto's HTTP server on a free port, puts dummy
  credentials, a region and AWS_ENDPOINT_URL into os.environ (so subprocesses
  started by tests talk to it too) and yields the endpoint URL.
* `s3_bucket`: a fresh, empty bucket per test; yields its name.
* `fresh_storage`: restores batch.storage's default config after the test.
* `fault_proxy`: a `FaultProxy` in front of moto; point storage at `proxy.url`.

Helpers: `upload_folder`, `read_object`, `s3_client`.
"""

from __future__ import annotations

import http.client
import os
import random
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from batch import storage

REGION = "us-east-1"
# Dummy credentials: moto accepts anything; isolate from any real AWS config on the machine.
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
UNSET_ENV = ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "HTR_S3_SSE", "HTR_S3_SSE_KMS_KEY_ID")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name in UNSET_ENV:
            mp.delenv(name, raising=False)
        for name, value in {**TEST_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(name, value)
        storage.configure(storage.StorageConfig())
        yield endpoint
    server.stop()


def s3_client(endpoint: str):
    """A plain boto3 client for test setup and checks (not the code under test)."""
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def fresh_storage() -> Iterator[None]:
    yield
    storage.configure(storage.StorageConfig())


def upload_folder(endpoint: str, folder: Path, bucket: str, prefix: str = "") -> list[str]:
    """Upload every file under `folder` to s3://bucket/prefix/<relative path>; returns the keys."""
    client, keys = s3_client(endpoint), []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        key = (
            prefix.rstrip("/") + "/" + path.relative_to(folder).as_posix()
            if prefix
            else path.relative_to(folder).as_posix()
        )
        client.upload_file(str(path), bucket, key)
        keys.append(key)
    return keys


def read_object(endpoint: str, bucket: str, key: str) -> bytes:
    return s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()


# ---- fault injection ------------------------------------------------------------------------------

FAULTS = ("500", "503", "reset", "truncate", "error-reset", "stall")
_ERROR_XML = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


@dataclass
class Gate:
    """Holds the requests `match` picks until `release()`: before they reach moto
    (forward_first=False: the request may never land) or after moto answered but before the
    client hears it (True: it landed, the client does not know yet). `arrived` is set when
    the first one is held, so a test can act while it hangs, deterministically."""

    match: Callable[[str, str], bool]
    forward_first: bool = False
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    held: list[tuple[str, str]] = field(default_factory=list)

    def release(self) -> None:
        self.released.set()

    def wait(self, method: str, path: str) -> None:
        self.held.append((method, path))
        self.arrived.set()
        self.released.wait(120)


@dataclass
class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of moto that breaks some requests on purpose.

    Faults: '500' / '503' (S3 error replies, as from an overloaded S3), 'reset' (TCP
    RST before any reply), 'truncate' (the reply's headers promise the full body,
    half of it arrives, then the connection drops), 'error-reset' (a 500 whose XML body
    breaks off half-way: urllib3 raises ProtocolError while botocore parses it),
    'stall' (the request reaches moto, the reply is held `stall_s` seconds - past the
    client's read timeout - and then dropped: the write landed, the client never heard).
    Either script them with `fail_next(...)`, or set `rate` for a seeded random fraction
    of requests; at most `max_consecutive` faults in a row, so a client that retries
    enough always wins. Deterministic for sequential clients. `gate(...)` holds chosen
    requests until the test releases them.
    """

    upstream: str
    rate: float = 0.0
    kinds: tuple[str, ...] = ("500", "503", "reset")
    seed: int = 0
    max_consecutive: int = 2
    stall_s: float = 1.5
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) seen
    faults: list[str] = field(default_factory=list)  # faults injected, in order
    gates: list[Gate] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._script: list[str] = []
        self._consecutive = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_random(self, rate: float, seed: int = 0, kinds: tuple[str, ...] | None = None) -> None:
        """Fail a seeded random `rate` of the requests from now on."""
        with self._lock:
            self.rate, self.seed, self.kinds = rate, seed, kinds or self.kinds
            self._rng = random.Random(seed)

    def gate(self, match: Callable[[str, str], bool], forward_first: bool = False, once: bool = True) -> Gate:
        """Hold the requests `match(method, path)` picks (only the first if once) until the
        returned Gate is released."""
        if once:
            inner, fired = match, list[str]()

            def match(method: str, path: str) -> bool:
                if not fired and inner(method, path):
                    fired.append(path)
                    return True
                return False

        g = Gate(match, forward_first)
        with self._lock:
            self.gates.append(g)
        return g

    def _gate_for(self, method: str, path: str) -> Gate | None:
        with self._lock:
            return next((g for g in self.gates if g.match(method, path)), None)

    def fail_next(self, *kinds: str) -> None:
        """The next len(kinds) requests fail with these faults, in order."""
        unknown = set(kinds) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {unknown}")
        with self._lock:
            self._script.extend(kinds)

    def _decide(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests.append((method, path))
            if self._script:
                fault = self._script.pop(0)
            elif self._consecutive < self.max_consecutive and self._rng.random() < self.rate:
                fault = self._rng.choice(self.kinds)
            else:
                fault = None
            self._consecutive = self._consecutive + 1 if fault else 0
            if fault:
                self.faults.append(fault)
            return fault


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    upstream_host, upstream_port = proxy.upstream.split("://", 1)[1].rsplit(":", 1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def _any(self) -> None:
            body = self._read_request_body()
            gate = proxy._gate_for(self.command, self.path)
            if gate is not None and not gate.forward_first:
                gate.wait(self.command, self.path)
            fault = None if gate else proxy._decide(self.command, self.path)
            if fault in _ERROR_XML:
                return self._send_error_xml(*_ERROR_XML[fault])
            if fault == "error-reset":
                return self._send_error_xml(*_ERROR_XML["500"], cut=True)
            if fault == "reset":
                return self._reset()
            status, headers, payload = self._forward(body)
            if gate is not None and gate.forward_first:
                gate.wait(self.command, self.path)
            if fault == "stall":
                time.sleep(proxy.stall_s)
                return self._reset()
            if fault == "truncate" and len(payload) > 1:
                self._send(status, headers, payload[: len(payload) // 2], len(payload))
                return self._reset()
            self._send(status, headers, payload, len(payload))

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        def _read_request_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(upstream_host, int(upstream_port), timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.getheaders(), resp.read()
            finally:
                conn.close()

        def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes, length: int) -> None:
            self.send_response_only(status)
            for k, v in headers:
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            # HEAD replies carry the object's length but no body.
            upstream_length = dict((k.lower(), v) for k, v in headers).get("content-length")
            is_head = self.command == "HEAD" and upstream_length is not None
            self.send_header("Content-Length", str(upstream_length) if is_head else str(length))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            self.wfile.flush()

        def _send_error_xml(self, status: int, code: str, message: str, cut: bool = False) -> None:
            xml = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{message}</Message><RequestId>fault</RequestId></Error>"
            ).encode()
            self._send(
                status, [("Content-Type", "application/xml")], xml[: len(xml) // 2] if cut else xml, len(xml)
            )
            if cut:
                self._reset()

        def _reset(self) -> None:
            """Close with RST (SO_LINGER 0): the client sees 'connection reset by peer'."""
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

    return Handler


@pytest.fixture
def fault_proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream=s3_endpoint).start()
    yield proxy
    proxy.stop()
