"""`htr serve` as a real subprocess on a loopback port, spoken to over real HTTP.

Two servers start once for the module: a real-time one (payload limit 1 MB) and a Batch
Transform one (SAGEMAKER_BATCH=true). Their tiny models have constant last layers, so every
page comes back as one word "x" and the whole word path is exercised with known output. The batch server's answers,
written as Batch Transform writes `.out` files, go through `htr sagemaker collect`, whose
tables must match what the local worker (`htr run`) writes for the same documents.
"""

from __future__ import annotations

import http.client
import io
import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from batch.cli import main as htr
from batch.core.errors import EXIT_FATAL, EXIT_OK, EXIT_PARTIAL
from batch.core.ids import doc_id_for
from batch.core.schema import DocumentRecord
from batch.outputs import read_documents, read_table

STARTUP_LIMIT_S = 180  # a bound for a hung server, not a performance expectation


# ---- documents -----------------------------------------------------------------------------------


def _page(text: str, size: tuple[int, int] = (240, 160)) -> Image.Image:
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    for i, line in enumerate(text.split("\n")):
        draw.text((12, 12 + 22 * i), line, fill="black")
    return im


def _save(images: list[Image.Image], fmt: str) -> bytes:
    buf = io.BytesIO()
    images[0].save(buf, fmt, save_all=len(images) > 1, append_images=images[1:])
    return buf.getvalue()


def _encrypted_pdf() -> bytes:
    """A PDF whose standard security handler rejects the empty password."""
    pdf = _save([_page("secret")], "PDF")
    enc = (
        b"/Encrypt << /Filter /Standard /V 1 /R 2 /O <"
        + b"ab" * 32
        + b"> /U <"
        + b"cd" * 32
        + b"> /P -4 >> /ID [<00112233445566778899aabbccddeeff> "
        b"<00112233445566778899aabbccddeeff>] "
    )
    at = pdf.index(b"<<", pdf.rindex(b"trailer")) + 2
    return pdf[:at] + enc + pdf[at:]


@pytest.fixture(scope="module")
def docs() -> dict[str, bytes]:
    letter = [_page("Dear Sir,\nthank you"), _page("yours,\nA. Writer")]
    return {
        "page.png": _save([_page("a note\non paper")], "PNG"),
        "photo.jpg": _save([_page("a photo", (320, 200))], "JPEG"),
        "scan.tiff": _save([_page("scan one"), _page("scan two")], "TIFF"),
        "letter.pdf": _save(letter, "PDF"),
    }


# ---- server processes ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    log: Path

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def invoke(self, data: bytes, content_type: str) -> tuple[int, dict]:
        status, body = self.request("POST", "/invocations", data, {"Content-Type": content_type})
        return status, json.loads(body)

    def ping(self) -> int:
        try:
            return self.request("GET", "/ping")[0]
        except OSError:
            return 0

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while self.ping() != 200:
            assert self.proc.poll() is None, f"server exited:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, f"server never ready:\n{self.log.read_text()}"
            time.sleep(0.2)


def _start(htr_cmd, models: Path, env: dict, log: Path, extra_env: dict) -> ServerProcess:
    port = _free_port()
    cmd = [
        *htr_cmd,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--models",
        str(models),
        "--device",
        "cpu",
    ]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, env={**env, **extra_env}, stdout=f, stderr=subprocess.STDOUT)
    return ServerProcess(proc, port, log)


