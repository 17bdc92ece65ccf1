"""Shared by test_worker_s3.py and test_exactly_once.py: documents, models that always find a
word, `htr run` in-process or as a subprocess, and the exactly-once checker."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFont

from batch import storage
from batch.core.ids import doc_id_for as doc_id
from batch.outputs import read_documents, read_ledger, read_table
from tests.s3_server import s3_client

SUMMARY = re.compile(
    r"htr run: (?P<documents>\d+) documents, (?P<pages>\d+) pages, (?P<words>\d+) "
    r"words, (?P<skipped>\d+) skipped, (?P<errors>\d+) errors in "
)


# ---- inputs ------------------------------------------------------------------------------------


def bold_font(size: int):
    """DejaVu (Debian fonts-dejavu-core) for printed test pages; Pillow's own font without it."""
    for path in (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def png(seed: int, size: tuple[int, int] = (48, 72)) -> bytes:
    """A small noise page: distinct bytes (so a distinct doc_id) for every seed."""
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def pdf(seed: int, pages: int = 2) -> bytes:
    images = [Image.open(io.BytesIO(png(seed * 100 + i))).convert("RGB") for i in range(pages)]
    buf = io.BytesIO()
    images[0].save(buf, format="PDF", save_all=True, append_images=images[1:], resolution=72)
    return buf.getvalue()


BAD = b"this is no document"

# key -> bytes: 4 images, a 2-page PDF, one that fails in decoding
DOCS = {
    "a.png": png(1),
    "b.png": png(2),
    "sub/c.png": png(3),
    "d.png": png(4),
    "e.pdf": pdf(5),
    "zz-bad.pdf": BAD,
}


def upload(endpoint: str, bucket: str, prefix: str, docs: dict[str, bytes]) -> None:
    client = s3_client(endpoint)
    for key, data in docs.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}{key}", Body=data)


# ---- models ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def one_word_models(constant_models: Path, tmp_path_factory) -> Path:
    """conftest's constant_models (every page is one word box, read as "x..."), with a 64 px
    segmenter input: our pages are tiny, so 25x less work per page. Every page then has a
    word, so the words/ checks bite. conftest registers this module as a
    plugin, so every test module can use the fixture."""
    out = tmp_path_factory.mktemp("one-word-models")
    for f in constant_models.iterdir():
        shutil.copy(f, out / f.name)
    meta = json.loads((out / "segmenter.json").read_text())
    meta["config"]["input_long_side"] = 64
    (out / "segmenter.json").write_text(json.dumps(meta))
    return out


# ---- running -----------------------------------------------------------------------------------


def htr_inprocess(capsys, *argv: str | Path) -> tuple[int, dict[str, int]]:
    """`htr ...` in this process (no torch import per run); returns (exit code, summary)."""
    from batch.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, summary(out, err)


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment (the S3 fixtures put the endpoint there) for a child."""
    repo = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


def python_subprocess(argv: list[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, argv)],
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def htr_subprocess(argv: list[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """`htr ...` as a child process (`python -m batch.cli`), extra environment in **env."""
    return python_subprocess(["-m", "batch.cli", *argv], timeout, **env)


def summary(stdout: str, stderr: str = "") -> dict[str, int]:
    m = SUMMARY.search(stdout)
    assert m, f"no summary line in {stdout!r}; stderr: {stderr[-3000:]}"
    return {k: int(v) for k, v in m.groupdict().items()}


def listing(out: str) -> dict[str, str]:
    """Every object under OUT -> its ETag / local mtime+size (to see that nothing changed)."""
    try:
        return {o.uri: o.etag for o in storage.list_objects(out)}
    except storage.NotFound:
        return {}


# ---- the exactly-once check ----------------------------------------------------------------------


def assert_exactly_once(
    out: str,
    sources: Mapping[str, bytes | None],
    bad: set[str] | frozenset[str] = frozenset(),
    committed_only: bool = False,
    words_everywhere: bool = True,
) -> None:
    """OUT holds each source exactly once: an ok source (uri -> its current bytes) has one
    documents JSON, one pages row per page and one words row per word of that JSON, and no
    error row; a bad one exactly one error row and nothing else. No rows of anything else,
    no duplicate keys. committed_only: judge by the ledger's parts (before a recovery).
    words_everywhere: every page has a word (text_everywhere_models), so word checks bite."""
    words = read_table(out, "words", committed=committed_only).to_pylist()
    pages = read_table(out, "pages", committed=committed_only).to_pylist()
    errors = read_table(out, "errors", committed=committed_only).to_pylist()
    docs = {d["doc_id"]: d for d in read_documents(out)}
    for table, rows in (("words", words), ("pages", pages), ("errors", errors)):
        extra = {r["source_uri"] for r in rows} - set(sources)
        assert not extra, f"{table} has rows of unknown sources {extra}"
    word_keys = Counter((r["doc_id"], r["page"], r["word_idx"]) for r in words)
    assert max(word_keys.values(), default=1) == 1, "duplicate (doc_id, page, word_idx) in words"
    page_keys = Counter((r["doc_id"], r["page"]) for r in pages)
    assert max(page_keys.values(), default=1) == 1, "duplicate (doc_id, page) in pages"
    state = read_ledger(out)
    for uri, data in sources.items():
        errs = [r for r in errors if r["source_uri"] == uri]
        src_pages = [r for r in pages if r["source_uri"] == uri]
        src_words = [r for r in words if r["source_uri"] == uri]
        if uri in bad:
            assert len(errs) == 1, f"{uri}: {len(errs)} error rows"
            assert not src_pages and not src_words, f"{uri} failed but has pages/words rows"
            continue
        assert not errs, f"{uri} is ok but has error rows {errs}"
        assert data is not None, f"{uri}: ok without bytes"
        did, done = doc_id(data), state.sources[uri]
        assert done.status == "ok" and done.doc_id == did, f"{uri}: ledger has {done}"
        assert len(src_pages) == done.pages >= 1, f"{uri}: {len(src_pages)} pages rows, ledger {done}"
        assert {r["doc_id"] for r in src_pages} == {did}, f"{uri}: pages of an older version"
        assert len(src_words) == done.words, f"{uri}: {len(src_words)} words rows, ledger {done}"
        assert not words_everywhere or len(src_words) >= len(src_pages), f"{uri}: pages without words"
        if not committed_only:  # JSON is published just after the commit
            assert did in docs, f"{uri}: no documents/{did}.json"
            json_words = sum(len(ln["words"]) for p in docs[did]["pages"] for ln in p["lines"])
            assert (docs[did]["page_count"], json_words) == (done.pages, done.words), uri
    for uri in bad:
        assert state.sources[uri].status == "error", uri
    if not committed_only:
        live_docs = {doc_id(d) for u, d in sources.items() if u not in bad and d is not None}
        assert set(docs) == live_docs, f"documents/ {sorted(docs)} != live {sorted(live_docs)}"


def assert_clean(out: str) -> None:
    """Nothing left over: no pending batches, no parts outside the ledger."""
    state = read_ledger(out)
    pending = [u for u in listing(storage.join(out, "_ledger", "pending"))]
    assert not pending, f"pending files left: {pending}"
    for table in ("words", "pages", "errors"):
        physical = {u for u in listing(storage.join(out, table))}
        live = {storage.join(out, rel) for rel in state.parts if rel.startswith(table + "/")}
        assert physical == live, (
            f"{table}: files {sorted(physical - live)} not in the ledger, {sorted(live - physical)} missing"
        )
