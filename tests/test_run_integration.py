"""`htr run` end to end, as a subprocess, on real files: PDFs through poppler, images through
Pillow, tiny random models (or the shipped ones, where they exist), outputs read back."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image, ImageDraw

from batch.core.ids import doc_id_for
from batch.core.schema import ERRORS_SCHEMA, PAGES_SCHEMA, WORDS_SCHEMA
from models import checkpoints
from models.charset import CHARSET
from tests.test_rasterise import (
    _noise,
    encode,
    jpeg_with_orientation,
    make_pdf,
    multipage_tiff,
    page_with_box,
    rect,
    tiff_with_corrupt_page,
)
from tests.worker_helpers import bold_font

DPI = 72  # 1 pt = 1 px: PDF page sizes are exact and pages stay small
DEFAULT_MODELS = checkpoints.DEFAULT_DIR


# ---- helpers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(subprocess_env) -> dict[str, str]:
    """One intra-op thread: on a shared 2-core machine torch's spinning threads make these tiny
    models many times slower; what the pipeline computes does not depend on it."""
    return dict(subprocess_env, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def run_htr(htr_cmd, env, *args, timeout=300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*htr_cmd, "run", *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def read_parts(out: Path, table: str) -> tuple[list[dict], list[Path]]:
    """All rows of one output table, and its part files; checks the partition layout and schema."""
    parts = sorted((out / table).rglob("*.parquet")) if (out / table).exists() else []
    rows = []
    schema = {"words": WORDS_SCHEMA, "pages": PAGES_SCHEMA, "errors": ERRORS_SCHEMA}[table]
    for part in parts:
        rel = part.relative_to(out / table)
        assert re.fullmatch(r"run_date=\d{4}-\d{2}-\d{2}/part-[\w.-]+\.parquet", rel.as_posix()), rel
        t = pq.read_table(part)
        assert t.schema.equals(schema), (table, t.schema)
        date = rel.parts[0].split("=")[1]
        for r in t.to_pylist():
            assert r["processed_at"].astimezone(dt.UTC).strftime("%Y-%m-%d") == date
            rows.append(r)
    return rows, parts


def read_documents(out: Path) -> dict[str, dict]:
    docs = {}
    for f in sorted((out / "documents").glob("*.json")) if (out / "documents").exists() else []:
        d = json.loads(f.read_text())
        assert f.name == f"{d['doc_id']}.json"
        docs[d["doc_id"]] = d
    return docs


def summary(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """The counts in the closing 'htr run: N documents, N pages, ...' line."""
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("htr run: ")), None)
    assert line, proc.stdout + proc.stderr
    counts = {
        k: int(v) for v, k in re.findall(r"(?<![\d.])(\d+) (documents|pages|words|errors)(?![/\w])", line)
    }
    assert set(counts) == {"documents", "pages", "words", "errors"}, line
    return counts


def check_words_match_json(out: Path, docs: dict[str, dict]) -> list[dict]:
    """words/ rows are exactly the JSON's words, in the same order, with the same geometry."""
    rows, _ = read_parts(out, "words")
    from_rows = sorted(
        (
            r["doc_id"],
            r["page"],
            r["word_idx"],
            r["line_idx"],
            r["text"],
            tuple((round(p["x"], 1), round(p["y"], 1)) for p in r["polygon"]),
        )
        for r in rows
    )
    from_json = sorted(
        (
            d["doc_id"],
            p["page"],
            w["word_idx"],
            ln["line_idx"],
            w["text"],
            tuple((pt["x"], pt["y"]) for pt in w["polygon"]),
        )
        for d in docs.values()
        for p in d["pages"]
        for ln in p["lines"]
        for w in ln["words"]
    )
    assert from_rows == from_json
    for r in rows:
        d = docs[r["doc_id"]]
        p = d["pages"][r["page"] - 1]
        assert (r["page_width"], r["page_height"]) == (p["width"], p["height"])
        assert r["source_uri"] == d["source_uri"] and r["run_id"] == d["run_id"]
        assert r["model_version"] == d["model_version"]
        xs, ys = [pt["x"] for pt in r["polygon"]], [pt["y"] for pt in r["polygon"]]
        assert (r["x0"], r["y0"], r["x1"], r["y1"]) == pytest.approx(
            (min(xs), min(ys), max(xs), max(ys)), abs=1e-3
        )
    return rows


# ---- the corpus ---------------------------------------------------------------------------------------