@pytest.fixture(scope="module")
def servers(htr_cmd, constant_models, subprocess_env, tmp_path_factory) -> Iterator[dict]:
    logs = tmp_path_factory.mktemp("serve-logs")
    started = {
        "realtime": _start(
            htr_cmd,
            constant_models,
            subprocess_env,
            logs / "realtime.log",
            {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1", "HTR_SERVE_MAX_PAGES": "3"},
        ),
        "batch": _start(
            htr_cmd,
            constant_models,
            subprocess_env,
            logs / "batch.log",
            {"SAGEMAKER_BATCH": "TRUE", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "3"},
        ),
    }
    try:
        for server in started.values():  # both load their models at the same time
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.proc.send_signal(signal.SIGTERM)
        codes = {name: s.proc.wait(timeout=60) for name, s in started.items()}
    assert codes == {"realtime": 0, "batch": 0}, "SIGTERM should stop the servers cleanly"
    for server in started.values():
        assert "stopped" in server.log.read_text()


@pytest.fixture(scope="module")
def server(servers) -> ServerProcess:
    return servers["realtime"]


def _without_time(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("processed_at",)}


# ---- the contract --------------------------------------------------------------------------------


def test_ping_and_execution_parameters(server: ServerProcess, servers) -> None:
    assert server.ping() == 200
    status, body = server.request("GET", "/execution-parameters")
    assert status == 200
    assert json.loads(body) == {
        "MaxConcurrentTransforms": json.loads(body)["MaxConcurrentTransforms"],
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 1,
    }
    status, body = servers["batch"].request("GET", "/execution-parameters")
    assert json.loads(body) == {
        "MaxConcurrentTransforms": 3,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 33,
    }  # 3 x 33 <= 100, the API's limit


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "1"}, (1, 100)),
        (
            {
                "SAGEMAKER_BATCH": "true",
                "SAGEMAKER_MAX_PAYLOAD_IN_MB": "200",
                "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "1",
            },
            (1, 100),
        ),
        ({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "4"}, (4, 25)),
        (
            {
                "SAGEMAKER_BATCH": "true",
                "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6",
                "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "8",
            },
            (8, 6),
        ),
        ({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "400"}, (100, 1)),
    ],
)
def test_execution_parameters_stay_within_the_api_limits(env, expected) -> None:
    from batch.serve import ServeSettings

    p = ServeSettings.from_env(env).execution_parameters()
    assert (p["MaxConcurrentTransforms"], p["MaxPayloadInMB"]) == expected
    assert p["MaxPayloadInMB"] <= 100 and p["MaxPayloadInMB"] * p["MaxConcurrentTransforms"] <= 100


@pytest.mark.parametrize(
    "name,content_type,sniffed,pages",
    [
        ("page.png", "image/png", "image/png", 1),
        ("photo.jpg", "image/jpeg", "image/jpeg", 1),
        ("scan.tiff", "image/tiff", "image/tiff", 2),
        ("letter.pdf", "application/pdf", "application/pdf", 2),
        ("letter.pdf", "application/x-image", "application/pdf", 2),
        ("scan.tiff", "application/x-image", "image/tiff", 2),
        ("page.png", "image/jpeg", "image/png", 1),  # mislabelled: the bytes decide
    ],
)
def test_each_content_type(server: ServerProcess, docs, name, content_type, sniffed, pages) -> None:
    status, record = server.invoke(docs[name], content_type)
    assert status == 200, record
    assert record["content_type"] == sniffed
    assert record["doc_id"] == doc_id_for(docs[name])
    assert record["page_count"] == pages == len(record["pages"])
    assert [p["page"] for p in record["pages"]] == list(range(1, pages + 1))
    assert record["model_version"].startswith("seg-")
    for page in record["pages"]:  # the word models read each page as one word "x"
        [line] = page["lines"]
        [word] = line["words"]
        x0, y0, x1, y1 = word["bbox"]
        assert word["text"] == "x" and 0 <= x0 < x1 <= page["width"] + 0.1
        assert 0 <= y0 < y1 <= page["height"] + 0.1
    assert DocumentRecord.from_json(record).to_json() == record  # the documents/*.json schema


