"""Bytes in, RGB pages out: type sniffing, PDF rasterising, image decoding, input limits.

The type is decided by magic bytes, never by the file name, so a mislabelled file is
still read correctly (or refused with a reason). PDFs are rendered a few pages at a
time through poppler so memory does not grow with page count.
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, ImageSequence

from batch.errors import (CorruptDocument, EmptyDocument, EncryptedDocument, TooLarge,
                          UnsupportedType)

PDF = "application/pdf"
IMAGE_TYPES = {"image/jpeg", "image/png", "image/tiff", "image/bmp", "image/webp"}
SUPPORTED = {PDF} | IMAGE_TYPES


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 120_000_000     # per page (a 600 dpi A3 scan is ~70 MP)
    max_pages: int = 5000
    max_bytes: int = 2 * 1024**3
    pdf_chunk: int = 4                 # pages rendered per poppler call


DEFAULT_LIMITS = Limits()


def sniff(data: bytes) -> str:
    """Content type from the first bytes. Raises EmptyDocument / UnsupportedType."""
    if not data:
        raise EmptyDocument("zero-byte document")
    head = data[:16]
    if head.startswith(b"%PDF-") or b"%PDF-" in data[:1024]:
        return PDF
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "image/tiff"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    raise UnsupportedType(f"unknown document type (first bytes {head[:8]!r})")


def count_pages(data: bytes, content_type: str | None = None) -> int:
    content_type = content_type or sniff(data)
    if content_type == PDF:
        with _pdf_file(data) as path:
            return len(_pdf_page_sizes(path))
    with _open_image(data) as im:
        return getattr(im, "n_frames", 1)


def iter_pages(data: bytes, dpi: int = 200, limits: Limits = DEFAULT_LIMITS,
               content_type: str | None = None) -> Iterator[np.ndarray]:
    """Yield each page as an HxWx3 uint8 RGB array, in page order."""
    if len(data) > limits.max_bytes:
        raise TooLarge(f"document is {len(data)} bytes, over the {limits.max_bytes} byte limit")
    content_type = content_type or sniff(data)
    if content_type == PDF:
        yield from _pdf_pages(data, dpi, limits)
    else:
        yield from _image_pages(data, limits)


# ---- PDF ---------------------------------------------------------------------------------------

class _pdf_file:
    """The PDF bytes in a temporary file (poppler reads paths), removed afterwards."""

    def __init__(self, data: bytes):
        self.data = data

    def __enter__(self) -> str:
        fd, self.path = tempfile.mkstemp(suffix=".pdf", prefix="htr-")
        with os.fdopen(fd, "wb") as f:
            f.write(self.data)
        return self.path

    def __exit__(self, *exc) -> None:
        os.unlink(self.path)


_SIZE_RE = re.compile(r"^Page\s+(\d+)\s+size:\s+([\d.]+)\s+x\s+([\d.]+)", re.M)


def _pdf_page_sizes(path: str) -> list[tuple[float, float]]:
    """Page sizes in points, from pdfinfo. Typed errors for encrypted / corrupt files."""
    info = _pdfinfo(path, ["-f", "1", "-l", "-1"])
    sizes = [(float(w), float(h)) for _, w, h in _SIZE_RE.findall(info)]
    if not sizes:
        m = re.search(r"^Pages:\s+(\d+)", info, re.M)
        if m and int(m.group(1)) == 0:
            raise EmptyDocument("PDF has no pages")
        raise CorruptDocument("PDF page sizes could not be read")
    return sizes


def _pdfinfo(path: str, extra: list[str]) -> str:
    try:
        proc = subprocess.run(["pdfinfo", *extra, path], capture_output=True, text=True,
                              timeout=120, errors="replace")
    except FileNotFoundError as e:  # environment problem, not the document's fault
        raise RuntimeError("pdfinfo not found: install poppler-utils") from e
    except subprocess.TimeoutExpired:
        raise CorruptDocument("pdfinfo timed out on this PDF")
    err = proc.stderr.strip()
    if proc.returncode != 0:
        if "Incorrect password" in err or "encrypted" in err.lower():
            raise EncryptedDocument("PDF is encrypted and needs a password")
        raise CorruptDocument(f"PDF could not be read: {_last_line(err)}")
    return proc.stdout


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no detail"


def _pdf_pages(data: bytes, dpi: int, limits: Limits) -> Iterator[np.ndarray]:
    from pdf2image import convert_from_path  # poppler's pdftoppm under the hood

    with _pdf_file(data) as path:
        sizes = _pdf_page_sizes(path)
        if len(sizes) > limits.max_pages:
            raise TooLarge(f"PDF has {len(sizes)} pages, over the {limits.max_pages} page limit")
        for i, (w, h) in enumerate(sizes, 1):
            px_w, px_h = w * dpi / 72, h * dpi / 72
            if px_w < 1 or px_h < 1:
                raise EmptyDocument(f"page {i} has zero size")
            if px_w * px_h > limits.max_pixels:
                raise TooLarge(f"page {i} would be {px_w:.0f}x{px_h:.0f} px at {dpi} dpi, "
                               f"over the {limits.max_pixels} pixel limit")
        for first in range(1, len(sizes) + 1, limits.pdf_chunk):
            last = min(first + limits.pdf_chunk - 1, len(sizes))
            try:
                images = convert_from_path(path, dpi=dpi, first_page=first, last_page=last,
                                           thread_count=1, timeout=600)
            except Exception as e:  # pdf2image wraps poppler failures in several types
                raise CorruptDocument(f"poppler failed on pages {first}-{last}: {e}") from e
            if len(images) != last - first + 1:
                raise CorruptDocument(f"poppler rendered {len(images)} of pages {first}-{last}")
            for im in images:
                yield to_rgb_array(im)


# ---- Images ------------------------------------------------------------------------------------

class _open_image:
    def __init__(self, data: bytes, max_pixels: int = DEFAULT_LIMITS.max_pixels):
        self.data, self.max_pixels = data, max_pixels

    def __enter__(self) -> Image.Image:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = self.max_pixels  # Pillow's own bomb guard (2x raises)
            try:
                self.im = Image.open(io.BytesIO(self.data))
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise TooLarge(f"image over the {self.max_pixels} pixel limit: {e}") from e
            except Exception as e:
                raise CorruptDocument(f"image could not be opened: {e}") from e
        return self.im

    def __exit__(self, *exc) -> None:
        self.im.close()


def _image_pages(data: bytes, limits: Limits) -> Iterator[np.ndarray]:
    with _open_image(data, limits.max_pixels) as im:
        n = getattr(im, "n_frames", 1)
        if n > limits.max_pages:
            raise TooLarge(f"image has {n} frames, over the {limits.max_pages} page limit")
        for i, frame in enumerate(ImageSequence.Iterator(im), 1):
            w, h = frame.size
            if w == 0 or h == 0:
                raise EmptyDocument(f"page {i} has zero size")
            if w * h > limits.max_pixels:
                raise TooLarge(f"page {i} is {w}x{h} px, over the {limits.max_pixels} pixel limit")
            try:
                frame.load()
                # EXIF orientation first, so polygons refer to the page as a person sees it
                page = ImageOps.exif_transpose(frame) if i == 1 else frame.copy()
            except Exception as e:  # truncated data surfaces here, at decode time
                raise CorruptDocument(f"page {i} could not be decoded: {e}") from e
            yield to_rgb_array(page)


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Normalise any Pillow mode (1, L, P, RGBA, LA, CMYK, I;16, I, F) to HxWx3 uint8 RGB."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        gray = arr.astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)  # transparent scans read as white paper
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy()
