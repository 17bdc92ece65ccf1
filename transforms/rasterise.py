"""Bytes in, RGB pages out: type sniffing, PDF rasterising, image decoding, input limits.

The type is decided by magic bytes, never by the file name, so a mislabelled file is
still read correctly (or refused with a reason). PDFs are rendered a few pages at a
time through poppler so memory does not grow with page count.

Every way a document can be unreadable ends in a typed error from batch.core.errors
(EmptyDocument, CorruptDocument, EncryptedDocument, TooLarge, UnsupportedType), never
in whatever the decoder happened to raise.
"""

from __future__ import annotations

import ctypes
import io
import mmap
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from batch.core.errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    InputError,
    MissingDependency,
    TooLarge,
    UnsupportedType,
)

PDF = "application/pdf"
IMAGE_TYPES = {"image/jpeg", "image/png", "image/tiff", "image/bmp", "image/webp"}
SUPPORTED = {PDF} | IMAGE_TYPES
_NAMES = {
    PDF: "PDF",
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/tiff": "TIFF",
    "image/bmp": "BMP",
    "image/webp": "WebP",
}


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 120_000_000  # per page (a 600 dpi A3 scan is ~70 MP)
    max_pages: int = 5000
    max_bytes: int = 2 * 1024**3
    pdf_chunk: int = 4  # pages rendered per poppler call


DEFAULT_LIMITS = Limits()


# `data` below is the document's bytes, or any buffer that slices to bytes (the worker passes
# an mmap for large objects so they stay in the page cache, not in process memory).
Buffer = bytes | bytearray | memoryview | mmap.mmap


def sniff(data: Buffer) -> str:
    """Content type from the first bytes. Raises EmptyDocument / UnsupportedType."""
    if not len(data):
        raise EmptyDocument("zero-byte document")
    head = bytes(data[:16])
    if head.startswith(b"%PDF-"):
        return PDF
    # image signatures before the looser PDF test below: an image whose metadata happens
    # to contain "%PDF-" in its first KiB is still an image
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
    if b"%PDF-" in bytes(data[:1024]):  # the header may follow some junk (readers allow 1 KiB)
        return PDF
    if len(data) <= 65536 and not bytes(data).strip(b"\x00"):
        raise EmptyDocument(f"document is {len(data)} zero bytes")
    raise UnsupportedType(
        f"unknown document type (first bytes {head[:8]!r}); expected PDF, JPEG, PNG, TIFF, BMP or WebP"
    )


def count_pages(data: Buffer, content_type: str | None = None) -> int:
    content_type = content_type or sniff(data)
    if content_type == PDF:
        with _pdf_file(data) as path:
            return _pdf_page_count(path)
    with _open_image(data, content_type) as im:
        return _frame_count(im, content_type)


# The models need no more than this on a page's long side (the segmenter works at 1024, crops are
# 32 px high): larger JPEGs are decoded reduced by default (PipelineConfig.image_side, --image-side).
DEFAULT_IMAGE_SIDE = 1600


class Raster(np.ndarray):
    """A decoded page (HxWx3 uint8 RGB) that may be smaller than its source image: large JPEGs are
    decoded reduced (see iter_pages). `source_size` is the upright source's (width, height), so
    results can be reported in the source image's pixels. Plain arrays are their own source."""

    source_size: tuple[int, int] | None = None
    decoded_shape: tuple[int, int] | None = None
    dpi: float | None = None  # the source's resolution: a PDF's rendering dpi, an image's own tag

    def __array_finalize__(self, obj) -> None:
        self.source_size = getattr(obj, "source_size", None)
        self.decoded_shape = getattr(obj, "decoded_shape", None)
        self.dpi = getattr(obj, "dpi", None)


def _with_dpi(page: np.ndarray, dpi) -> np.ndarray:
    """The page as a Raster that knows its source's resolution (None: unknown or implausible)."""
    if isinstance(dpi, (tuple, list)):
        dpi = dpi[0] if dpi else None
    raster = page if isinstance(page, Raster) else page.view(Raster)
    try:
        raster.dpi = round(float(dpi), 1) if dpi is not None and float(dpi) >= 10 else None  # PNG: px/m
    except (TypeError, ValueError):
        raster.dpi = None
    return raster


