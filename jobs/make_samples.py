"""Write the bundled sample documents (`make samples`): synthetic handwritten pages saved as
the formats users bring (PDF, multi-page TIFF, JPEG photo, PNG), deterministic by seed,
small enough to commit (< 2 MB in all). Seeds differ from every training seed."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from transforms.synth import render_page

SEED = 424242


def _page(rng: np.random.Generator, long_side: int = 1600) -> Image.Image:
    page, _ = render_page(rng)
    scale = long_side / max(page.size)
    if scale < 1:
        page = page.resize((round(page.width * scale), round(page.height * scale)), Image.Resampling.LANCZOS)
    return page


def _jpeg_pages(pages: list[Image.Image], quality: int = 55) -> list[Image.Image]:
    """Re-encode as JPEG first so the PDF embeds compact DCT images."""
    out: list[Image.Image] = []
    for p in pages:
        buf = io.BytesIO()
        p.convert("RGB").save(buf, "JPEG", quality=quality)
        out.append(Image.open(io.BytesIO(buf.getvalue())))
    return out


def write_samples(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    written = []
    letter = _jpeg_pages([_page(rng), _page(rng)])
    path = out / "letter-two-pages.pdf"
    letter[0].save(path, "PDF", resolution=150, save_all=True, append_images=letter[1:])
    written.append(path)
    notes = [_page(rng, 1400).convert("L") for _ in range(2)]
    path = out / "notes-scan.tiff"
    notes[0].save(path, "TIFF", compression="jpeg", quality=60, save_all=True, append_images=notes[1:])
    written.append(path)
    path = out / "phone-photo.jpg"
    _page(rng).save(path, "JPEG", quality=60)
    written.append(path)
    path = out / "form.png"
    _page(rng, 1200).convert("L").quantize(16).save(path, "PNG", optimize=True)
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    out = Path((argv or sys.argv[1:] or ["samples"])[0])
    paths = write_samples(out)
    total = sum(p.stat().st_size for p in paths)
    print(f"samples: {len(paths)} documents, {total / 1e6:.2f} MB -> {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
