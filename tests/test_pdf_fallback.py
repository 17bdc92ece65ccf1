"""PDFs without poppler: pypdfium2 (a wheel) renders them, with poppler's page sizes and errors.

The stock SageMaker PyTorch images have no poppler-utils and nothing may apt-get there, so
transforms.rasterise falls back to pypdfium2 when pdftoppm/pdfinfo are not on PATH. These tests
take poppler off PATH (an empty folder) and compare the fallback with poppler's output. With
neither renderer the job stops at start-up (MissingDependency), never one error row per PDF.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from batch.cli import main as htr
from batch.core.errors import EXIT_FATAL, CorruptDocument, EncryptedDocument, MissingDependency, TooLarge
from tests.test_rasterise import ink, make_pdf, rect
from transforms.rasterise import Limits, iter_pages, pdf_renderer

PAGES = [
    (72, 144, rect(0, 72, 72, 72)),  # 1 x 2 inch, top half black
    (200, 100, rect(0, 0, 200, 20)),  # a bar along the bottom
    (300, 120, rect(100, 20, 50, 50)),
]


@pytest.fixture
def no_poppler(tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def _pages(data: bytes, **kw) -> list[np.ndarray]:
    return [np.asarray(p) for p in iter_pages(data, **kw)]


def test_poppler_is_preferred_when_installed() -> None:
    assert pdf_renderer() == "poppler"


def test_pdfium_renders_what_poppler_renders(no_poppler, monkeypatch) -> None:
    data = make_pdf(PAGES)
    assert pdf_renderer() == "pdfium"
    fallback = _pages(data, dpi=100)
    monkeypatch.undo()  # poppler back on PATH
    assert pdf_renderer() == "poppler"
    reference = _pages(data, dpi=100)
    assert (
        [p.shape for p in fallback]
        == [p.shape for p in reference]
        == [(200, 100, 3), (139, 278, 3), (167, 417, 3)]
    )
    for ours, theirs in zip(fallback, reference):
        assert (ink(ours) != ink(theirs)).mean() < 0.01  # anti-aliased edges may differ


def test_pdfium_crop_box_and_rotation(no_poppler) -> None:
    cropped = make_pdf([(20000, 20000, rect(0, 0, 50, 50))], extra_page_keys="/CropBox [0 0 100 50]")
    (page,) = _pages(cropped, dpi=72)
    assert page.shape == (50, 100, 3) and ink(page)[:, :50].mean() > 0.97
    turned = make_pdf([(200, 100, rect(0, 0, 200, 20))], extra_page_keys="/Rotate 90")
    (page,) = _pages(turned, dpi=72)
    assert page.shape == (200, 100, 3) and ink(page)[:, :20].mean() > 0.97


def test_pdfium_errors_are_the_documents(no_poppler) -> None:
    data = make_pdf(PAGES)
    with pytest.raises(CorruptDocument):
        _pages(data[:200])
    with pytest.raises(EncryptedDocument):
        _pages(make_pdf([(100, 50, rect(0, 0, 25, 50))], user_password="s3cret"))
    with pytest.raises(TooLarge):
        _pages(data, limits=Limits(max_pages=2))
    (page,) = _pages(make_pdf([(100, 50, rect(0, 0, 25, 50))], user_password=""), dpi=72)
    assert abs(ink(page).mean() - 0.25) < 0.03  # owner password only: opens


def test_pdfium_from_threads(no_poppler) -> None:
    """The worker decodes on threads; PDFium is not thread-safe (a lock serialises its calls)."""
    docs = [make_pdf(PAGES[k % 3 :]) for k in range(6)]
    with ThreadPoolExecutor(3) as pool:
        shapes = list(pool.map(lambda d: [p.shape for p in _pages(d, dpi=72)], docs))
    assert shapes == [[(h, w, 3) for w, h, _ in PAGES[k % 3 :]] for k in range(6)]


def test_no_renderer_stops_the_run_at_start(no_poppler, monkeypatch, tiny_models, tmp_path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # `import pypdfium2` fails
    with pytest.raises(MissingDependency, match="no PDF renderer"):
        pdf_renderer()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.pdf").write_bytes(make_pdf(PAGES))
    out = tmp_path / "out"
    assert htr(["run", str(docs), str(out), "--models", str(tiny_models), "--no-progress"]) == EXIT_FATAL
    assert "no PDF renderer" in capsys.readouterr().err
    assert not (out / "errors").exists()  # not an error row per document


def test_no_renderer_fails_both_servers_at_load(no_poppler, monkeypatch, tiny_models) -> None:
    """The serving containers stop at model load (htr serve never reports healthy; the toolkit's
    model_fn fails its worker), so a transform or endpoint fails instead of answering every PDF
    with an error row that a Completed job would hide."""
    import importlib.util

    from batch.serve import ServeSettings, Service

    monkeypatch.setitem(sys.modules, "pypdfium2", None)
    service = Service(ServeSettings(batch=True))
    with pytest.raises(MissingDependency, match="no PDF renderer"):
        service.load(str(tiny_models), "cpu")
    assert isinstance(service.load_error, MissingDependency)

    # code/inference.py as the framework container imports it; its import changes sys.path and
    # the toolkit's error handler: both restored when the test ends
    monkeypatch.setattr(sys, "path", list(sys.path))
    from sagemaker_inference.transformer import Transformer

    monkeypatch.setattr(Transformer, "handle_error", Transformer.__dict__["handle_error"])
    path = Path(__file__).resolve().parents[1] / "batch" / "sagemaker_code" / "inference.py"
    spec = importlib.util.spec_from_file_location("htr_inference_under_test", path)
    assert spec is not None and spec.loader is not None
    inference = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, inference)  # as an import would (dataclasses need it)
    spec.loader.exec_module(inference)
    monkeypatch.setenv("HTR_DEVICE", "cpu")
    with pytest.raises(MissingDependency, match="no PDF renderer"):
        inference.model_fn(str(tiny_models))


def test_renderer_lost_mid_run_stops_the_run_not_one_row_per_pdf(tiny_models, tmp_path, capsys) -> None:
    """poppler found at start-up, gone when a PDF needs it (a broken image, a volume unmounted):
    the run stops with exit 4 and writes no error rows; the next run does every document once.
    A real pdfinfo shim removes the pdftoppm shim beside it, so the next call cannot start."""
    import os
    import shutil
    import stat

    from batch.serve import status_for

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, script in {
        "pdfinfo": f'#!/bin/sh\n{shutil.which("rm")} -f "{bin_dir}/pdftoppm"\nexec {shutil.which("pdfinfo")} "$@"\n',
        "pdftoppm": f'#!/bin/sh\nexec {shutil.which("pdftoppm")} "$@"\n',
    }.items():
        (bin_dir / tool).write_text(script)
        (bin_dir / tool).chmod(stat.S_IRWXU)
    docs, out = tmp_path / "docs", tmp_path / "out"
    docs.mkdir()
    for name, pages in (("a", PAGES), ("b", PAGES[:2])):  # distinct bytes: two document ids
        (docs / f"{name}.pdf").write_bytes(make_pdf(pages))
    old_path = os.environ["PATH"]
    os.environ["PATH"] = str(bin_dir)  # poppler only through the shims
    try:
        argv = ["run", str(docs), str(out), "--models", str(tiny_models), "--no-progress"]
        assert htr(argv) == EXIT_FATAL
    finally:
        os.environ["PATH"] = old_path
    assert "pdftoppm not found" in capsys.readouterr().err
    assert not (out / "errors").exists()  # not an error row per document
    assert htr(argv) == 0  # poppler back: both documents, once, and no error rows
    assert not (out / "errors").exists()
    assert len(list((out / "documents").glob("*.json"))) == 2
    assert status_for(MissingDependency("pdftoppm not found"), batch=True) == 500