@pytest.mark.parametrize(
    "fmt,content_type",
    [
        ("BMP", "image/bmp"),
        ("WEBP", "image/webp"),
        ("BMP", "image/x-ms-bmp"),
        ("WEBP", "application/x-image"),
    ],
)
def test_every_type_the_batch_job_reads(server: ServerProcess, fmt, content_type) -> None:
    data = _save([_page("a note")], fmt)
    status, record = server.invoke(data, content_type)
    assert status == 200, record
    assert record["content_type"] == f"image/{fmt.lower()}" and record["page_count"] == 1


def test_page_cap_is_a_400_before_rendering(server: ServerProcess) -> None:
    status, body = server.invoke(_save([_page(f"p{i}") for i in range(4)], "PDF"), "application/pdf")
    assert status == 400 and body["error"]["type"] == "TooLarge"
    assert "3 page limit" in body["error"]["message"] and body["error"]["stage"] == "decode"


def test_pages_stream_through_the_model_a_few_at_a_time(tmp_path: Path) -> None:
    """A long document never has more than chunk_pages rasterised pages waiting for the model,
    however many it has (the whole document used to be rendered first)."""
    import transforms.rasterise as rasterise
    from batch.serve import PageBatcher, ServeSettings, Service

    calls: list[int] = []
    decoded, ahead = [0], []
    real_iter_pages = rasterise.iter_pages

    def counting_pages(*args, **kwargs):
        for page in real_iter_pages(*args, **kwargs):
            decoded[0] += 1
            yield page

    def process_pages(images: list) -> list:
        ahead.append(decoded[0] - sum(calls))  # rasterised, not yet through the model
        calls.append(len(images))
        return [f"page{len(calls)}-{i}" for i in range(len(images))]

    class Pipe:
        class config:
            image_side = None

        def make_record(self, pages, doc_id, source_uri, run_id, ctype):
            return pages

    service = Service(ServeSettings(max_pages=50, chunk_pages=4, dpi=36))
    service.pipe, service.batcher = Pipe(), PageBatcher(process_pages, max_pages=16, wait_s=0)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(rasterise, "iter_pages", counting_pages)
            pages = service.process(_save([_page(f"p{i}") for i in range(11)], "PDF"), "application/pdf")
    finally:
        service.close()
    assert len(pages) == 11 and calls == [4, 4, 3]
    assert ahead == [4, 4, 3]  # rendering everything first would give [11, 7, 3]


def test_pdf_pages_are_rendered_at_200_dpi(server: ServerProcess, docs) -> None:
    _, record = server.invoke(docs["letter.pdf"], "application/pdf")
    width_pt = 240  # Pillow writes 1 pixel = 1 point
    assert abs(record["pages"][0]["width"] - width_pt * 200 / 72) <= 1


def test_oversize_payload_is_413(server: ServerProcess) -> None:
    body = b"\x89PNG\r\n\x1a\n" + bytes(1_500_000)
    status, error = server.invoke(body, "image/png")
    assert status == 413 and error["error"]["type"] == "PayloadTooLarge"
    assert server.ping() == 200


