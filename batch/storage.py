"""The one module for local paths and s3:// URIs.

Everything that lists, reads or writes inputs and outputs goes through here, so
retries, server-side encryption and path safety live in one place:

* `list_objects(root)` walks a folder or an S3 prefix recursively, in sorted key
  order, streaming (S3: one ListObjectsV2 page in memory at a time).
* Reads: `read_bytes`, `open_read` (streaming, seekable), `read_range`.
* Writes: `write_bytes`, `write_file` (multipart when large). Local writes are
  atomic (temp file in the same folder + os.replace); S3 writes carry the SSE
  settings of the process-wide `StorageConfig`.
* Two backends behind one interface: `Storage`, implemented by `LocalStorage` and
  `S3Storage`; `backend(uri)` picks one by the scheme and the module functions above
  dispatch to it, so callers never fork on the scheme.
* Failures surface as `batch.core.errors.StorageError` naming the URI (never the
  credentials) and the stage (`fetch` for reads and listings, `write` for writes and
  deletes); a missing object is `NotFound`, raised at once, not retried.

Every error the S3 client stack can raise (botocore, urllib3, http.client, socket, SSL,
a body shorter than its Content-Length) is classified by `is_transient`: 5xx, throttling,
resets, timeouts and truncated bodies are retried here, in one loop per API call
(`_s3_call`: exponential backoff with full jitter, `max_attempts` tries; botocore's own
retries are off so the two never multiply), and `_S3Reader` resumes a body that breaks
mid-stream with a ranged GET pinned to the same ETag. Anything else is permanent and
raised at once.
"""

from __future__ import annotations

import argparse
import fnmatch
import http.client
import io
import os
import random
import shutil
import stat
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

import boto3
import urllib3.exceptions
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore import exceptions as boto_errors
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from batch.core.errors import StorageError

S3_SCHEME = "s3://"
SSE_MODES = ("AES256", "aws:kms")
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
# Error codes / HTTP statuses worth another try (AWS's own retryable list, and 5xx / 429).
_TRANSIENT_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestTimeout",
    "RequestTimeoutException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "PriorRequestNotComplete",
    "OperationAborted",
    "IDPCommunicationError",
    "ConditionalRequestConflict",
}
# botocore errors that are the network's fault, not the request's.
_TRANSIENT_BOTO = (
    boto_errors.ConnectionError,
    boto_errors.HTTPClientError,
    boto_errors.IncompleteReadError,
    ResponseParserError,
    boto_errors.ChecksumError,
)
_PERMANENT_WORDS = (
    "AccessDenied",
    "NoSuchBucket",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NoSuchKey",
    "InvalidBucketName",
    "AllAccessDisabled",
)
MiB = 1024 * 1024


class NotFound(StorageError):
    """The object, file or bucket does not exist (S3 404 / NoSuchKey / ENOENT)."""


