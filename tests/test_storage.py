"""batch.storage against local folders and a real S3 API (moto's server over HTTP)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import boto3
import pytest

from batch import storage
from batch.core.errors import StorageError
from batch.storage import NotFound, StorageConfig
from tests.s3_server import REGION, FaultProxy, s3_client, upload_folder

TREE = {  # chosen so folder-vs-file ordering matters: 'a.txt' < 'a/x.pdf' < 'a0.pdf'
    "a.txt": b"text",
    "a/x.pdf": b"%PDF-1.4 x",
    "a/deep/y.png": b"\x89PNG y",
    "a0.pdf": b"%PDF-1.4 a0",
    "scans/2024/p1.jpg": b"jpeg 1",
    "scans/2024/p2.tif": b"tiff 2",
    "scans/2023/old.jpg": b"jpeg old",
}
SORTED_KEYS = sorted(TREE)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for key, data in TREE.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root


@pytest.fixture
def s3_tree(tree: Path, s3_endpoint: str, s3_bucket: str) -> str:
    upload_folder(s3_endpoint, tree, s3_bucket, "in")
    return f"s3://{s3_bucket}/in/"


@pytest.fixture
def proxied(fault_proxy: FaultProxy, fresh_storage) -> FaultProxy:
    """Storage talks to moto through the fault proxy, with quick body-resume backoff."""
    storage.configure(StorageConfig(endpoint_url=fault_proxy.url, backoff_base=0.01))
    return fault_proxy


def keys(root: str, **kw) -> list[str]:
    return [o.key for o in storage.list_objects(root, **kw)]


# ---- local ------------------------------------------------------------------------------------


def test_local_listing_is_recursive_sorted_by_full_key(tree: Path):
    objs = list(storage.list_objects(str(tree)))
    assert [o.key for o in objs] == SORTED_KEYS
    first = objs[0]
    assert first.uri == str(tree / "a.txt") and first.size == 4 and first.etag.endswith("-4")


def test_local_include_exclude_globs(tree: Path):
    assert keys(str(tree), include=["*.pdf"]) == ["a/x.pdf", "a0.pdf"]
    assert keys(str(tree), include=["scans/2024/*"]) == ["scans/2024/p1.jpg", "scans/2024/p2.tif"]
    assert keys(str(tree), include=["*.jpg", "*.tif"], exclude=["scans/2023/*"]) == [
        "scans/2024/p1.jpg",
        "scans/2024/p2.tif",
    ]


def test_local_single_file_root_and_missing_root(tree: Path):
    assert keys(str(tree / "a0.pdf")) == ["a0.pdf"]
    with pytest.raises(NotFound, match="nope"):
        list(storage.list_objects(str(tree / "nope")))


def test_local_atomic_writes_reads_and_ranges(tmp_path: Path):
    target = str(tmp_path / "out" / "documents" / "d1.json")
    storage.write_bytes(target, b"first")
    storage.write_bytes(target, b"0123456789")  # overwrite in place
    assert storage.read_bytes(target) == b"0123456789"
    assert storage.read_range(target, 2, 5) == b"234"
    with storage.open_read(target) as f:
        f.seek(8)
        assert f.read() == b"89"
    assert os.listdir(tmp_path / "out" / "documents") == ["d1.json"]  # no temp files left

    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3000))
    storage.write_file(storage.join(str(tmp_path / "out"), "copy.bin"), str(src))
    assert (tmp_path / "out" / "copy.bin").read_bytes() == src.read_bytes()
    assert storage.exists(target)
    storage.delete(target)
    storage.delete(target)  # idempotent, as on S3
    assert not storage.exists(target)


def test_local_missing_file_is_not_found_naming_the_path(tmp_path: Path):
    missing = str(tmp_path / "missing.pdf")
    with pytest.raises(NotFound, match="missing.pdf"):
        storage.read_bytes(missing)
    with pytest.raises(StorageError, match="missing.pdf"):
        storage.open_read(missing)


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "a/../../b",
        "/abs/path",
        "a//b",
        "./a",
        "a/.",
        "nul\x00byte",
        "tab\tname",
        "C:\\win",
        "a\\..\\b",
        "",
    ],
)
def test_traversal_and_odd_keys_are_rejected(tmp_path: Path, key: str):
    with pytest.raises(StorageError):
        storage.local_path_for(str(tmp_path), key)


def test_safe_keys_map_inside_the_root(tmp_path: Path):
    assert storage.safe_local_name("scans/2024/p 1.jpg") == os.path.join("scans", "2024", "p 1.jpg")
    path = storage.local_path_for(str(tmp_path), "scans/..hidden/ok..pdf")
    assert path == str(tmp_path / "scans" / "..hidden" / "ok..pdf")


def test_uri_helpers():
    assert storage.split_s3("s3://bucket/a/b.pdf") == ("bucket", "a/b.pdf")
    assert (
        storage.join("s3://bucket/out/", "words", "/part-0.parquet") == "s3://bucket/out/words/part-0.parquet"
    )
    assert storage.is_s3("s3://b") and not storage.is_s3("/data/s3://b")
    for bad in ("/local/path", "s3://", "s3:///key"):
        with pytest.raises(StorageError):
            storage.split_s3(bad)


def test_config_rejects_unknown_sse():
    with pytest.raises(StorageError, match="SSE"):
        StorageConfig(sse="rot13")
    assert StorageConfig(sse_kms_key_id="k").sse == "aws:kms"


# ---- S3 (moto over HTTP) ----------------------------------------------------------------------


def test_s3_listing_matches_local_order_and_filters(tree: Path, s3_tree: str):
    assert keys(s3_tree) == keys(str(tree)) == SORTED_KEYS
    assert keys(s3_tree.rstrip("/")) == SORTED_KEYS  # root without trailing slash is a folder too
    assert keys(s3_tree, include=["*.pdf"]) == ["a/x.pdf", "a0.pdf"]
    assert keys(s3_tree, include=["*.jpg", "*.tif"], exclude=["scans/2023/*"]) == [
        "scans/2024/p1.jpg",
        "scans/2024/p2.tif",
    ]
    one = list(storage.list_objects(s3_tree + "a0.pdf"))
    assert [(o.key, o.size) for o in one] == [("a0.pdf", len(TREE["a0.pdf"]))]
    obj = next(storage.list_objects(s3_tree))
    assert obj.uri == s3_tree + "a.txt" and obj.etag and '"' not in obj.etag and obj.last_modified > 0


def test_s3_listing_streams_pages(s3_tree: str, proxied: FaultProxy):
    storage.configure(StorageConfig(endpoint_url=proxied.url, list_page_size=2))
    listing = storage.list_objects(s3_tree)
    assert next(listing).key == "a.txt"
    assert len(_list_calls(proxied)) == 1  # a generator: only the first page fetched so far
    assert [o.key for o in listing] == SORTED_KEYS[1:]
    assert len(_list_calls(proxied)) == 4  # 7 keys, 2 per page


def test_s3_include_prefix_narrows_the_listing(s3_tree: str, proxied: FaultProxy):
    assert keys(s3_tree, include=["scans/2024/*"]) == ["scans/2024/p1.jpg", "scans/2024/p2.tif"]
    (query,) = _list_calls(proxied)
    assert query["prefix"] == ["in/scans/2024/"]


def _list_calls(proxy: FaultProxy) -> list[dict[str, list[str]]]:
    urls = [urlparse(path) for method, path in proxy.requests if method == "GET"]
    return [parse_qs(u.query) for u in urls if "list-type=2" in u.query]


def test_s3_reads_streaming_seek_and_ranges(s3_bucket: str):
    data = os.urandom(3 * 1024 * 1024 + 17)
    uri = f"s3://{s3_bucket}/docs/big.bin"
    storage.write_bytes(uri, data, content_type="application/octet-stream")
    assert storage.read_bytes(uri) == data
    assert storage.read_range(uri, 10, 20) == data[10:20]
    assert storage.read_range(uri, len(data) - 5, len(data) + 100) == data[-5:]
    assert storage.read_range(uri, len(data) + 10, len(data) + 20) == b""
    with storage.open_read(uri) as f:
        assert f.read(4) == data[:4]
        f.seek(-6, os.SEEK_END)
        assert f.read() == data[-6:]
        f.seek(1000)
        assert f.read(1000) == data[1000:2000]
    empty = f"s3://{s3_bucket}/docs/empty"
    storage.write_bytes(empty, b"")
    assert storage.read_bytes(empty) == b""


def test_s3_exists_delete_and_list_uris(s3_bucket: str):
    base = f"s3://{s3_bucket}/out/"
    for name in ("b.json", "a.json"):
        storage.write_bytes(base + "documents/" + name, b"{}")
    assert list(storage.list_uris(base)) == [base + "documents/a.json", base + "documents/b.json"]
    assert storage.exists(base + "documents/a.json")
    storage.delete(base + "documents/a.json")
    assert not storage.exists(base + "documents/a.json")


def test_s3_missing_object_fails_at_once_naming_the_uri(s3_bucket: str, proxied: FaultProxy):
    uri = f"s3://{s3_bucket}/nope/missing.pdf"
    with pytest.raises(NotFound, match=f"s3://{s3_bucket}/nope/missing.pdf"):
        storage.read_bytes(uri)
    assert len(proxied.requests) == 1  # a 404 is not retried
    with pytest.raises(NotFound, match="no-such-bucket"):
        list(storage.list_objects("s3://no-such-bucket/x/"))


def test_s3_writes_with_sse_s3(s3_endpoint: str, s3_bucket: str, fresh_storage):
    storage.configure(StorageConfig(sse="AES256"))
    storage.write_bytes(f"s3://{s3_bucket}/enc/a.json", b"{}", content_type="application/json")
    head = s3_client(s3_endpoint).head_object(Bucket=s3_bucket, Key="enc/a.json")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "application/json"


def test_s3_writes_with_sse_kms_single_and_multipart(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, fresh_storage
):
    key_id = boto3.client("kms", endpoint_url=s3_endpoint, region_name=REGION).create_key()["KeyMetadata"][
        "KeyId"
    ]
    storage.configure(
        StorageConfig(
            sse="aws:kms",
            sse_kms_key_id=key_id,
            multipart_threshold=5 * 1024 * 1024,
            multipart_chunksize=5 * 1024 * 1024,
        )
    )
    big = tmp_path / "big.parquet"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    storage.write_bytes(f"s3://{s3_bucket}/kms/small.json", b"{}")
    storage.write_file(f"s3://{s3_bucket}/kms/big.parquet", str(big))
    client = s3_client(s3_endpoint)
    for key in ("kms/small.json", "kms/big.parquet"):
        head = client.head_object(Bucket=s3_bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"].endswith(key_id)
    assert client.head_object(Bucket=s3_bucket, Key="kms/big.parquet")["ETag"].endswith('-3"')  # 3 parts
    assert storage.read_bytes(f"s3://{s3_bucket}/kms/big.parquet") == big.read_bytes()


def test_s3_retries_succeed_through_random_transient_faults(s3_bucket: str, proxied: FaultProxy):
    proxied.set_random(rate=0.35, seed=7)
    base = f"s3://{s3_bucket}/flaky/"
    payloads = {f"doc{i}.json": os.urandom(2000 + i) for i in range(4)}
    for name, data in payloads.items():
        storage.write_bytes(base + name, data)
    assert [o.key for o in storage.list_objects(base)] == sorted(payloads)
    for name, data in payloads.items():
        assert storage.read_bytes(base + name) == data
    assert len(proxied.faults) >= 3 and len(set(proxied.faults)) >= 2  # the seed gives a mix


def test_s3_read_resumes_after_a_truncated_body(s3_bucket: str, proxied: FaultProxy):
    data = os.urandom(1024 * 1024)
    uri = f"s3://{s3_bucket}/doc.pdf"
    storage.write_bytes(uri, data)
    proxied.requests.clear()
    proxied.fail_next("truncate")
    assert storage.read_bytes(uri) == data
    assert proxied.faults == ["truncate"]
    assert [m for m, _ in proxied.requests] == ["GET", "GET"]  # the first, then a resumed ranged GET


def test_s3_gives_up_after_max_attempts_with_a_clear_error(s3_bucket: str, proxied: FaultProxy):
    storage.configure(StorageConfig(endpoint_url=proxied.url, max_attempts=2))
    uri = f"s3://{s3_bucket}/out/part-0.parquet"
    proxied.fail_next("503", "503")
    with pytest.raises(StorageError, match=f"{uri}.*SlowDown") as err:
        storage.write_bytes(uri, b"x")
    assert "testing" not in str(err.value)  # the dummy key/secret never appear
    proxied.fail_next("reset", "reset")
    with pytest.raises(StorageError, match=uri):
        storage.write_bytes(uri, b"x")
    assert proxied.faults == ["503", "503", "reset", "reset"]


def test_s3_resumed_read_never_splices_two_versions(s3_bucket: str):
    uri = f"s3://{s3_bucket}/doc.pdf"
    size = 3 * 1024 * 1024  # over open_read's 1 MiB buffer
    storage.write_bytes(uri, b"A" * size)
    with storage.open_read(uri) as f:
        assert f.read(10) == b"A" * 10
        storage.write_bytes(uri, b"B" * size)  # replaced while we read
        f.seek(size - 100)  # past the buffer: a new ranged GET, pinned to the first ETag
        with pytest.raises(StorageError, match="changed while being read"):
            f.read(10)


def test_every_client_stack_error_is_classified():
    """Transient: the network's or S3's momentary fault. Permanent: the request's own."""
    import http.client
    import ssl

    import urllib3.exceptions
    from botocore import exceptions as be
    from botocore.exceptions import ClientError

    def client_error(code: str, status: int) -> ClientError:
        return ClientError(
            {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
            "GetObject",
        )

    transient = [
        client_error("SlowDown", 503),
        client_error("InternalError", 500),
        client_error("RequestTimeout", 400),
        client_error("Throttling", 400),
        client_error("Whatever", 502),
        client_error("TooManyRequests", 429),
        be.EndpointConnectionError(endpoint_url="http://x"),
        be.ReadTimeoutError(endpoint_url="x"),
        be.ConnectionClosedError(endpoint_url="x"),
        be.ResponseStreamingError(error="x"),
        be.IncompleteReadError(actual_bytes=1, expected_bytes=2),
        urllib3.exceptions.ProtocolError("Connection broken"),
        urllib3.exceptions.ReadTimeoutError(None, "", ""),
        http.client.IncompleteRead(b""),
        http.client.RemoteDisconnected("x"),
        ConnectionResetError(104, "reset"),
        TimeoutError("t"),
        ssl.SSLError("bad record"),
        storage.TruncatedBody("short"),
    ]
    permanent = [
        client_error("AccessDenied", 403),
        client_error("NoSuchBucket", 404),
        client_error("InvalidAccessKeyId", 403),
        client_error("PreconditionFailed", 412),
        be.NoCredentialsError(),
        be.ParamValidationError(report="bad"),
        FileNotFoundError(2, "no"),
        PermissionError(13, "no"),
        ValueError("bug"),
    ]
    assert [e for e in transient if not storage.is_transient(e)] == []
    assert [e for e in permanent if storage.is_transient(e)] == []
    for op, stage in (("read", "fetch"), ("list", "fetch"), ("write", "write"), ("delete", "write")):
        err = storage._error(op, "s3://b/k", transient[0])
        assert (err.stage, err.transient) == (stage, True)
    assert isinstance(storage._error("read", "s3://b/k", client_error("NoSuchKey", 404)), NotFound)


# ---- the backends ------------------------------------------------------------------------------


def test_the_backend_is_chosen_by_scheme():
    assert isinstance(storage.backend("s3://bucket/key"), storage.S3Storage)
    assert isinstance(storage.backend("/data/in/a.pdf"), storage.LocalStorage)
    assert isinstance(storage.backend("file:///data/in/a.pdf"), storage.LocalStorage)
    assert isinstance(storage.backend("relative/a.pdf"), storage.LocalStorage)


def test_the_module_functions_dispatch_to_the_backend(tmp_path: Path, monkeypatch):
    calls: list[str] = []

    class Recording(storage.LocalStorage):
        def __getattribute__(self, name: str):
            if not name.startswith("_"):
                calls.append(name)
            return super().__getattribute__(name)

    monkeypatch.setattr(storage, "LOCAL", Recording())
    uri, src = str(tmp_path / "out" / "a.bin"), tmp_path / "src.bin"
    src.write_bytes(b"0123456789")
    storage.write_file(uri, str(src))
    storage.write_bytes(uri, b"abcdef", "application/octet-stream")
    assert storage.read_bytes(uri) == b"abcdef" and storage.read_range(uri, 1, 3) == b"bc"
    with storage.open_read(uri) as f:
        assert f.read() == b"abcdef"
    assert storage.exists(uri) and [o.key for o in storage.list_objects(str(tmp_path / "out"))] == ["a.bin"]
    assert storage.create_if_absent(uri + ".x", b"1") and not storage.create_if_absent(uri + ".x", b"2")
    storage.delete(uri)
    assert calls == [
        "write_file",
        "write_bytes",
        "read_bytes",
        "read_range",
        "open_read",
        "exists",
        "list_objects",
        "create_if_absent",
        "create_if_absent",
        "delete",
    ]
    assert storage.read_range(uri, 2, 2) == b""  # empty ranges never reach a backend
    assert calls[-1] == "delete"