def test_oversize_is_refused_from_the_header_alone(server: ServerProcess) -> None:
    """Only headers are sent: the answer comes without the server waiting for 10 GB."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/pdf\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"PayloadTooLarge" in reply


def test_unsupported_content_type_is_415(server: ServerProcess, docs) -> None:
    status, error = server.invoke(docs["page.png"], "text/csv")
    assert status == 415
    assert error["error"]["type"] == "UnsupportedMediaType"


@pytest.mark.parametrize("kind", ["corrupt", "encrypted", "empty", "garbage"])
def test_bad_documents_are_400_with_a_json_error(server: ServerProcess, docs, kind) -> None:
    data, content_type, error_type = {
        "corrupt": (docs["letter.pdf"][:300], "application/pdf", "CorruptDocument"),
        "encrypted": (_encrypted_pdf(), "application/pdf", "EncryptedDocument"),
        "empty": (b"", "application/pdf", "EmptyDocument"),
        "garbage": (b"this is not a document" * 20, "application/x-image", "UnsupportedType"),
    }[kind]
    status, body = server.invoke(data, content_type)
    assert status == 400
    assert body["error"]["type"] == error_type
    assert body["error"]["stage"] == "decode" and body["error"]["message"]
    assert server.ping() == 200


def test_keep_alive_connection_serves_several_requests(server: ServerProcess, docs) -> None:
    conn = server.connection()
    try:
        for name in ("page.png", "letter.pdf", "photo.jpg"):
            conn.request(
                "POST", "/invocations", body=docs[name], headers={"Content-Type": "application/x-image"}
            )
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["doc_id"] == doc_id_for(docs[name])
        conn.request("GET", "/ping")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_concurrent_requests_match_single_requests(server: ServerProcess, docs) -> None:
    single = {name: server.invoke(data, "application/x-image") for name, data in docs.items()}
    names = list(docs) * 2
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        together = list(pool.map(lambda n: server.invoke(docs[n], "application/x-image"), names))
    for name, (status, record) in zip(names, together):
        assert status == 200
        assert _without_time(record) == _without_time(single[name][1])


def test_batch_mode_answers_document_errors_with_200(servers, docs) -> None:
    status, body = servers["batch"].invoke(docs["letter.pdf"][:300], "application/x-image")
    assert status == 200
    assert body["error"]["type"] == "CorruptDocument"
    assert body["doc_id"] == doc_id_for(docs["letter.pdf"][:300])
    status, _ = servers["batch"].invoke(docs["page.png"], "text/csv")
    assert status == 415  # a wrong job setting, not a document problem


def test_server_is_still_healthy(server: ServerProcess, docs) -> None:
    assert server.ping() == 200
    status, _ = server.invoke(docs["page.png"], "image/png")
    assert status == 200
    assert server.proc.poll() is None
    assert "Traceback" not in server.log.read_text()


# ---- collect: transform output == local worker output --------------------------------------------


def _write_docs(folder: Path, docs: dict[str, bytes]) -> None:
    files = {
        "letter.pdf": docs["letter.pdf"],
        "page.png": docs["page.png"],
        "sub/scan.tiff": docs["scan.tiff"],
        "broken.pdf": docs["letter.pdf"][:300],
        "empty.pdf": b"",
        "notes.txt": b"not a document at all\n" * 10,
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def _transform(server: ServerProcess, inputs: Path, out: Path) -> None:
    """What Batch Transform does with --content-type auto: one request per object, <key>.out."""
    for path in sorted(p for p in inputs.rglob("*") if p.is_file()):
        status, body = server.request(
            "POST", "/invocations", path.read_bytes(), {"Content-Type": "application/x-image"}
        )
        assert status == 200
        target = out / (path.relative_to(inputs).as_posix() + ".out")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)


def _rows(out: Path, table: str) -> list[dict]:
    rows = read_table(str(out), table).drop_columns(["run_id", "processed_at"]).to_pylist()
    return sorted((_rounded(r) for r in rows), key=lambda r: json.dumps(r, sort_keys=True))


_PIXEL_KEYS = {"x", "y", "x0", "y0", "x1", "y1"}


def _rounded(value, key: str = ""):
    """JSON carries 0.1 px coordinates and 4-decimal scores; the worker's Parquet rows come
    from memory with full precision. Compare at the JSON's precision."""
    if isinstance(value, float):
        return round(value, 1 if key in _PIXEL_KEYS else 3)
    if isinstance(value, dict):
        return {k: _rounded(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, key) for v in value]
    return value