# ---- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageConfig:
    endpoint_url: str | None = None  # else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / AWS
    region: str | None = None  # else boto3's chain (AWS_REGION, ~/.aws/config, ...)
    sse: str | None = None  # None | "AES256" | "aws:kms", applied to every write
    sse_kms_key_id: str | None = None  # implies sse="aws:kms"
    max_attempts: int = 5  # per API call and per body resume, first try included
    retry_mode: str = "standard"  # botocore: "standard" or "adaptive" (client-side rate
    # limit); botocore itself makes one attempt, we retry
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    backoff_base: float = 0.25  # seconds; body-resume backoff = base * 2**n * jitter
    list_page_size: int = 1000  # ListObjectsV2 MaxKeys
    multipart_threshold: int = 64 * MiB
    multipart_chunksize: int = 16 * MiB
    max_pool_connections: int = 32  # one client for all threads (I/O pool, decoders, main)

    def __post_init__(self) -> None:
        if self.sse_kms_key_id and self.sse is None:
            object.__setattr__(self, "sse", "aws:kms")
        if self.sse not in (None, *SSE_MODES):
            raise StorageError(f"unknown SSE mode {self.sse!r}: use one of {', '.join(SSE_MODES)}")
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise StorageError("--sse-kms-key-id needs --sse aws:kms")
        if self.max_attempts < 1:
            raise StorageError("max_attempts must be >= 1")

    @classmethod
    def from_env(cls) -> StorageConfig:
        """Defaults for processes configured only by environment (e.g. SageMaker containers)."""
        env = os.environ
        return cls(
            sse=env.get("HTR_S3_SSE") or None,
            sse_kms_key_id=env.get("HTR_S3_SSE_KMS_KEY_ID") or None,
            max_attempts=int(env.get("HTR_S3_MAX_ATTEMPTS", "5")),
            connect_timeout=float(env.get("HTR_S3_CONNECT_TIMEOUT", "10")),
            read_timeout=float(env.get("HTR_S3_READ_TIMEOUT", "60")),
            backoff_base=float(env.get("HTR_S3_BACKOFF_BASE", "0.25")),
        )

    def sse_args(self) -> dict[str, str]:
        """boto3 ExtraArgs for PutObject / CreateMultipartUpload."""
        args: dict[str, str] = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.sse_kms_key_id
        return args


_config: StorageConfig | None = None
_generation = 0  # bumped by configure(): per-thread clients rebuild lazily
_client: tuple[tuple, boto3.session.Session, Any] | None = None  # (settings key, session, client)
_client_lock = threading.Lock()


def configure(cfg: StorageConfig) -> None:
    """Set the process-wide storage settings (call once, early; tests may call again)."""
    global _config, _generation
    _config = cfg
    _generation += 1


def get_config() -> StorageConfig:
    global _config
    if _config is None:
        _config = StorageConfig.from_env()
    return _config


def add_arguments(parser: argparse.ArgumentParser, writes: bool = True) -> None:
    """The S3 flags shared by every command that touches storage (SSE only if it writes)."""
    g = parser.add_argument_group("S3")
    g.add_argument("--s3-endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)")
    if writes:
        g.add_argument("--sse", choices=SSE_MODES, help="server-side encryption for every object written")
        g.add_argument("--sse-kms-key-id", help="KMS key id/ARN for --sse aws:kms")


def configure_from_args(args: argparse.Namespace) -> None:
    base = StorageConfig.from_env()
    configure(
        replace(
            base,
            endpoint_url=getattr(args, "s3_endpoint_url", None) or base.endpoint_url,
            sse=getattr(args, "sse", None) or base.sse,
            sse_kms_key_id=getattr(args, "sse_kms_key_id", None) or base.sse_kms_key_id,
        )
    )


def endpoint_url() -> str | None:
    """The S3 endpoint in force: config first, then the standard AWS environment variables."""
    env = os.environ
    return get_config().endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def session() -> boto3.session.Session:
    """The process's boto3 session (credentials and region from boto3's usual chain)."""
    return _shared_client()[0]


def client():
    """The S3 client, with the retry, timeout and endpoint settings in force."""
    return _shared_client()[1]


def _shared_client() -> tuple[boto3.session.Session, Any]:
    """One session and client for all threads: botocore clients are thread-safe, while
    creating one costs ~0.3 s of CPU (service model loading), which a client per thread
    paid again in every pool thread. Built under a lock (sessions themselves are not
    thread-safe), again whenever the settings change."""
    global _client
    cfg, endpoint = get_config(), endpoint_url()
    key = (_generation, endpoint, cfg.region)
    current = _client
    if current is not None and current[0] == key:
        return current[1], current[2]
    with _client_lock:
        if _client is None or _client[0] != key:
            boto_cfg = BotoConfig(
                retries={"mode": cfg.retry_mode, "total_max_attempts": 1},  # _s3_call retries
                connect_timeout=cfg.connect_timeout,
                read_timeout=cfg.read_timeout,
                max_pool_connections=cfg.max_pool_connections,
                # Custom endpoints (moto, MinIO) rarely resolve <bucket>.<host>: path-style there.
                s3={"addressing_style": "path"} if endpoint else None,
                user_agent_extra="htr-batch",
            )
            sess = boto3.session.Session(region_name=cfg.region)
            _client = (key, sess, sess.client("s3", endpoint_url=endpoint, config=boto_cfg))
        return _client[1], _client[2]


