"""jobs.bench_e2e: the `htr run` end-to-end harness runs every available system on the same files
(no timing assertions: the benchmark itself is `make bench`)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from jobs.bench import repeated_pdf
from jobs.bench_e2e import Env, PageSet, available_systems, run_e2e, run_lanes, section, table_rows


def _page(text: str) -> Image.Image:
    img = Image.new("RGB", (480, 320), "white")
    ImageDraw.Draw(img).text((40, 60), text, fill="black")
    return img


def two_pages(folder: Path) -> Path:
    """One PNG and a one-page PDF (so the peers' pdftoppm path runs too)."""
    folder.mkdir()
    _page("hello world").save(folder / "a.png")
    buf = io.BytesIO()
    page = _page("second page")
    page.save(buf, "JPEG", quality=90)
    repeated_pdf([(buf.getvalue(), page.width, page.height)], 1, folder / "b.pdf")
    return folder


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="needs poppler's pdftoppm")
def test_lanes_read_images_and_every_pdf_page(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _page("x").save(folder / "a.jpg")
    buf = io.BytesIO()
    _page("y").save(buf, "JPEG")
    repeated_pdf([(buf.getvalue(), 480, 320)], 3, folder / "b.pdf")
    seen: list[str] = []
    pages = run_lanes(sorted(folder.iterdir()), [seen.append, seen.append], tmp_path)
    assert pages == 4
    assert sorted(Path(p).suffix for p in seen) == [".jpg", ".ppm", ".ppm", ".ppm"]


def test_e2e_table_has_a_row_per_available_system(tmp_path, tiny_models, htr_cmd, subprocess_env):
    systems, skipped = available_systems()
    for name in ("tesseract", "rapidocr"):
        assert name in systems or skipped[name]  # a missing peer is skipped with its reason
    folder = two_pages(tmp_path / "in")
    env = Env(htr=htr_cmd, run_args=["--models", str(tiny_models)], env=subprocess_env, timeout=300)
    run = run_e2e([PageSet("2 pages", folder, 2, "tiny test pages")], env, warm=False, log=lambda _: None)
    rows = table_rows(run)
    assert [r[1] for r in rows] == systems
    for r in rows:
        assert r[2] == "2", r  # every system read both pages, none failed
    htr = rows[0]
    assert htr[6] != "-"  # steady-state pages/s from htr run's summary
    text = "\n".join(section(run))
    assert "`htr run` end to end" in text
    assert all(f"{name} not run: {why}" in text for name, why in skipped.items())