GOOD = {
    # name: (bytes, content type, [(width, height) of each page at DPI])
    "letter.pdf": (
        make_pdf([(200, 100, rect(10, 10, 80, 30)), (150, 150, rect(20, 20, 50, 50))]),
        "application/pdf",
        [(200, 100), (150, 150)],
    ),
    "scan.png": (encode(page_with_box((120, 80), (10, 10, 60, 30)), "PNG"), "image/png", [(120, 80)]),
    "fax.tif": (
        multipage_tiff(
            [page_with_box((90 + 10 * k, 70), (5, 5, 40, 20), "L") for k in range(3)],
            compression="tiff_deflate",
        ),
        "image/tiff",
        [(90, 70), (100, 70), (110, 70)],
    ),
    "photo.jpg": (jpeg_with_orientation(6, size=(96, 64)), "image/jpeg", [(64, 96)]),  # turned upright
    "sub/dir/nested.png": (encode(page_with_box((64, 48)), "PNG"), "image/png", [(64, 48)]),
    "really_a_png.pdf": (encode(page_with_box((70, 50)), "PNG"), "image/png", [(70, 50)]),
    "really_a_pdf.jpg": (make_pdf([(90, 60, rect(0, 0, 30, 30))]), "application/pdf", [(90, 60)]),
}

BAD = {
    # name: (bytes, stage, error type, a word the message must contain)
    "empty.pdf": (b"", "decode", "EmptyDocument", "zero-byte"),
    "corrupt.pdf": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage\n", "decode", "CorruptDocument", "PDF"),
    "notes.txt": (b"shopping list: eggs, milk\n", "decode", "UnsupportedType", "unknown document type"),
    "truncated.png": (encode(_noise(), "PNG")[:3000], "decode", "CorruptDocument", "truncated"),
    "locked.pdf": (
        make_pdf([(100, 100, rect(0, 0, 50, 50))], user_password="pw"),
        "decode",
        "EncryptedDocument",
        "password",
    ),
    # six pages, the fifth corrupt: earlier pages may be through the models when it fails
    "fax_bad_page.tif": (
        tiff_with_corrupt_page(n_pages=6, bad_page=4),
        "decode",
        "CorruptDocument",
        "page 5",
    ),
}


def write_corpus(folder: Path, files: dict) -> dict[str, Path]:
    paths = {}
    for name, spec in files.items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(spec[0])
        paths[name] = p
    return paths


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, tiny_models, htr_cmd, env):
    """One run over good and bad documents, shared by the tests that read its outputs. Small
    model batches and one decode thread, so pages of the document that fails on its fifth
    page go through the models before the failure is found."""
    base = tmp_path_factory.mktemp("mixed")
    good = write_corpus(base / "in", GOOD)
    bad = write_corpus(base / "in", BAD)
    out = base / "out"
    proc = run_htr(
        htr_cmd,
        env,
        base / "in",
        out,
        "--models",
        tiny_models,
        "--no-progress",
        "--dpi",
        DPI,
        "--batch-pages",
        2,
        "--decode-workers",
        1,
        "--run-id",
        "mixed-run",
    )
    return proc, good, bad, out


# ---- exit codes ----------------------------------------------------------------------------------------


def test_partial_failure_exits_3(mixed_run):
    proc, good, bad, _ = mixed_run
    assert proc.returncode == 3, proc.stderr
    s = summary(proc)
    assert s["documents"] == len(good) + len(bad)
    assert s["errors"] == len(bad)
    assert s["pages"] == sum(len(spec[2]) for spec in GOOD.values())
    for name in BAD:  # each failure is reported on stderr, by source
        assert str(bad[name]) in proc.stderr


def test_bad_arguments_exit_2(tmp_path, htr_cmd, env):
    proc = run_htr(htr_cmd, env, "in", "out", "--dpi", "many", timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "usage:" in proc.stderr and "--dpi" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was started


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],  # no input, no output
        ["run", "only-input"],
        ["run", "in", "out", "--no-such-option"],
        ["no-such-command"],
        [],
    ],
)
def test_bad_arguments_exit_2_in_process(tmp_path, monkeypatch, capsys, argv):
    """More bad command lines through the console script's entry point, without a process each."""
    from batch import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    assert list(tmp_path.iterdir()) == []


def test_missing_models_dir_exits_4(tmp_path, htr_cmd, env):
    write_corpus(tmp_path / "in", {"scan.png": GOOD["scan.png"]})
    proc = run_htr(
        htr_cmd, env, tmp_path / "in", tmp_path / "out", "--models", tmp_path / "no-models", "--no-progress"
    )
    assert proc.returncode == 4
    assert "cannot load models" in proc.stderr and "segmenter.json" in proc.stderr
    assert not (tmp_path / "out" / "documents").exists()