# ---- URIs -------------------------------------------------------------------------------------


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b' -> ('bucket', 'a/b')."""
    if not is_s3(uri):
        raise StorageError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"no bucket in {uri}")
    return bucket, key


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or s3:// URI ('/'-separated for S3)."""
    if not is_s3(base):
        return os.path.join(_local_path(base), *parts)
    out = base
    for part in parts:
        out = out.rstrip("/") + "/" + part.lstrip("/")
    return out


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def safe_local_name(key: str) -> str:
    """A relative local path for an object key; raises StorageError for anything that
    could escape the folder it is joined onto or confuse the filesystem."""
    if not key or key.startswith("/") or "\\" in key or (len(key) > 1 and key[1] == ":"):
        raise StorageError(f"unsafe object key {key!r}: empty, absolute or with backslashes")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise StorageError(f"unsafe object key {key!r}: control characters")
    segments = key.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise StorageError(f"unsafe object key {key!r}: empty, '.' or '..' path segment")
    if any(len(s.encode()) > 255 for s in segments):
        raise StorageError(f"unsafe object key {key[:80]!r}...: path segment over 255 bytes")
    return os.path.join(*segments)


def local_path_for(root: str, key: str) -> str:
    """root/<key> for an untrusted key, guaranteed to stay inside root."""
    root_abs = os.path.abspath(_local_path(root))
    path = os.path.abspath(os.path.join(root_abs, safe_local_name(key)))
    if os.path.commonpath([root_abs, path]) != root_abs:  # belt and braces
        raise StorageError(f"object key {key!r} escapes {root}")
    return path


# ---- errors -----------------------------------------------------------------------------------


class TruncatedBody(Exception):
    """A response body ended before its Content-Length / range (a dropped connection)."""


_STAGES = {"read": "fetch", "head": "fetch", "list": "fetch", "write": "write", "delete": "write"}


def stage_of(op: str) -> str:
    return _STAGES.get(op, "fetch")


def is_transient(exc: BaseException) -> bool:
    """Worth another try? 5xx, 429, throttling, connection resets and timeouts, socket and SSL
    errors, truncated bodies: yes. Missing, denied, invalid, local-file errors: no."""
    if isinstance(exc, StorageError):
        return exc.transient
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return _error_code(exc) in _TRANSIENT_CODES or status >= 500 or status == 429
    if isinstance(exc, _TRANSIENT_BOTO):
        return True
    if isinstance(exc, (BotoCoreError, FileNotFoundError, PermissionError)):
        return False  # no credentials, bad parameters, ...; a local file's own problem
    if isinstance(exc, Boto3Error):  # s3transfer wraps the real cause in its message
        return not any(w in str(exc) for w in _PERMANENT_WORDS)
    return isinstance(exc, (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, TruncatedBody))


def _error(op: str, uri: str, exc: BaseException) -> StorageError:
    """A StorageError naming the operation, URI and stage, classified transient or not;
    messages come from error codes, and are scrubbed of URL credentials anyway."""
    if isinstance(exc, StorageError):
        return exc
    stage, transient = stage_of(op), is_transient(exc)
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"{op}: no such file {uri}", stage)
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = _error_code(exc)
        if code in _NOT_FOUND_CODES:
            return NotFound(f"{op}: no such object {uri} ({code})", stage)
        return StorageError(f"{op} {uri} failed: {code} {err.get('Message', '')}".rstrip(), stage, transient)
    if isinstance(exc, OSError) and not is_s3(uri):
        return StorageError(
            f"{op} {uri} failed: {exc.strerror or type(exc).__name__}", stage, transient=False
        )
    return StorageError(f"{op} {uri} failed: {type(exc).__name__}: {exc}", stage, transient)


