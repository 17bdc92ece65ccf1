"""infra/lambdas/api.py, the API Gateway handler, over real HTTP all the way to the container.

handler (as inlined into the stack) -> boto3 sagemaker-runtime InvokeEndpoint
  -> RuntimeFront: SageMaker Runtime's wire protocol on 127.0.0.1 (424 ModelError with
     OriginalStatusCode/OriginalMessage for a non-2xx container answer, 400 ValidationError
     for an unknown endpoint, 503 ServiceUnavailable)
  -> batch.serve's real HTTP server and error mapping, in-process, with a Service whose
     model reads nothing: pages are decoded by the real rasteriser (so a corrupt document
     fails where it would in production), the network is left out (no torch here).
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from batch import serve
from batch.core.ids import doc_id_for
from batch.core.schema import DocumentRecord, Page, now_ms
from jobs import infra
from tests.s3_server import TEST_ENV

REPO = Path(__file__).resolve().parents[1]
ENDPOINT = "htr-test-endpoint"
MB = 1024 * 1024


class NoModelService(serve.Service):
    """The container's Service with the network left out: real decoding, empty pages."""

    fail_with: BaseException | None = None
    port = 0  # the container fixture's server

    def process(self, data: bytes, content_type: str | None, source_uri: str = "") -> DocumentRecord:
        from transforms.rasterise import iter_pages

        if self.fail_with:
            raise self.fail_with
        ctype = serve.resolve_content_type(content_type, data)
        pages = [
            Page(i + 1, int(p.shape[1]), int(p.shape[0]))
            for i, p in enumerate(iter_pages(data, self.settings.dpi, content_type=ctype))
        ]
        return DocumentRecord(
            doc_id_for(data), source_uri, pages, "no-model", self.run_id, now_ms(), content_type=ctype
        )


@dataclass
class RuntimeFront:
    """SageMaker Runtime's InvokeEndpoint, as botocore sees it, in front of one container."""

    container_port: int
    unavailable: bool = False
    requests: list[str] = field(default_factory=list)

    def start(self) -> RuntimeFront:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _front_handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _front_handler(front: RuntimeFront) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _aws_error(self, status: int, code: str, fields: dict[str, Any]) -> None:
            self._reply(
                status,
                json.dumps(fields).encode(),
                {"Content-Type": "application/json", "x-amzn-ErrorType": code},
            )

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            front.requests.append(self.path)
            if self.path != f"/endpoints/{ENDPOINT}/invocations":
                return self._aws_error(400, "ValidationError", {"message": "Endpoint not found."})
            if front.unavailable:
                return self._aws_error(503, "ServiceUnavailable", {"message": "Service Unavailable"})
            conn = http.client.HTTPConnection("127.0.0.1", front.container_port, timeout=60)
            conn.request(
                "POST",
                "/invocations",
                body=body,
                headers={"Content-Type": self.headers.get("Content-Type", "")},
            )
            answer = conn.getresponse()
            payload = answer.read()
            conn.close()
            if answer.status == 200:
                return self._reply(
                    200,
                    payload,
                    {
                        "Content-Type": answer.getheader("Content-Type", ""),
                        "x-Amzn-Invoked-Production-Variant": "AllTraffic",
                    },
                )
            self._aws_error(
                424,
                "ModelError",
                {
                    "Message": f"Received client error ({answer.status}) from primary with message "
                    f'"{payload.decode()}".',
                    "OriginalStatusCode": answer.status,
                    "OriginalMessage": payload.decode(),
                    "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:"
                    f"/aws/sagemaker/Endpoints/{ENDPOINT}",
                },
            )

    return Handler


@pytest.fixture(scope="module")
def container() -> Iterator[NoModelService]:
    service = NoModelService(serve.ServeSettings(max_payload_mb=6))
    service.ready.set()
    server = serve.Server(("127.0.0.1", 0), service)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    service.port = server.server_address[1]
    yield service
    server.shutdown()
    server.server_close()