def source_scale(page: np.ndarray) -> tuple[float, float]:
    """(sx, sy): source pixels per pixel of `page`; (1, 1) unless it is a reduced Raster."""
    size = getattr(page, "source_size", None)
    if size is None or getattr(page, "decoded_shape", None) != page.shape[:2]:
        return 1.0, 1.0  # a plain array, or a crop/view of a Raster: its own pixels
    return size[0] / page.shape[1], size[1] / page.shape[0]


def iter_pages(
    data: Buffer,
    dpi: int = 200,
    limits: Limits = DEFAULT_LIMITS,
    content_type: str | None = None,
    image_side: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield each page as an HxWx3 uint8 RGB array, in page order, one at a time.

    image_side: decode a JPEG whose long side is at least twice this at 1/2, 1/4 or 1/8 size
    (libjpeg scales while decoding: about twice as fast, and every later stage has fewer pixels),
    never below image_side on the long side. Such pages come as Raster, which knows its source size.
    PDFs take `dpi` instead; other image types are always decoded in full."""
    if len(data) > limits.max_bytes:
        raise TooLarge(f"document is {len(data)} bytes, over the {limits.max_bytes} byte limit")
    content_type = content_type or sniff(data)
    if content_type == PDF:
        yield from _pdf_pages(data, dpi, limits)
    elif content_type in IMAGE_TYPES:
        yield from _image_pages(data, limits, content_type, image_side)
    else:
        raise UnsupportedType(f"unsupported document type {content_type!r}")


# ---- PDF ---------------------------------------------------------------------------------------


class _pdf_file:
    """The PDF bytes in a temporary file (poppler reads paths), removed afterwards."""

    def __init__(self, data: Buffer):
        self.data = data

    def __enter__(self) -> str:
        fd, self.path = tempfile.mkstemp(suffix=".pdf", prefix="htr-")
        with os.fdopen(fd, "wb") as f:
            f.write(self.data)
        return self.path

    def __exit__(self, *exc) -> None:
        os.unlink(self.path)


_SIZE_RE = re.compile(r"^Page\s+(\d+)\s+size:\s+([\d.]+)\s+x\s+([\d.]+)", re.M)
_PAGES_RE = re.compile(r"^Pages:\s+(\d+)", re.M)


def _pdf_page_count(path: str) -> int:
    m = _PAGES_RE.search(_poppler(["pdfinfo", path]))
    if not m:
        raise CorruptDocument("PDF page count could not be read")
    return int(m.group(1))


def _pdf_page_sizes(path: str) -> list[tuple[float, float]]:
    """Page sizes in points (the crop box, as rendered), from pdfinfo."""
    n = _pdf_page_count(path)
    if n == 0:
        raise EmptyDocument("PDF has no pages")
    info = _poppler(["pdfinfo", "-f", "1", "-l", str(n), path])
    sizes = {int(p): (float(w), float(h)) for p, w, h in _SIZE_RE.findall(info)}
    if sorted(sizes) != list(range(1, n + 1)):
        raise CorruptDocument(f"PDF says it has {n} pages, but sizes were read for {len(sizes)}")
    return [sizes[i] for i in range(1, n + 1)]


def _poppler(argv: list[str], timeout: float = 600) -> str:
    """Run a poppler tool; its failures as typed errors (encrypted / corrupt / timed out)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, errors="replace")
    except FileNotFoundError as e:  # environment problem, not the document's fault
        raise MissingDependency(f"{argv[0]} not found (it was at start-up): install poppler-utils") from e
    except subprocess.TimeoutExpired as e:
        raise CorruptDocument(f"{argv[0]} took over {timeout:.0f} s on this PDF") from e
    err = proc.stderr.strip()
    if proc.returncode != 0:
        if "Incorrect password" in err or "encrypted" in err.lower():
            raise EncryptedDocument("PDF is encrypted and needs a password to open")
        if "Invalid page count 0" in err or "the last page (0)" in err:
            raise EmptyDocument("PDF has no pages")
        raise CorruptDocument(f"PDF could not be read ({argv[0]}): {_last_line(err)}")
    return proc.stdout


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no detail"