def _error_code(exc: ClientError) -> str:
    err, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
    return str(err.get("Code") or meta.get("HTTPStatusCode") or "unknown")


def _s3_call(op: str, uri: str, fn: Callable, **kwargs):
    """One S3 API call, retried while its failures are transient (whatever layer of the
    client stack raised them), with errors mapped to StorageError."""
    cfg = get_config()
    for attempt in range(1, cfg.max_attempts + 1):
        try:
            return fn(**kwargs)
        except Exception as e:  # noqa: BLE001 - every error is classified, none escapes raw
            err = _error(op, uri, e)
            if not err.transient:
                raise err from e
            if attempt == cfg.max_attempts:
                raise _exhausted(err, attempt) from e
            _backoff(attempt, cfg)


def _exhausted(err: StorageError, attempts: int) -> StorageError:
    """The last transient error, saying how often it was tried (still transient: a later
    round, or the next run, may well succeed)."""
    if attempts <= 1:
        return err
    return type(err)(f"{err} (after {attempts} attempts)", err.stage, transient=True)


def _backoff(attempt: int, cfg: StorageConfig) -> None:
    """Exponential backoff with full jitter, capped at 20 s like botocore's."""
    time.sleep(min(20.0, cfg.backoff_base * 2**attempt) * random.random())


# ---- listing ----------------------------------------------------------------------------------


@dataclass
class SourceObject:
    uri: str
    key: str  # relative to the listed root, '/'-separated
    size: int
    etag: str  # S3 ETag (unquoted); local: f"{mtime_ns}-{size}", cheap change detector
    last_modified: float  # POSIX seconds


def list_objects(
    root_uri: str, include: list[str] | None = None, exclude: list[str] | None = None
) -> Iterator[SourceObject]:
    """Every object under a folder / S3 prefix, recursively, sorted by key.

    `include` / `exclude` are fnmatch globs on the relative key ('*' also matches '/',
    so '*.pdf' finds PDFs at any depth; case-sensitive, like S3 keys). A root that is a
    single file/object yields just that one.
    """
    objects = backend(root_uri).list_objects(root_uri, include)
    for obj in objects:
        if _wanted(obj.key, include, exclude):
            yield obj


def list_uris(prefix_uri: str) -> Iterator[str]:
    """URIs of every object under a folder / S3 prefix, sorted."""
    return (o.uri for o in list_objects(prefix_uri))


def _wanted(key: str, include: list[str] | None, exclude: list[str] | None) -> bool:
    if include and not any(fnmatch.fnmatchcase(key, p) for p in include):
        return False
    return not (exclude and any(fnmatch.fnmatchcase(key, p) for p in exclude))


def _list_local(root_uri: str) -> Iterator[SourceObject]:
    root = _local_path(root_uri)
    if os.path.isfile(root):
        yield _local_object(root, os.path.basename(root), os.stat(root))
        return
    if not os.path.isdir(root):
        raise NotFound(f"list: no such folder {root_uri}")
    yield from _walk_sorted(root, "")


def _walk_sorted(folder: str, rel: str) -> Iterator[SourceObject]:
    """Depth-first walk whose output is in full-key order: a folder sorts as 'name/',
    exactly where its keys fall among its siblings ('a.txt' < 'a/x' < 'a0').

    Nothing in the tree stops the walk: symlinked folders are not followed (no loops); a
    link that cannot be resolved (dangling, a loop, no permission) is still listed, so its
    read fails and it gets an error record naming it; FIFOs, sockets and devices are
    skipped (reading one could block forever); an unreadable sub-folder is skipped with a
    warning. Only an unreadable root is an error."""
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        if not rel:
            raise _error("list", folder, e) from e
        print(f"htr: warning: skipped folder {folder}: {e.strerror or type(e).__name__}", file=sys.stderr)
        return
    kinds = {e.name: _entry_kind(e) for e in entries}
    for entry in sorted(entries, key=lambda e: e.name + "/" if kinds[e.name][0] == "dir" else e.name):
        key, (kind, st) = rel + entry.name, kinds[entry.name]
        if kind == "dir":
            yield from _walk_sorted(entry.path, key + "/")
        elif kind == "file" and st is not None:  # a file always comes with its stat
            yield _local_object(entry.path, key, st)
        elif kind == "broken":  # size 0 and a fixed etag: it fails at fetch, every run
            yield SourceObject(uri=entry.path, key=key, size=0, etag="unresolvable-link", last_modified=0.0)