def test_collect_matches_the_local_worker(servers, docs, constant_models, tmp_path: Path, capsys) -> None:
    inputs, tout = tmp_path / "docs", tmp_path / "transform-out"
    _write_docs(inputs, docs)
    assert (
        htr(
            [
                "run",
                str(inputs),
                str(tmp_path / "run"),
                "--models",
                str(constant_models),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == EXIT_PARTIAL
    )

    _transform(servers["batch"], inputs, tout)
    code = htr(["sagemaker", "collect", str(tout), str(tmp_path / "collected"), "--input", str(inputs)])
    assert code == EXIT_PARTIAL, capsys.readouterr().err

    for table in ("words", "pages", "errors"):
        assert _rows(tmp_path / "collected", table) == _rows(tmp_path / "run", table), table
    assert len(_rows(tmp_path / "run", "pages")) == 5 and len(_rows(tmp_path / "run", "errors")) == 3
    words = _rows(tmp_path / "collected", "words")
    assert len(words) == 5 and {w["text"] for w in words} == {"x"}  # one word per page

    def documents(out: Path) -> dict[str, dict]:
        return {
            d["doc_id"]: {k: v for k, v in d.items() if k not in ("run_id", "processed_at")}
            for d in read_documents(str(out))
        }

    assert documents(tmp_path / "collected") == documents(tmp_path / "run")

    # One ledger whichever path wrote it: a local run over the collected output finds the
    # transformed documents done (the three failures are retried, and fail again).
    capsys.readouterr()
    assert (
        htr(
            [
                "run",
                str(inputs),
                str(tmp_path / "collected"),
                "--models",
                str(constant_models),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == EXIT_PARTIAL
    )
    assert "3 skipped, 3 errors" in capsys.readouterr().out


def test_collect_reports_inputs_without_output(servers, docs, tmp_path: Path, capsys) -> None:
    inputs, tout = tmp_path / "docs", tmp_path / "transform-out"
    _write_docs(inputs, docs)
    _transform(servers["batch"], inputs, tout)
    (tout / "page.png.out").unlink()
    (tout / "junk.txt").write_text("not an .out file: ignored")
    shutil.copy(tout / "letter.pdf.out", tout / "orphan.pdf.out")  # no input: keeps its own uri
    assert (
        htr(
            ["sagemaker", "collect", str(tout), str(tmp_path / "c"), "--input", str(inputs), "--run-id", "r1"]
        )
        == EXIT_PARTIAL
    )
    errors = read_table(str(tmp_path / "c"), "errors").to_pylist()
    missing = [e for e in errors if e["error_type"] == "MissingTransformOutput"]
    assert [e["source_uri"] for e in missing] == [str(inputs / "page.png")]
    assert {e["run_id"] for e in errors} == {"r1"}
    pages = read_table(str(tmp_path / "c"), "pages").to_pylist()
    assert "orphan.pdf" in {p["source_uri"] for p in pages}
    assert "collected 3 documents, 3 error records, 1 inputs without output" in capsys.readouterr().out


def test_collect_exit_code_without_errors(servers, docs, tmp_path: Path) -> None:
    tout = tmp_path / "t"
    tout.mkdir()
    _, body = servers["batch"].request(
        "POST", "/invocations", docs["page.png"], {"Content-Type": "image/png"}
    )
    (tout / "page.png.out").write_bytes(body)
    assert htr(["sagemaker", "collect", str(tout), str(tmp_path / "c")]) == EXIT_OK
    [doc] = read_documents(str(tmp_path / "c"))
    assert doc["source_uri"] == "page.png" and doc["doc_id"] == doc_id_for(docs["page.png"])


# ---- dynamic batching, in-process --------------------------------------------------------------


def test_pages_of_waiting_requests_share_one_model_call(tiny_models: Path) -> None:
    """While the model thread is busy, requests queue; the next call takes all their pages,
    each request gets back exactly its own pages, and a failing page fails only its request."""
    import threading

    import numpy as np

    from batch.pipeline import Pipeline
    from batch.serve import PageBatcher

    pipe = Pipeline.load(tiny_models, "cpu")
    busy, release, calls = threading.Event(), threading.Event(), []

    def process_pages(images: list) -> list:
        calls.append(len(images))
        if len(calls) == 1:
            busy.set()
            release.wait(60)
        if any(im.shape[0] == 13 for im in images):  # a page the "model" cannot take
            raise RuntimeError("bad page")
        return pipe.process_pages(images)

    def doc(n: int, height: int = 64) -> list:
        return [np.full((height, 96 + 8 * i, 3), 255, np.uint8) for i in range(n)]

    docs = {"a": doc(1), "b": doc(2), "c": doc(3), "bad": doc(1, height=13)}
    batcher = PageBatcher(process_pages, max_pages=16, wait_s=0.005)
    try:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(batcher.submit, docs["a"])
            assert busy.wait(60)
            rest = {k: pool.submit(batcher.submit, docs[k]) for k in ("b", "c", "bad")}
            deadline = time.monotonic() + 60
            while batcher._queue.qsize() < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            release.set()
            results = {"a": first.result(60), **{k: f.exception(60) or f.result() for k, f in rest.items()}}
    finally:
        batcher.close()
    assert calls[:2] == [1, 6]  # a alone; then b + c + bad together (which fails) ...
    assert sorted(calls[2:]) == [1, 2, 3]  # ... so each is retried alone
    assert isinstance(results["bad"], RuntimeError)
    for key in ("a", "b", "c"):
        alone = pipe.process_pages(docs[key])
        assert [(p.width, p.height, p.words) for p in results[key]] == [
            (p.width, p.height, p.words) for p in alone
        ]


def test_collect_from_s3_to_s3(servers, docs, s3_endpoint: str, s3_bucket: str) -> None:
    from tests.s3_server import s3_client

    client = s3_client(s3_endpoint)
    for name in ("letter.pdf", "scan.tiff"):
        client.put_object(Bucket=s3_bucket, Key=f"in/{name}", Body=docs[name])
        _, body = servers["batch"].request(
            "POST", "/invocations", docs[name], {"Content-Type": "application/x-image"}
        )
        client.put_object(Bucket=s3_bucket, Key=f"tout/{name}.out", Body=body)
    out = f"s3://{s3_bucket}/tables/"
    assert (
        htr(["sagemaker", "collect", f"s3://{s3_bucket}/tout/", out, "--input", f"s3://{s3_bucket}/in/"])
        == EXIT_OK
    )
    pages = read_table(out, "pages").to_pylist()
    assert sorted((p["source_uri"], p["page"]) for p in pages) == [
        (f"s3://{s3_bucket}/in/letter.pdf", 1),
        (f"s3://{s3_bucket}/in/letter.pdf", 2),
        (f"s3://{s3_bucket}/in/scan.tiff", 1),
        (f"s3://{s3_bucket}/in/scan.tiff", 2),
    ]
    etags = {d["source_uri"]: d["source_etag"] for d in read_documents(out)}
    head = client.head_object(Bucket=s3_bucket, Key="in/letter.pdf")
    assert etags[f"s3://{s3_bucket}/in/letter.pdf"] == head["ETag"].strip('"')


def test_missing_models_fail_at_once(htr_cmd, subprocess_env, tmp_path) -> None:
    proc = subprocess.run(
        [*htr_cmd, "serve", "--port", "0", "--models", str(tmp_path)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EXIT_FATAL
    assert "segmenter.safetensors" in proc.stderr


def test_unloadable_models_never_report_healthy(htr_cmd, tiny_models, subprocess_env, tmp_path) -> None:
    broken = tmp_path / "models"
    shutil.copytree(tiny_models, broken)
    (broken / "recogniser.safetensors").write_bytes(b"not safetensors")
    server = _start(htr_cmd, broken, subprocess_env, tmp_path / "log", {})
    answers = set()
    while server.proc.poll() is None:  # /ping answers 503 while loading, then the server exits
        answers.add(server.ping())
        time.sleep(0.1)
    assert server.proc.wait() == EXIT_FATAL
    assert 200 not in answers
    assert "cannot load models" in server.log.read_text()