def _render_range(path: str, first: int, last: int, dpi: int) -> list[Image.Image]:
    """Pages first..last (1-based) rendered by pdftoppm at `dpi`, loaded in memory."""
    out_dir = tempfile.mkdtemp(prefix="htr-pages-")
    try:
        # -cropbox: render what pdfinfo measured (and what a viewer shows), so the pixel
        # limit checked beforehand is the size actually rendered
        _poppler(
            [
                "pdftoppm",
                "-r",
                str(dpi),
                "-cropbox",
                "-f",
                str(first),
                "-l",
                str(last),
                path,
                os.path.join(out_dir, "p"),
            ]
        )
        files = {}
        for name in os.listdir(out_dir):
            m = re.fullmatch(r"p-0*(\d+)\.ppm", name)
            if m:
                files[int(m.group(1))] = os.path.join(out_dir, name)
        if sorted(files) != list(range(first, last + 1)):
            raise CorruptDocument(f"poppler rendered {len(files)} of pages {first}-{last}")
        images: list[Image.Image] = []
        for i in range(first, last + 1):
            with Image.open(files[i]) as im:
                im.load()
                images.append(im)
        return images
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def pdf_renderer() -> str:
    """'poppler' when its tools are on PATH (our Dockerfile), else 'pdfium' (the pypdfium2 wheel:
    the stock SageMaker PyTorch images have no poppler and no apt at start-up). Neither is an
    environment error (MissingDependency): entry points call this at start-up to fail fast."""
    if shutil.which("pdftoppm") and shutil.which("pdfinfo"):
        return "poppler"
    try:
        import pypdfium2  # noqa: F401
    except ImportError as e:
        raise MissingDependency(
            "no PDF renderer: install poppler-utils, or the pypdfium2 wheel (requirements.txt)"
        ) from e
    return "pdfium"


# PDFium is not thread-safe (global state across documents): one call at a time, process-wide.
_PDFIUM_LOCK = threading.Lock()


def _pdfium_error(e: Exception) -> InputError:
    text = str(e)
    if "password" in text.lower():
        return EncryptedDocument("PDF is encrypted and needs a password to open")
    return CorruptDocument(f"PDF could not be read (pdfium): {text[:300]}")


def _pdfium_pages(path: str, dpi: int, limits: Limits) -> Iterator[np.ndarray]:
    """The fallback renderer: same limits and page sizes (crop box at `dpi`) as poppler's path."""
    import pypdfium2 as pdfium

    with _PDFIUM_LOCK:
        try:
            doc = pdfium.PdfDocument(path)
            sizes = [doc.get_page_size(i) for i in range(len(doc))]
        except pdfium.PdfiumError as e:
            raise _pdfium_error(e) from e
    try:
        _check_pdf_limits(sizes, dpi, limits)
        for i in range(len(sizes)):
            with _PDFIUM_LOCK:  # released between pages: other documents' threads take turns
                try:
                    page = doc[i]
                    image = page.render(scale=dpi / 72).to_pil()
                    page.close()
                except pdfium.PdfiumError as e:
                    raise _pdfium_error(e) from e
            yield _with_dpi(to_rgb_array(image), dpi)
    finally:
        with _PDFIUM_LOCK:
            doc.close()


def _check_pdf_limits(sizes: list[tuple[float, float]], dpi: int, limits: Limits) -> None:
    if not sizes:
        raise EmptyDocument("PDF has no pages")
    if len(sizes) > limits.max_pages:
        raise TooLarge(f"PDF has {len(sizes)} pages, over the {limits.max_pages} page limit")
    for i, (w, h) in enumerate(sizes, 1):
        px_w, px_h = w * dpi / 72, h * dpi / 72
        if px_w < 1 or px_h < 1:
            raise EmptyDocument(f"page {i} has zero size ({w} x {h} pt)")
        if px_w * px_h > limits.max_pixels:
            raise TooLarge(
                f"page {i} would be {px_w:.0f}x{px_h:.0f} px at {dpi} dpi, "
                f"over the {limits.max_pixels} pixel limit"
            )


def _pdf_pages(data: Buffer, dpi: int, limits: Limits) -> Iterator[np.ndarray]:
    renderer = pdf_renderer()
    with _pdf_file(data) as path:
        if renderer == "pdfium":
            yield from _pdfium_pages(path, dpi, limits)
            return
        sizes = _pdf_page_sizes(path)
        _check_pdf_limits(sizes, dpi, limits)
        for first, last in pdf_chunks(sizes, dpi, limits.pdf_chunk):
            images = _render_range(path, first, last, dpi)
            images.reverse()
            while images:  # each rendered page is let go as soon as it is converted
                im = images.pop()
                page = _with_dpi(to_rgb_array(im), dpi)
                im.close()
                del im
                yield page


# Pixels rendered per poppler call at most (the pages of a call are held together): letter pages
# at 200 dpi still go 4 at a time, 100-megapixel pages one at a time (#12 item 5: peak RSS).
PDF_CHUNK_PIXELS = 32_000_000