def test_missing_input_folder_exits_4(tmp_path, tiny_models, htr_cmd, env):
    proc = run_htr(
        htr_cmd,
        env,
        tmp_path / "nowhere",
        tmp_path / "out",
        "--models",
        tiny_models,
        "--no-progress",
        timeout=180,
    )
    assert proc.returncode == 4, proc.stderr
    assert "nowhere" in proc.stderr


# ---- outputs of the mixed run -----------------------------------------------------------------------


def test_one_json_per_good_document_with_pages_and_sizes(mixed_run):
    _, good, bad, out = mixed_run
    docs = read_documents(out)
    expected = {doc_id_for(GOOD[name][0]): name for name in GOOD}
    assert set(docs) == set(expected)  # and none for any bad document
    for doc_id, name in expected.items():
        d = docs[doc_id]
        _, content_type, sizes = GOOD[name]
        assert d["source_uri"] == str(good[name])
        assert d["content_type"] == content_type
        assert d["page_count"] == len(sizes) == len(d["pages"])
        assert [p["page"] for p in d["pages"]] == list(range(1, len(sizes) + 1))
        assert [(p["width"], p["height"]) for p in d["pages"]] == sizes, name
        assert d["run_id"] == "mixed-run" and d["schema_version"] == 2
        assert d["model_version"].startswith("seg-") and "+rec-" in d["model_version"]
        dt.datetime.fromisoformat(d["processed_at"])
        for p in d["pages"]:
            assert p["text"] == "\n".join(ln["text"] for ln in p["lines"])


def test_a_document_failing_on_a_later_page_leaves_no_partial_output(mixed_run):
    _, _, bad, out = mixed_run
    failed = doc_id_for(BAD["fax_bad_page.tif"][0])
    assert not (out / "documents" / f"{failed}.json").exists()
    pages, _ = read_parts(out, "pages")
    words, _ = read_parts(out, "words")
    assert failed not in {r["doc_id"] for r in pages + words}
    errors, _ = read_parts(out, "errors")
    assert [r["source_uri"] for r in errors].count(str(bad["fax_bad_page.tif"])) == 1


def test_pages_table_one_row_per_page(mixed_run):
    _, good, _, out = mixed_run
    docs = read_documents(out)
    rows, parts = read_parts(out, "pages")
    assert parts, "no pages/ parts written"
    got = sorted((r["doc_id"], r["page"]) for r in rows)
    want = sorted((doc_id_for(GOOD[n][0]), k) for n in GOOD for k in range(1, len(GOOD[n][2]) + 1))
    assert got == want
    for r in rows:
        d = docs[r["doc_id"]]
        p = d["pages"][r["page"] - 1]
        assert r["page_count"] == d["page_count"]
        assert (r["page_width"], r["page_height"]) == (p["width"], p["height"])
        assert r["line_count"] == len(p["lines"])
        assert r["word_count"] == sum(len(ln["words"]) for ln in p["lines"])
        assert r["text"] == p["text"] and r["source_uri"] == d["source_uri"]
        assert r["run_id"] == "mixed-run"
        assert (r["mean_confidence"] is None) == (r["word_count"] == 0)


def test_errors_table_one_row_per_bad_document(mixed_run):
    _, _, bad, out = mixed_run
    rows, parts = read_parts(out, "errors")
    assert parts
    by_source = {r["source_uri"]: r for r in rows}
    assert len(rows) == len(by_source) == len(BAD)
    assert set(by_source) == {str(p) for p in bad.values()}
    for name, (_data, stage, error_type, word) in BAD.items():
        r = by_source[str(bad[name])]
        assert (r["stage"], r["error_type"]) == (stage, error_type), name
        assert word.lower() in r["message"].lower(), (name, r["message"])
        assert re.fullmatch(r"[0-9a-f]{24}", r["doc_id"]) and r["run_id"] == "mixed-run"
    assert len({r["doc_id"] for r in rows}) == len(rows)
    # where the content could be typed, the error's doc_id is the content's id
    for name in ("corrupt.pdf", "locked.pdf", "truncated.png", "fax_bad_page.tif"):
        assert by_source[str(bad[name])]["doc_id"] == doc_id_for(BAD[name][0]), name


def test_words_table_matches_the_json(mixed_run):
    _, _, _, out = mixed_run
    check_words_match_json(out, read_documents(out))


# ---- the word path, end to end --------------------------------------------------------------------------