def _entry_kind(entry: os.DirEntry) -> tuple[str, os.stat_result | None]:
    """('dir' | 'file' | 'broken' | 'skip', stat of the target)."""
    try:
        if entry.is_dir(follow_symlinks=False):
            return "dir", None
        st = entry.stat()  # follows a symlink: ELOOP, ENOENT, EACCES surface here
    except OSError:
        return ("broken", None) if _is_link(entry) else ("skip", None)
    return ("file", st) if stat.S_ISREG(st.st_mode) else ("skip", None)


def _is_link(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _local_object(path: str, key: str, st: os.stat_result) -> SourceObject:
    return SourceObject(
        uri=path, key=key, size=st.st_size, etag=f"{st.st_mtime_ns}-{st.st_size}", last_modified=st.st_mtime
    )


def _list_s3(root_uri: str, include: list[str] | None) -> Iterator[SourceObject]:
    bucket, prefix = split_s3(root_uri)
    folder = prefix if prefix == "" or prefix.endswith("/") else prefix + "/"
    found = False
    for item in _list_pages(bucket, folder + _include_prefix(include), root_uri):
        found = True
        if not item["Key"].endswith("/"):  # skip console-made "folder" markers
            yield _s3_object(bucket, item, item["Key"][len(folder) :])
    if not found and folder != prefix:  # the root may be a single object
        head = _head_or_none(root_uri)
        if head is not None:
            item = {
                "Key": prefix,
                "Size": head["ContentLength"],
                "ETag": head["ETag"],
                "LastModified": head["LastModified"],
            }
            yield _s3_object(bucket, item, prefix.rsplit("/", 1)[-1])


def _list_pages(bucket: str, prefix: str, root_uri: str) -> Iterator[dict]:
    """ListObjectsV2, one page at a time (keys come back in UTF-8 binary order)."""
    kwargs = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": get_config().list_page_size}
    while True:
        page = _s3_call("list", root_uri, client().list_objects_v2, **kwargs)
        yield from page.get("Contents", [])
        if not page.get("IsTruncated"):
            return
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def _include_prefix(include: list[str] | None) -> str:
    """The literal key prefix every include glob shares, to narrow the S3 listing."""
    if not include:
        return ""
    literal = [p[: min((p.find(c) for c in "*?[" if c in p), default=len(p))] for p in include]
    return os.path.commonprefix(literal)


def _s3_object(bucket: str, item: dict, key: str) -> SourceObject:
    return SourceObject(
        uri=f"{S3_SCHEME}{bucket}/{item['Key']}",
        key=key,
        size=int(item["Size"]),
        etag=item["ETag"].strip('"'),
        last_modified=item["LastModified"].timestamp(),
    )


# ---- reads ------------------------------------------------------------------------------------


def read_bytes(uri: str) -> bytes:
    return backend(uri).read_bytes(uri)


def read_range(uri: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of an object (an S3 ranged GET); shorter if the object is."""
    if start < 0 or end < start:
        raise StorageError(f"bad range [{start}, {end}) for {uri}")
    if start == end:
        return b""
    return backend(uri).read_range(uri, start, end)


def open_read(uri: str) -> BinaryIO:
    """A streaming, seekable binary file for a local file or S3 object; use as a context manager."""
    return backend(uri).open_read(uri)


def exists(uri: str) -> bool:
    return backend(uri).exists(uri)


def _head_or_none(uri: str) -> dict | None:
    bucket, key = split_s3(uri)
    try:
        return _s3_call("head", uri, client().head_object, Bucket=bucket, Key=key)
    except NotFound:
        return None


class _S3Reader(io.RawIOBase):
    """A read-only S3 object stream that survives broken connections.

    botocore retries the GET call itself; once the body is streaming, a reset or
    truncated response surfaces here instead, and we re-issue a ranged GET from the
    current position with If-Match on the first response's ETag, so a resumed read
    can never splice two versions of an object together.
    """

    def __init__(self, uri: str, start: int = 0, end: int | None = None):
        super().__init__()
        self._body: Any = None  # the GetObject streaming body while one is open
        self.uri = uri
        self.bucket, self.key = split_s3(uri)
        self.pos, self.end = start, end  # end: exclusive bound, None = to EOF
        self.size: int | None = None
        self.etag: str | None = None
        self._open_body()  # fail fast (e.g. NotFound) at open time

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.pos
        elif whence == io.SEEK_END:
            offset += self._size()
        if offset < 0:
            raise StorageError(f"negative seek position in {self.uri}")
        if offset != self.pos:
            self._close_body()
            self.pos = offset
        return self.pos

    def readinto(self, buf) -> int:
        cfg, failures = get_config(), 0
        while True:
            if self._at_end() or len(buf) == 0:
                return 0
            if self._body is None:
                self._open_body()  # retried inside; a StorageError here is final
                if self._at_end():
                    return 0
            try:
                n = self._body.readinto(buf)
                if n == 0 and self._limit() is not None:  # EOF before the promised end
                    raise TruncatedBody(f"body ended at byte {self.pos} of {self._limit()}")
                self.pos += n
                return n
            except Exception as e:  # noqa: BLE001 - classified: transient ones resume
                self._close_body()
                err = _error("read", self.uri, e)
                failures += 1
                if not err.transient:
                    raise err from e
                if failures >= cfg.max_attempts:
                    raise _exhausted(err, failures) from e
                _backoff(failures, cfg)

    def readall(self) -> bytes:
        out = bytearray()
        while not self._at_end():
            chunk = bytearray(min(4 * MiB, self._remaining()))  # small objects, small buffers
            n = self.readinto(chunk)
            if n == 0:
                break
            out += memoryview(chunk)[:n]
        return bytes(out)

    def close(self) -> None:
        self._close_body()
        super().close()

    def _limit(self) -> int | None:
        """Where reading stops: the range end, the object size, whichever is known and smaller."""
        known = [v for v in (self.end, self.size) if v is not None]
        return min(known) if known else None

    def _at_end(self) -> bool:
        limit = self._limit()
        return limit is not None and self.pos >= limit

    def _remaining(self) -> int:
        limit = self._limit()
        return 4 * MiB if limit is None else max(1, limit - self.pos)

    def _size(self) -> int:
        if self.size is None:
            head = _s3_call("head", self.uri, client().head_object, Bucket=self.bucket, Key=self.key)
            self.size = int(head["ContentLength"])
        return self.size

    def _open_body(self) -> None:
        if self._at_end():
            return
        kwargs = {"Bucket": self.bucket, "Key": self.key}
        if self.pos > 0 or self.end is not None:
            kwargs["Range"] = f"bytes={self.pos}-{'' if self.end is None else self.end - 1}"
        if self.etag:
            kwargs["IfMatch"] = self.etag
        resp = _s3_call("read", self.uri, self._get, **kwargs)
        if resp is None:  # started at/after EOF: nothing left to read
            self.size = self.pos
            return
        self.etag = self.etag or resp["ETag"]
        self.size = _total_size(resp)
        self._body = resp["Body"]

    def _get(self, **kwargs) -> dict | None:
        try:
            return client().get_object(**kwargs)
        except ClientError as e:
            code = _error_code(e)
            if code == "InvalidRange":
                return None
            if code == "PreconditionFailed":
                raise StorageError(f"read {self.uri} failed: object changed while being read") from e
            raise

    def _close_body(self) -> None:
        if self._body is not None:
            try:
                self._body.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close too
                pass
            self._body = None


def _total_size(resp: dict) -> int:
    """Object size from a (ranged) GetObject response: 'bytes a-b/TOTAL' or ContentLength."""
    content_range = resp.get("ContentRange")
    if content_range and "/" in content_range:
        return int(content_range.rsplit("/", 1)[1])
    return int(resp["ContentLength"])


# ---- writes -----------------------------------------------------------------------------------


def write_bytes(uri: str, data: bytes, content_type: str | None = None) -> None:
    backend(uri).write_bytes(uri, data, content_type)


def write_file(uri: str, local_path: str, content_type: str | None = None) -> None:
    """Upload/copy a local file; S3 switches to multipart above cfg.multipart_threshold."""
    backend(uri).write_file(uri, local_path, content_type)


def delete(uri: str) -> None:
    """Remove an object/file; deleting something absent is not an error (as on S3)."""
    backend(uri).delete(uri)


def _atomic_local_write(uri: str, write: Callable[[BinaryIO], object]) -> None:
    """Readers see the old file or the whole new one, never a torn write: write a hidden
    temp file in the same folder (same filesystem), fsync, then os.replace."""
    path = _local_path(uri)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")  # never matches *.parquet
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise _error("write", uri, e) from e
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


# ---- put-if-absent (the ledger's commit point) ------------------------------------------------

_CONFLICT_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def create_if_absent(uri: str, data: bytes) -> bool:
    """Write `data` at `uri` only if nothing is there; False if something was.

    S3: PutObject with If-None-Match: * (conditional writes). Local: write a temp file and
    hard-link it into place, which fails atomically if the name exists."""
    return backend(uri).create_if_absent(uri, data)


def _create_s3(uri: str, data: bytes) -> bool:
    """A retried PUT whose first try did land answers 412: the caller tells its own entry
    from another writer's by the token inside (batch.ledger)."""
    bucket, key = split_s3(uri)

    def put() -> bool:
        try:
            client().put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                IfNoneMatch="*",
                ContentType="application/json",
                **get_config().sse_args(),
            )
            return True
        except ClientError as e:
            if _error_code(e) in _CONFLICT_CODES:
                return False
            raise

    return _s3_call("write", uri, put)


# ---- the two backends -------------------------------------------------------------------------


class Storage(ABC):
    """What a storage backend does. The module's functions (list_objects, read_bytes, ...)
    pick one with `backend(uri)` by the URI's scheme and keep the checks common to both."""

    @abstractmethod
    def list_objects(self, root_uri: str, include: list[str] | None) -> Iterator[SourceObject]:
        """Every object under root_uri in key order; `include` may narrow an S3 listing."""

    @abstractmethod
    def read_bytes(self, uri: str) -> bytes: ...

    @abstractmethod
    def read_range(self, uri: str, start: int, end: int) -> bytes:
        """Bytes [start, end), 0 <= start < end (checked by the caller)."""

    @abstractmethod
    def open_read(self, uri: str) -> BinaryIO: ...

    @abstractmethod
    def exists(self, uri: str) -> bool: ...

    @abstractmethod
    def write_bytes(self, uri: str, data: bytes, content_type: str | None) -> None: ...

    @abstractmethod
    def write_file(self, uri: str, local_path: str, content_type: str | None) -> None: ...

    @abstractmethod
    def delete(self, uri: str) -> None: ...

    @abstractmethod
    def create_if_absent(self, uri: str, data: bytes) -> bool: ...


class LocalStorage(Storage):
    """Local paths and file:// URIs: atomic writes (temp file + os.replace), put-if-absent by
    hard link."""

    def list_objects(self, root_uri: str, include: list[str] | None) -> Iterator[SourceObject]:
        return _list_local(root_uri)

    def read_bytes(self, uri: str) -> bytes:
        try:
            with open(_local_path(uri), "rb") as f:
                return f.read()
        except OSError as e:
            raise _error("read", uri, e) from e

    def read_range(self, uri: str, start: int, end: int) -> bytes:
        try:
            with open(_local_path(uri), "rb") as f:
                f.seek(start)
                return f.read(end - start)
        except OSError as e:
            raise _error("read", uri, e) from e

    def open_read(self, uri: str) -> BinaryIO:
        try:
            return open(_local_path(uri), "rb")
        except OSError as e:
            raise _error("read", uri, e) from e

    def exists(self, uri: str) -> bool:
        return os.path.exists(_local_path(uri))

    def write_bytes(self, uri: str, data: bytes, content_type: str | None) -> None:
        _atomic_local_write(uri, lambda f: f.write(data))

    def write_file(self, uri: str, local_path: str, content_type: str | None) -> None:
        def copy(f: BinaryIO) -> None:
            with open(local_path, "rb") as src:
                shutil.copyfileobj(src, f, MiB)

        _atomic_local_write(uri, copy)

    def delete(self, uri: str) -> None:
        try:
            os.remove(_local_path(uri))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _error("delete", uri, e) from e

    def create_if_absent(self, uri: str, data: bytes) -> bool:
        path = _local_path(uri)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            raise StorageError(f"write {uri} failed: {e.strerror or type(e).__name__}", "write") from e
        finally:
            try:
                os.remove(tmp)
            except OSError:
                pass


class S3Storage(Storage):
    """s3:// URIs through the shared client: every call retried by _s3_call, bodies resumed by
    _S3Reader, writes with the configured SSE, put-if-absent by If-None-Match."""

    def list_objects(self, root_uri: str, include: list[str] | None) -> Iterator[SourceObject]:
        return _list_s3(root_uri, include)

    def read_bytes(self, uri: str) -> bytes:
        with _S3Reader(uri) as reader:
            return reader.readall()

    def read_range(self, uri: str, start: int, end: int) -> bytes:
        with _S3Reader(uri, start=start, end=end) as reader:
            return reader.readall()

    def open_read(self, uri: str) -> BinaryIO:
        return io.BufferedReader(_S3Reader(uri), buffer_size=MiB)

    def exists(self, uri: str) -> bool:
        return _head_or_none(uri) is not None

    def write_bytes(self, uri: str, data: bytes, content_type: str | None) -> None:
        bucket, key = split_s3(uri)
        extra = {"ContentType": content_type} if content_type else {}
        _s3_call(
            "write",
            uri,
            client().put_object,
            Bucket=bucket,
            Key=key,
            Body=data,
            **extra,
            **get_config().sse_args(),
        )

    def write_file(self, uri: str, local_path: str, content_type: str | None) -> None:
        cfg = get_config()
        bucket, key = split_s3(uri)
        extra = {**cfg.sse_args(), **({"ContentType": content_type} if content_type else {})}
        transfer = TransferConfig(
            multipart_threshold=cfg.multipart_threshold, multipart_chunksize=cfg.multipart_chunksize
        )
        try:
            with open(local_path, "rb"):
                pass  # the local source's own problems are permanent, and not S3's
        except OSError as e:
            raise _error("write", local_path, e) from e
        _s3_call(
            "write",
            uri,
            client().upload_file,
            Filename=local_path,
            Bucket=bucket,
            Key=key,
            ExtraArgs=extra,
            Config=transfer,
        )

    def delete(self, uri: str) -> None:
        bucket, key = split_s3(uri)
        _s3_call("delete", uri, client().delete_object, Bucket=bucket, Key=key)

    def create_if_absent(self, uri: str, data: bytes) -> bool:
        return _create_s3(uri, data)


LOCAL: Storage = LocalStorage()
S3: Storage = S3Storage()


def backend(uri: str) -> Storage:
    """S3 for s3:// URIs, the local filesystem for everything else."""
    return S3 if is_s3(uri) else LOCAL