def pdf_chunks(
    sizes: list[tuple[float, float]], dpi: int, chunk: int, max_pixels: int | None = None
) -> Iterator[tuple[int, int]]:
    """(first, last) page ranges (1-based) for poppler calls: up to `chunk` pages, and no more
    than `max_pixels` (default PDF_CHUNK_PIXELS) rendered per call unless it is a single page."""
    max_pixels = PDF_CHUNK_PIXELS if max_pixels is None else max_pixels
    first, pixels = 1, 0.0
    for i, (w, h) in enumerate(sizes, 1):
        px = (w * dpi / 72) * (h * dpi / 72)
        if i > first and (i - first >= max(1, chunk) or pixels + px > max_pixels):
            yield first, i - 1
            first, pixels = i, 0.0
        pixels += px
    if sizes:
        yield first, len(sizes)


# ---- Images ------------------------------------------------------------------------------------


def _declared_size(data: Buffer, content_type: str) -> tuple[int, int] | None:
    """(width, height) from the header of formats where Pillow refuses zero sizes silently."""
    data = bytes(data[:32])
    try:
        if content_type == "image/png" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if content_type == "image/bmp" and len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
    except struct.error:
        return None
    return None


class _open_image:
    """Image.open with typed errors and the pixel limit checked before any pixel is decoded."""

    def __init__(self, data: Buffer, content_type: str, max_pixels: int = DEFAULT_LIMITS.max_pixels):
        self.data, self.content_type, self.max_pixels = data, content_type, max_pixels
        self.im: Image.Image | None = None
        self.fp: io.BytesIO | _BufferFile | None = None

    def __enter__(self) -> Image.Image:
        name = _NAMES.get(self.content_type, self.content_type)
        size = _declared_size(self.data, self.content_type)
        if size is not None and 0 in size:
            raise EmptyDocument(f"{name} image has zero size ({size[0]}x{size[1]} px)")
        # Pillow's own bomb guard: warns over MAX_IMAGE_PIXELS, raises over twice that. The
        # explicit check below is the real limit; this only makes Pillow stop earlier.
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < self.max_pixels:
            Image.MAX_IMAGE_PIXELS = self.max_pixels
        self.fp = fp = io.BytesIO(self.data) if isinstance(self.data, bytes) else _BufferFile(self.data)
        try:
            self.im = Image.open(fp)  # type: ignore[arg-type]  # any binary file object; lazy: reads the header only
        except Image.DecompressionBombError as e:
            raise TooLarge(f"{name} image over the {self.max_pixels} pixel limit: {e}") from e
        except Exception as e:
            raise CorruptDocument(f"{name} image could not be opened: {_reason(e)}") from e
        w, h = self.im.size
        if w == 0 or h == 0:
            raise EmptyDocument(f"{name} image has zero size ({w}x{h} px)")
        if w * h > self.max_pixels:
            raise TooLarge(f"{name} image is {w}x{h} px, over the {self.max_pixels} pixel limit")
        return self.im

    def __exit__(self, *exc) -> None:
        if self.im is not None:
            self.im.close()
        if self.fp is not None:
            self.fp.close()


class _BufferFile(io.RawIOBase):
    """A read-only file over a buffer that copies only what is read (io.BytesIO copies it all;
    an mmap itself as the file would be closed by Pillow with the image). It slices the buffer
    rather than holding a memoryview, so the caller may close its mmap at any time."""

    def __init__(self, data: Buffer):
        super().__init__()
        self._data, self._size, self._pos = data, len(data), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        chunk = self._data[self._pos : self._pos + len(b)]
        n = len(chunk)
        b[:n] = chunk
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos


def _reason(e: BaseException) -> str:
    """An exception as a short message without object reprs (Pillow names its BytesIO)."""
    if isinstance(e, Image.UnidentifiedImageError):
        return "not a valid image of its type, or its header is truncated"
    text = re.sub(r" <[^>]* at 0x[0-9a-f]+>", "", str(e)).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _frame_count(im: Image.Image, content_type: str) -> int:
    """Pages in an image file. Only TIFF is a multi-page format: the extra frames of a JPEG
    (MPO: a camera's preview or depth image), an APNG or an animated WebP are not pages."""
    if content_type != "image/tiff":
        return 1
    try:
        return int(getattr(im, "n_frames", 1))
    except Exception as e:  # a broken IFD chain surfaces here, as any exception type
        raise CorruptDocument(f"TIFF page list could not be read: {_reason(e)}") from e