@pytest.fixture
def front(container: NoModelService, monkeypatch) -> Iterator[RuntimeFront]:
    front = RuntimeFront(container.port).start()
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", front.url)
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("MAX_DOCUMENT_MB", "1")
    container.fail_with = None
    yield front
    front.stop()


@pytest.fixture
def handler(front) -> Callable[[dict, Any], dict]:
    """The handler exactly as `htr deploy-template` inlines it (fresh client per test)."""
    namespace: dict[str, Any] = {"__name__": "index"}
    exec(compile(infra.inline_code("api"), "index.py", "exec"), namespace)
    return namespace["handler"]


def api_event(body: bytes, content_type: str | None) -> dict:
    """What API Gateway's Lambda proxy sends with BinaryMediaTypes */*: the body base64."""
    headers = {"content-type": content_type} if content_type else {}
    return {
        "httpMethod": "POST",
        "path": "/documents",
        "headers": headers,
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }


def answer(result: dict) -> tuple[int, dict]:
    assert result["headers"]["Content-Type"] == "application/json"
    assert not [h for h in result["headers"] if h.lower().startswith("access-control")]  # CORS off
    return result["statusCode"], json.loads(result["body"])


def test_good_document_is_200_with_the_record(handler, front) -> None:
    document = (REPO / "samples" / "form.png").read_bytes()
    status, body = answer(handler(api_event(document, "image/png"), None))
    assert status == 200
    assert body["doc_id"] == doc_id_for(document) and body["content_type"] == "image/png"
    assert body["page_count"] == 1 and body["pages"][0]["width"] > 0
    assert front.requests == [f"/endpoints/{ENDPOINT}/invocations"]


def test_bad_document_is_the_containers_400_json_error(handler) -> None:
    status, body = answer(handler(api_event(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png"), None))
    assert status == 400
    assert body["error"]["type"] in ("CorruptDocument", "UnsupportedType")
    assert body["error"]["stage"] == "decode" and body["error"]["message"]


def test_oversize_is_413_before_the_endpoint(handler, front) -> None:
    status, body = answer(handler(api_event(b"%PDF" + b"\0" * MB, "application/pdf"), None))
    assert (status, body["error"]["type"]) == (413, "TooLarge")
    assert front.requests == []


@pytest.mark.parametrize(
    "content_type, status, kind", [("text/html", 415, "UnsupportedType"), ("image/png", 400, "EmptyDocument")]
)
def test_request_errors(handler, front, content_type: str, status: int, kind: str) -> None:
    body = b"<html>" if content_type == "text/html" else b""
    got_status, got = answer(handler(api_event(body, content_type), None))
    assert (got_status, got["error"]["type"]) == (status, kind)
    assert front.requests == []


def test_model_failure_is_502_with_the_containers_error(handler, container) -> None:
    container.fail_with = RuntimeError("CUDA error: out of memory")
    status, body = answer(handler(api_event(b"%PDF-1.7", "application/pdf"), None))
    assert status == 502
    assert body["error"] == {"type": "RuntimeError", "stage": "model", "message": "CUDA error: out of memory"}


def test_endpoint_unavailable_is_503(handler, front) -> None:
    front.unavailable = True
    status, body = answer(handler(api_event(b"%PDF-1.7", "application/pdf"), None))
    assert (status, body["error"]["type"], body["error"]["stage"]) == (503, "ServiceUnavailable", "api")


def test_unknown_endpoint_is_502(handler, monkeypatch) -> None:
    monkeypatch.setenv("ENDPOINT_NAME", "gone")
    status, body = answer(handler(api_event(b"%PDF-1.7", "application/pdf"), None))
    assert (status, body["error"]["type"]) == (502, "ValidationError")


def test_content_type_defaults_to_sniffing(handler) -> None:
    document = (REPO / "samples" / "form.png").read_bytes()
    status, body = answer(handler(api_event(document, None), None))
    assert status == 200 and body["content_type"] == "image/png"