def test_word_path_end_to_end_with_constant_models(mixed_run, tmp_path, constant_models, htr_cmd, env):
    """All good documents: exit 0, no errors/, one word per page through every stage; and the
    same content under another name keeps the doc_id it had in the mixed run."""
    files = {
        "copy-of-letter.pdf": GOOD["letter.pdf"],
        "photo.jpg": GOOD["photo.jpg"],
        "fax.tif": GOOD["fax.tif"],
    }
    write_corpus(tmp_path / "in", files)
    out = tmp_path / "out"
    proc = run_htr(
        htr_cmd,
        env,
        tmp_path / "in",
        out,
        "--models",
        constant_models,
        "--no-progress",
        "--dpi",
        DPI,
        "--batch-pages",
        4,
    )
    assert proc.returncode == 0, proc.stderr
    assert summary(proc)["errors"] == 0 and read_parts(out, "errors") == ([], [])
    assert doc_id_for(GOOD["letter.pdf"][0]) in read_documents(out)
    assert doc_id_for(GOOD["letter.pdf"][0]) in read_documents(mixed_run[3])
    docs = read_documents(out)
    n_pages = sum(len(spec[2]) for spec in files.values())
    assert summary(proc)["words"] == n_pages
    rows = check_words_match_json(out, docs)
    assert len(rows) == n_pages
    expected_conf = float(torch.softmax(torch.tensor([10.0] + [0.0] * len(CHARSET)), 0)[0])
    for d in docs.values():
        for p in d["pages"]:
            (line,) = p["lines"]
            (w,) = line["words"]
            assert w["text"] == "x" and p["text"] == "x"
            assert w["confidence"] == pytest.approx(expected_conf, abs=1e-3)
            assert w["det_score"] == pytest.approx(1.0, abs=1e-3)
            # the box is the whole page, in this page's own pixels (not the segmenter's)
            x0, y0, x1, y1 = w["bbox"]
            assert x0 >= 0 and y0 >= 0 and x1 <= p["width"] + 0.1 and y1 <= p["height"] + 0.1
            assert (x1 - x0) > 0.9 * p["width"] and (y1 - y0) > 0.9 * p["height"]
    pages, _ = read_parts(out, "pages")
    assert all(r["word_count"] == 1 and r["line_count"] == 1 for r in pages)
    assert all(r["mean_confidence"] == pytest.approx(expected_conf, abs=1e-3) for r in pages)


# ---- the shipped models, when they are there -------------------------------------------------------------


@pytest.mark.skipif(
    not (DEFAULT_MODELS / "segmenter.safetensors").is_file()
    or not (DEFAULT_MODELS / "recogniser.safetensors").is_file(),
    reason="the shipped models (models/default/*.safetensors) are not in this checkout",
)
def test_default_models_find_large_printed_words(tmp_path, htr_cmd, env):
    lines = [["Meeting", "notes"], ["please", "call", "Anna"], ["before", "Friday"]]
    page = Image.new("RGB", (1400, 1000), "white")
    draw = ImageDraw.Draw(page)
    font = bold_font(72)
    boxes = []  # (text, line, x0, y0, x1, y1)
    y = 120
    for li, words in enumerate(lines):
        x = 100
        for text in words:
            x0, y0, x1, y1 = draw.textbbox((x, y), text, font=font)
            draw.text((x, y), text, fill="black", font=font)
            boxes.append((text, li, x0, y0, x1, y1))
            x = x1 + 60
        y += 260
    (tmp_path / "in").mkdir()
    page.save(tmp_path / "in" / "printed.png")
    out = tmp_path / "out"
    proc = run_htr(htr_cmd, env, tmp_path / "in", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    (doc,) = read_documents(out).values()
    (p,) = doc["pages"]
    assert (p["width"], p["height"]) == (1400, 1000)
    words = [w for ln in p["lines"] for w in ln["words"]]
    assert len(boxes) // 2 <= len(words) <= 2 * len(boxes)
    hit = set()
    for w in words:
        assert w["text"].strip()
        assert 0 < w["confidence"] <= 1 and 0 < w["det_score"] <= 1
        xs, ys = [pt["x"] for pt in w["polygon"]], [pt["y"] for pt in w["polygon"]]
        assert min(xs) >= 0 and min(ys) >= 0 and max(xs) <= 1400 and max(ys) <= 1000
        cx, cy = np.mean(xs), np.mean(ys)
        inside = [b for b in boxes if b[2] - 20 <= cx <= b[4] + 20 and b[3] - 20 <= cy <= b[5] + 20]
        assert inside, f"word {w['text']!r} at ({cx:.0f}, {cy:.0f}) is not on any drawn word"
        hit.add(inside[0][0])
    assert len(hit) >= len(boxes) * 3 // 4  # most drawn words were found
    assert len(p["lines"]) == len(lines)  # and grouped into the drawn lines
    check_words_match_json(out, {doc["doc_id"]: doc})