class _LibtiffErrors:
    """libtiff reports some corrupt data only to its error handler and then carries on: a
    fax (CCITT G3/G4) page with bad code words decodes "fine", partly blank, with "Bad code
    word" on stderr. This handler, installed once into the libtiff that Pillow loaded,
    collects those messages for the thread decoding a page (`collect`), so the page fails
    as corrupt instead of passing silently; outside `collect` they still go to stderr."""

    _HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._callback: Any = None  # kept alive as long as libtiff may call it
        self._vsnprintf: Any = None

    @contextmanager
    def collect(self) -> Iterator[list[str]]:
        self._install()
        errors: list[str] = []
        self._local.errors = errors
        try:
            yield errors
        finally:
            self._local.errors = None

    def _install(self) -> None:
        with self._lock:
            if self._callback is not None:
                return
            self._callback = self._HANDLER(self._on_error)  # also marks "tried" if none found
            path = _loaded_library("libtiff")
            if path is None:
                return
            try:
                libtiff, libc = ctypes.CDLL(path), ctypes.CDLL(None)
                self._vsnprintf = libc.vsnprintf
                libtiff.TIFFSetErrorHandler.restype = ctypes.c_void_p
                libtiff.TIFFSetErrorHandler.argtypes = [self._HANDLER]
                libtiff.TIFFSetErrorHandler(self._callback)
            except (OSError, AttributeError):  # no such symbol: keep libtiff's own handler
                pass

    def _on_error(self, module: bytes | None, fmt: bytes | None, args: int | None) -> None:
        buf = ctypes.create_string_buffer(512)
        if self._vsnprintf is not None and fmt:
            self._vsnprintf(buf, len(buf), fmt, ctypes.c_void_p(args))
        text = f"{(module or b'libtiff').decode(errors='replace')}: {buf.value.decode(errors='replace')}"
        errors = getattr(self._local, "errors", None)
        if errors is None:
            print(text, file=sys.stderr)
        else:
            errors.append(text)


def _loaded_library(name: str) -> str | None:
    """Path of a shared library already mapped into this process (Linux), e.g. the libtiff
    that Pillow's _imaging module links (loaded once any TIFF was opened)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith(name) and ".so" in path:
                    return path
    except OSError:
        pass
    return None


_LIBTIFF = _LibtiffErrors()


def _load_frame(im: Image.Image, i: int, n: int) -> None:
    """Decode page i (of n); corrupt data, including what libtiff only reports, is an error."""
    with _LIBTIFF.collect() if im.format == "TIFF" else _no_errors() as errors:
        try:
            im.load()  # truncated or corrupt data surfaces here, at decode time
        except Exception as e:
            detail = f" ({errors[0]})" if errors else ""
            raise CorruptDocument(f"page {i} could not be decoded: {_reason(e)}{detail}") from e
    if errors:
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        raise CorruptDocument(f"page {i} of {n} is corrupt: {errors[0]}{more}")


@contextmanager
def _no_errors() -> Iterator[list[str]]:
    yield []


def _reduce_jpeg(im: Image.Image, image_side: int | None) -> bool:
    """Ask libjpeg for a scaled decode (Image.draft) when the page is at least twice image_side."""
    w, h = im.size
    if not image_side or im.format != "JPEG" or max(w, h) < 2 * image_side:
        return False
    k = image_side / max(w, h)
    im.draft("RGB", (max(1, int(w * k)), max(1, int(h * k))))
    return im.size != (w, h)


def _image_pages(
    data: Buffer, limits: Limits, content_type: str, image_side: int | None = None
) -> Iterator[np.ndarray]:
    with _open_image(data, content_type, limits.max_pixels) as im:
        n = _frame_count(im, content_type)
        if n > limits.max_pages:
            raise TooLarge(f"TIFF has {n} pages, over the {limits.max_pages} page limit")
        for i in range(1, n + 1):
            try:
                if i > 1:
                    im.seek(i - 1)
            except Exception as e:
                raise CorruptDocument(f"page {i} of {n} could not be read: {_reason(e)}") from e
            w, h = im.size
            if w == 0 or h == 0:
                raise EmptyDocument(f"page {i} has zero size ({w}x{h} px)")
            if w * h > limits.max_pixels:
                raise TooLarge(f"page {i} is {w}x{h} px, over the {limits.max_pixels} pixel limit")
            reduced = _reduce_jpeg(im, image_side)
            _load_frame(im, i, n)
            upright = _upright(im)
            page = to_rgb_array(upright)
            if reduced:
                turned = upright.size != im.size  # EXIF orientation swapped the axes
                raster = page.view(Raster)
                raster.source_size = (h, w) if turned else (w, h)
                raster.decoded_shape = (raster.shape[0], raster.shape[1])
                page = raster
            yield _with_dpi(page, im.info.get("dpi"))


def _upright(frame: Image.Image) -> Image.Image:
    """The frame as a person sees it: EXIF / TIFF orientation applied (each TIFF page has its
    own). Polygons then refer to the upright page. A broken orientation tag is ignored.
    An upright frame is returned itself, not copied (a 120 MP page is 480 MB in Pillow)."""
    try:
        orientation = frame.getexif().get(_ORIENTATION, 1)
        if orientation not in range(2, 9):
            return frame
        return ImageOps.exif_transpose(frame)
    except Exception:
        return frame


_ORIENTATION = 0x0112
_STRIP_PIXELS = 4_000_000  # huge pages convert in strips: temporaries stay ~12 MB, not 2x the page


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Normalise any Pillow mode (1, L, P, RGBA, LA, CMYK, I;16, I, F, ...) to HxWx3 uint8 RGB.

    A large page is converted a strip of rows at a time into one preallocated array: peak
    memory is the decoded image plus the result, not plus two more full-page copies (Pillow's
    converted image, then its bytes) - what keeps a page at the pixel limit under 2 GiB."""
    try:
        if im.mode.startswith("I;16") or im.mode in ("I", "F"):  # needs the whole page's range
            gray = _to_uint8(np.asarray(im), im.mode)
            return np.repeat(gray[:, :, None], 3, axis=2)
        w, h = im.size
        if w * h <= _STRIP_PIXELS:
            return _rgb(im)
        out = np.empty((h, w, 3), np.uint8)
        rows = max(1, _STRIP_PIXELS // w)
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            out[y0:y1] = _rgb(im.crop((0, y0, w, y1)))
        return out
    except (ValueError, OSError) as e:  # e.g. LAB or multi-channel float TIFFs
        raise UnsupportedType(f"image mode {im.mode} cannot be converted to RGB: {_reason(e)}") from e


def _rgb(im: Image.Image) -> np.ndarray:
    """One image (or strip) of a non-high-bit-depth mode as a writable HxWx3 uint8 array."""
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)  # transparent scans read as white paper
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8)


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth gray to 8 bits. 16-bit data keeps its meaning (65535 is white), so a
    blank page stays white and faint ink stays faint; 32-bit int / float data is read as
    8-bit, 16-bit or [0, 1] data when its values fit, else stretched to its own range.
    Converted a strip of rows at a time: no full-page float64 copy (8 bytes a pixel)."""
    lo, hi = _finite_range(arr)
    if mode.startswith("I;16"):
        scale, offset = 1 / 257.0, 0.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        scale, offset = 255.0, 0.0
    elif lo >= 0 and hi <= 255:
        scale, offset = 1.0, 0.0
    elif lo >= 0 and hi <= 65535:
        scale, offset = 1 / 257.0, 0.0
    elif hi > lo:
        scale, offset = 255.0 / (hi - lo), lo
    else:
        return np.full(arr.shape, 255, np.uint8)
    out = np.empty(arr.shape, np.uint8)
    for rows in _row_strips(arr):
        part = np.nan_to_num(arr[rows].astype(np.float64), nan=hi, posinf=hi, neginf=lo)
        out[rows] = np.round((part - offset) * scale).clip(0, 255).astype(np.uint8)
    return out


def _finite_range(arr: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite values; (0, 0) if there are none."""
    if arr.size == 0:
        return 0.0, 0.0
    if arr.dtype.kind in "iub":
        return float(arr.min()), float(arr.max())
    lo, hi = np.inf, -np.inf
    for rows in _row_strips(arr):
        part = arr[rows]
        finite = part[np.isfinite(part)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def _row_strips(arr: np.ndarray) -> Iterator[slice]:
    rows = max(1, _STRIP_PIXELS // max(1, int(np.prod(arr.shape[1:]))))
    for y0 in range(0, arr.shape[0], rows):
        yield slice(y0, y0 + rows)
