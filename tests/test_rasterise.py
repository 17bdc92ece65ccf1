"""transforms.rasterise: real poppler for PDFs, real Pillow decoders for images.

The document builders at the top (make_pdf, encode, ...) are also used by
tests/test_run_integration.py.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import re
import struct
import subprocess
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from PIL import Image

from batch.core.errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    InputError,
    TooLarge,
    UnsupportedType,
)
from transforms import rasterise
from transforms.rasterise import Limits, count_pages, iter_pages, sniff, to_rgb_array

# Pillow warns while reading the deliberately broken TIFFs below; the errors are what is tested
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")

# ---- document builders -------------------------------------------------------------------------

_PDF_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    s, j = list(range(256)), 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out, i, j = bytearray(), 0, 0
    for b in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(b ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def make_pdf(
    pages: Sequence[tuple[float, float, bytes]], user_password: str | None = None, extra_page_keys: str = ""
) -> bytes:
    """A minimal PDF written by hand: pages of (width pt, height pt, content stream).

    With `user_password`, the file uses the standard security handler (RC4 40-bit, R2) with
    that user password, so a reader needs it to open the file (an empty string gives an
    owner-password-only file that opens without one)."""
    n = len(pages)
    objs: dict[int, bytes] = {1: b"<< /Type /Catalog /Pages 2 0 R >>"}
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objs[2] = f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode()
    streams: dict[int, bytes] = {}
    for i, (w, h, content) in enumerate(pages):
        objs[3 + 2 * i] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w} {h}] {extra_page_keys}"
            f" /Contents {4 + 2 * i} 0 R /Resources << >> >>"
        ).encode()
        streams[4 + 2 * i] = content
    file_id = hashlib.md5(b"htr-batch test").digest()
    key = None
    if user_password is not None:
        perms = -44
        owner_key = hashlib.md5((b"owner-secret" + _PDF_PAD)[:32]).digest()[:5]
        o_entry = _rc4(owner_key, (user_password.encode() + _PDF_PAD)[:32])
        key = hashlib.md5(
            (user_password.encode() + _PDF_PAD)[:32] + o_entry + struct.pack("<i", perms) + file_id
        ).digest()[:5]
        u_entry = _rc4(key, _PDF_PAD)
        objs[3 + 2 * n] = (
            f"<< /Filter /Standard /V 1 /R 2 /O <{o_entry.hex()}> /U <{u_entry.hex()}> /P {perms} >>"
        ).encode()
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(set(objs) | set(streams)):
        offsets[num] = len(out)
        if num in streams:
            data = streams[num]
            if key is not None:
                obj_key = hashlib.md5(key + struct.pack("<I", num)[:3] + b"\0\0").digest()[:10]
                data = _rc4(obj_key, data)
            out += f"{num} 0 obj\n<< /Length {len(data)} >>\nstream\n".encode()
            out += data + b"\nendstream\nendobj\n"
        else:
            out += f"{num} 0 obj\n".encode() + objs[num] + b"\nendobj\n"
    size = max(offsets) + 1
    xref = len(out)
    out += f"xref\n0 {size}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offsets[k]:010d} 00000 n \n".encode() for k in range(1, size))
    trailer = f"trailer\n<< /Size {size} /Root 1 0 R /ID [<{file_id.hex()}> <{file_id.hex()}>]"
    if key is not None:
        trailer += f" /Encrypt {3 + 2 * n} 0 R"
    out += f"{trailer} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def rect(x: float, y: float, w: float, h: float) -> bytes:
    """A PDF content stream filling a black rectangle (PDF coordinates: origin bottom-left)."""
    return f"0 0 0 rg {x} {y} {w} {h} re f".encode()


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def page_with_box(size=(60, 40), box=(5, 5, 15, 15), mode="RGB", paper=None, ink=None) -> Image.Image:
    """White page with a black box (x0, y0, x1, y1 exclusive) in any mode."""
    white: Any = {"1": 1, "L": 255, "RGB": (255, 255, 255), "CMYK": (0, 0, 0, 0)}.get(mode)
    black: Any = {"1": 0, "L": 0, "RGB": (0, 0, 0), "CMYK": (0, 0, 0, 255)}.get(mode)
    im = Image.new(mode, size, white if paper is None else paper)
    im.paste(black if ink is None else ink, box)
    return im


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (8-bit RGB) with a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def multipage_tiff(frames: list[Image.Image], **kw) -> bytes:
    return encode(frames[0], "TIFF", save_all=True, append_images=frames[1:], **kw)


def tiff_ifd_offsets(data: bytes) -> list[int]:
    """Offsets of each IFD (one per page) of a little-endian TIFF."""
    assert data[:4] == b"II*\x00"
    out, off = [], struct.unpack("<I", data[4:8])[0]
    while off:
        out.append(off)
        n = struct.unpack("<H", data[off : off + 2])[0]
        off = struct.unpack("<I", data[off + 2 + 12 * n : off + 6 + 12 * n])[0]
    return out


def tiff_set_short_tag(data: bytes, page: int, tag: int, value: int) -> bytes:
    """Rewrite a SHORT tag's value in the IFD of one page (0-based)."""
    ifd = tiff_ifd_offsets(data)[page]
    n = struct.unpack("<H", data[ifd : ifd + 2])[0]
    out = bytearray(data)
    for k in range(n):
        e = ifd + 2 + 12 * k
        if struct.unpack("<H", data[e : e + 2])[0] == tag:
            out[e + 8 : e + 10] = struct.pack("<H", value)
            return bytes(out)
    raise AssertionError(f"tag {tag} not in IFD {page}")


def tiff_break_page_list(data: bytes, page: int = 0) -> bytes:
    """Point the 'next page' link of one page's IFD past the end of the file."""
    ifd = tiff_ifd_offsets(data)[page]
    n = struct.unpack("<H", data[ifd : ifd + 2])[0]
    link = ifd + 2 + 12 * n
    return data[:link] + struct.pack("<I", len(data) + 4096) + data[link + 4 :]


def tiff_with_corrupt_page(n_pages: int = 3, bad_page: int = 1) -> bytes:
    """A deflate-compressed multi-page TIFF whose page `bad_page` (0-based) has garbage data."""
    frames = [page_with_box((64, 48), (8 + 4 * i, 8, 30, 30), "L") for i in range(n_pages)]
    data = multipage_tiff(frames, compression="tiff_deflate")
    im = Image.open(io.BytesIO(data))
    im.seek(bad_page)
    (off,), (count,) = im.tag_v2[273], im.tag_v2[279]  # type: ignore[attr-defined]  # StripOffsets, StripByteCounts
    out = bytearray(data)
    out[off : off + count] = b"\xff" * count
    return bytes(out)


def jpeg_with_orientation(orientation: int, size=(60, 40), box=(0, 0, 12, 12)) -> bytes:
    exif = Image.Exif()
    exif[274] = orientation
    return encode(page_with_box(size, box), "JPEG", quality=95, exif=exif.tobytes())


def ink(page: np.ndarray) -> np.ndarray:
    """Boolean mask of dark pixels."""
    return page.mean(axis=2) < 128


def pages(data: bytes, **kw) -> list[np.ndarray]:
    out = list(iter_pages(data, **kw))
    for p in out:
        assert p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 and p.flags.c_contiguous
    return out


# ---- type sniffing: content decides, never the name --------------------------------------------


def test_sniff_by_magic_bytes():
    assert sniff(make_pdf([(100, 100, b"")])) == rasterise.PDF
    assert sniff(encode(page_with_box(), "JPEG")) == "image/jpeg"
    assert sniff(encode(page_with_box(), "PNG")) == "image/png"
    assert sniff(encode(page_with_box(), "TIFF")) == "image/tiff"
    assert sniff(encode(page_with_box(), "TIFF").replace(b"II*\x00", b"MM\x00*", 1)) == "image/tiff"
    assert sniff(encode(page_with_box(), "BMP")) == "image/bmp"
    assert sniff(encode(page_with_box(), "WEBP", lossless=True)) == "image/webp"


def test_pdf_header_after_junk_is_still_a_pdf():
    data = b"junk from a mail gateway\r\n" + make_pdf([(100, 50, rect(0, 0, 50, 50))])
    assert sniff(data) == rasterise.PDF
    (page,) = pages(data, dpi=72)
    assert page.shape == (50, 100, 3)


def test_jpeg_mentioning_pdf_in_its_metadata_is_a_jpeg():
    data = encode(page_with_box(), "JPEG", comment=b"scanned from %PDF-1.7 original")
    assert b"%PDF-" in data[:1024]
    assert sniff(data) == "image/jpeg"
    (page,) = pages(data)
    assert page.shape == (40, 60, 3)


def test_mislabelled_files_are_read_by_content(tmp_path):
    png_as_pdf = tmp_path / "scan.pdf"
    png_as_pdf.write_bytes(encode(page_with_box(), "PNG"))
    pdf_as_jpg = tmp_path / "scan.jpg"
    pdf_as_jpg.write_bytes(make_pdf([(80, 30, rect(0, 0, 40, 30))]))
    (a,) = pages(png_as_pdf.read_bytes())
    assert a.shape == (40, 60, 3) and ink(a)[5:15, 5:15].all() and ink(a).sum() == 100
    (b,) = pages(pdf_as_jpg.read_bytes(), dpi=72)
    assert b.shape == (30, 80, 3) and ink(b)[:, :40].all() and not ink(b)[:, 40:].any()


# ---- PDFs ----------------------------------------------------------------------------------------


def test_pillow_multipage_pdf_pages_in_order_with_sizes():
    # page k has a black box at x = 20 k; sizes differ per page (1 px = 1 pt at 72 dpi)
    ims = [page_with_box((200, 100 + 20 * k), (20 * k, 10, 20 * k + 20, 30)) for k in range(3)]
    data = encode(ims[0], "PDF", save_all=True, append_images=ims[1:], resolution=72)
    assert count_pages(data) == 3
    out = pages(data, dpi=72)
    assert [p.shape for p in out] == [(100, 200, 3), (120, 200, 3), (140, 200, 3)]
    for k, p in enumerate(out):
        ys, xs = np.nonzero(ink(p))
        assert abs(xs.mean() - (20 * k + 10)) < 2 and abs(ys.mean() - 20) < 2


def test_pdf_dpi_scales_page_size():
    data = make_pdf([(72, 144, rect(0, 72, 72, 72))])  # 1 x 2 inch, top half black
    (p100,) = pages(data, dpi=100)
    assert p100.shape == (200, 100, 3)
    assert ink(p100)[:100].mean() > 0.97 and ink(p100)[100:].mean() < 0.03


def test_pdf_renders_the_crop_box_that_pdfinfo_measures():
    # a 20000 pt media box (at 200 dpi ~ 3e9 px) cropped to 100 x 50 pt: only the crop box
    # is rendered, so it is not too large, and its size is the crop box's
    data = make_pdf([(20000, 20000, rect(0, 0, 50, 50))], extra_page_keys="/CropBox [0 0 100 50]")
    (page,) = pages(data, dpi=72)
    assert page.shape == (50, 100, 3)
    assert ink(page)[:, :50].mean() > 0.97 and ink(page)[:, 50:].mean() < 0.03


def test_pdf_page_rotation_is_applied():
    data = make_pdf([(200, 100, rect(0, 0, 200, 20))], extra_page_keys="/Rotate 90")
    (page,) = pages(data, dpi=72)
    assert page.shape == (200, 100, 3)  # portrait after the 90 degree turn
    # the bar along the bottom edge ends up along the left edge after a clockwise turn
    assert ink(page)[:, :20].mean() > 0.97 and ink(page)[:, 25:].mean() < 0.03


def _spy_on_poppler_calls(monkeypatch) -> list[tuple[int, int]]:
    """The page ranges of each pdftoppm call from now on (the renderer still runs)."""
    calls: list[tuple[int, int]] = []
    real = rasterise._render_range

    def spy(path, first, last, dpi):
        calls.append((first, last))
        return real(path, first, last, dpi)

    monkeypatch.setattr(rasterise, "_render_range", spy)
    return calls


def test_pdf_streams_page_by_page(monkeypatch):
    """30 pages, 4 per poppler call: the first page comes out after one small render, and
    pages are rendered only as they are consumed."""
    n = 30
    data = make_pdf([(40 + k, 40, rect(0, 0, 10, 10)) for k in range(n)])  # page k is 40 + k wide
    calls = _spy_on_poppler_calls(monkeypatch)
    gen = iter_pages(data, dpi=72, limits=Limits(pdf_chunk=4))
    assert inspect.isgenerator(gen)
    assert calls == []  # nothing is done before the first page is asked for
    first = next(gen)
    assert first.shape == (40, 40, 3)
    assert calls == [(1, 4)]
    rest = [next(gen) for _ in range(4)]  # pages 2..5
    assert calls == [(1, 4), (5, 8)]
    rest += list(gen)
    assert len(calls) == 8 and calls[-1] == (29, 30)
    assert [p.shape[1] for p in [first, *rest]] == [40 + k for k in range(n)]


def test_pdf_pages_over_the_chunk_pixels_render_one_at_a_time(monkeypatch):
    """Pages of a poppler call are held together: big pages go one per call (peak RSS of a PDF
    of 100-megapixel pages), small ones still pdf_chunk at a time."""
    assert list(rasterise.pdf_chunks([(612, 792)] * 10, 200, 4)) == [(1, 4), (5, 8), (9, 10)]
    assert list(rasterise.pdf_chunks([(3600, 3600)] * 3, 200, 4)) == [(1, 1), (2, 2), (3, 3)]
    mixed = [(612, 792), (3600, 3600), (612, 792), (612, 792)]
    assert list(rasterise.pdf_chunks(mixed, 200, 4)) == [(1, 1), (2, 2), (3, 4)]
    assert list(rasterise.pdf_chunks([], 200, 4)) == []

    data = make_pdf([(40, 40, rect(0, 0, 10, 10))] * 5 + [(80, 80, rect(0, 0, 10, 10))] * 2)
    calls = _spy_on_poppler_calls(monkeypatch)
    monkeypatch.setattr(rasterise, "PDF_CHUNK_PIXELS", 3 * 40 * 40)  # three small pages per call
    pages = list(iter_pages(data, dpi=72, limits=Limits(pdf_chunk=4)))
    assert [p.shape[:2] for p in pages] == [(40, 40)] * 5 + [(80, 80)] * 2
    assert calls == [(1, 3), (4, 5), (6, 6), (7, 7)]


def test_pdf_with_owner_password_only_is_processed():
    data = make_pdf([(100, 50, rect(0, 0, 25, 50))], user_password="")
    (page,) = pages(data, dpi=72)
    assert page.shape == (50, 100, 3)
    assert abs(ink(page).mean() - 0.25) < 0.03  # the content stream really was decrypted


def test_encrypted_pdf_needing_a_user_password(tmp_path):
    data = make_pdf([(100, 50, rect(0, 0, 25, 50))], user_password="s3cret")
    # the file is valid: poppler opens it with the password
    path = tmp_path / "locked.pdf"
    path.write_bytes(data)
    ok = subprocess.run(["pdfinfo", "-upw", "s3cret", str(path)], capture_output=True, text=True)
    assert ok.returncode == 0 and "Encrypted:       yes" in ok.stdout
    with pytest.raises(EncryptedDocument, match="encrypted.*password"):
        list(iter_pages(data))
    with pytest.raises(EncryptedDocument):
        count_pages(data)


# ---- images --------------------------------------------------------------------------------------


def test_multipage_tiff_pages_in_order():
    frames = [page_with_box((50 + 10 * k, 40), (10 * k, 0, 10 * k + 10, 10), "L") for k in range(3)]
    for compression in (None, "tiff_deflate", "group4"):
        fr = [f.convert("1") for f in frames] if compression == "group4" else frames
        data = multipage_tiff(fr, compression=compression) if compression else multipage_tiff(fr)
        assert count_pages(data) == 3
        out = pages(data)
        assert [p.shape for p in out] == [(40, 50, 3), (40, 60, 3), (40, 70, 3)]
        for k, p in enumerate(out):
            assert ink(p)[0:10, 10 * k : 10 * k + 10].all() and ink(p).sum() == 100, compression


@pytest.mark.parametrize(
    "orientation, shape, corner",
    [
        (1, (40, 60), "tl"),
        (3, (40, 60), "br"),  # rotated 180
        (6, (60, 40), "tr"),  # camera turned: 90 degrees clockwise to view
        (8, (60, 40), "bl"),  # 90 degrees counter-clockwise to view
    ],
)
def test_jpeg_exif_orientation_gives_the_upright_page(orientation, shape, corner):
    out = pages(jpeg_with_orientation(orientation))
    assert len(out) == 1 and out[0].shape[:2] == shape
    m = ink(out[0])
    h, w = m.shape
    corners = {"tl": m[:12, :12], "tr": m[:12, w - 12 :], "br": m[h - 12 :, w - 12 :], "bl": m[h - 12 :, :12]}
    for name, region in corners.items():
        assert (region.mean() > 0.9) == (name == corner), (name, region.mean())


def test_tiff_orientation_is_applied_per_page():
    frames = [page_with_box((60, 40), (0, 0, 12, 12), "L") for _ in range(2)]
    data = multipage_tiff(frames, tiffinfo={274: 1})
    data = tiff_set_short_tag(data, 1, 274, 6)  # only the second page is turned
    first, second = pages(data)
    assert first.shape[:2] == (40, 60) and ink(first)[:12, :12].all()
    assert second.shape[:2] == (60, 40) and ink(second)[:12, -12:].all()
    assert not ink(second)[:12, :12].any()


def _white_black(page: np.ndarray, box=(5, 5, 15, 15)) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = box
    inside = np.zeros(page.shape[:2], bool)
    inside[y0:y1, x0:x1] = True
    return page[~inside], page[inside]


@pytest.mark.parametrize(
    "name", ["L", "RGB", "1", "P", "LA", "CMYK-jpeg", "CMYK-tiff", "I;16", "I;16-tiff", "bmp", "webp"]
)
def test_image_modes_become_rgb_uint8(name):
    box = (5, 5, 15, 15)
    if name in ("L", "RGB", "1"):
        data = encode(page_with_box(box=box, mode=name), "PNG")
    elif name == "P":
        data = encode(page_with_box(box=box).convert("P", palette=Image.Palette.ADAPTIVE, colors=4), "PNG")
    elif name == "LA":
        data = encode(page_with_box(box=box, mode="L").convert("LA"), "PNG")
    elif name == "CMYK-jpeg":
        data = encode(page_with_box(box=box, mode="CMYK"), "JPEG", quality=100)
    elif name == "CMYK-tiff":
        data = encode(page_with_box(box=box, mode="CMYK"), "TIFF")
    elif name.startswith("I;16"):
        arr = np.full((40, 60), 65535, np.uint16)
        arr[5:15, 5:15] = 0
        im = Image.fromarray(arr)
        assert im.mode == "I;16"
        data = encode(im, "TIFF" if name.endswith("tiff") else "PNG")
    elif name == "bmp":
        data = encode(page_with_box(box=box), "BMP")
    else:
        data = encode(page_with_box(box=box), "WEBP", lossless=True)
    (page,) = pages(data)
    assert page.shape == (40, 60, 3)
    paper, ink_ = _white_black(page, box)
    tol = 8 if "jpeg" in name else 0
    assert paper.min() >= 255 - tol and ink_.max() <= tol, (paper.min(), ink_.max())


def test_transparent_pixels_are_white_paper():
    rgba = Image.new("RGBA", (60, 40), (0, 0, 0, 0))  # fully transparent black
    rgba.paste((0, 0, 0, 255), (5, 5, 15, 15))  # opaque black box
    rgba.paste((0, 0, 255, 128), (30, 5, 40, 15))  # half-transparent blue
    (page,) = pages(encode(rgba, "PNG"))
    assert (page[20:, :] == 255).all()
    assert (page[5:15, 5:15] == 0).all()
    r, g, b = page[10, 35]
    assert 120 <= r <= 135 and 120 <= g <= 135 and b == 255
    # palette image with a transparent index
    pal = Image.new("P", (60, 40), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (5, 5, 15, 15))
    (page,) = pages(encode(pal, "PNG", transparency=0))
    assert (page[20:, :] == 255).all() and (page[5:15, 5:15] == [255, 0, 0]).all()


def test_sixteen_bit_gray_keeps_its_levels():
    arr = np.full((20, 30), 65535, np.uint16)
    arr[:, :10] = 32896  # mid gray: 128 in 8 bits
    arr[:, 10:20] = 52000  # faint ink stays faint, it is not stretched to black
    (page,) = pages(encode(Image.fromarray(arr), "PNG"))
    assert (page[:, :10] == 128).all() and (page[:, 10:20] == round(52000 / 257)).all()
    assert (page[:, 20:] == 255).all()
    # a blank 16-bit page is white, not black
    (blank,) = pages(encode(Image.fromarray(np.full((20, 30), 65535, np.uint16)), "PNG"))
    assert (blank == 255).all()


def test_to_rgb_array_wide_modes():
    f01 = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert to_rgb_array(f01)[0, :, 0].tolist() == [0, 128, 255]
    i16 = Image.fromarray(np.array([[0, 257 * 100, 65535]], np.int32))
    assert i16.mode == "I"
    assert to_rgb_array(i16)[0, :, 0].tolist() == [0, 100, 255]
    i8 = Image.fromarray(np.array([[0, 100, 255]], np.int32))
    assert to_rgb_array(i8)[0, :, 0].tolist() == [0, 100, 255]
    odd = Image.fromarray(np.array([[-1000.0, 0.0, 1000.0]], np.float32))
    assert to_rgb_array(odd)[0, :, 0].tolist() == [0, 128, 255]
    flat = Image.fromarray(np.full((2, 2), -5.0, np.float32))
    assert (to_rgb_array(flat) == 255).all()
    with pytest.raises(UnsupportedType, match="mode La cannot be converted"):
        to_rgb_array(Image.new("La", (4, 4)))  # a mode Pillow cannot convert at all


def test_extra_frames_of_jpeg_and_png_are_not_pages():
    main = page_with_box((60, 40))
    preview = Image.new("RGB", (16, 12), "black")
    mpo = encode(main, "MPO", save_all=True, append_images=[preview])  # camera JPEG + preview
    assert sniff(mpo) == "image/jpeg" and Image.open(io.BytesIO(mpo)).n_frames == 2
    assert count_pages(mpo) == 1
    assert [p.shape for p in pages(mpo)] == [(40, 60, 3)]
    apng = encode(main, "PNG", save_all=True, append_images=[preview.resize((60, 40))])
    assert count_pages(apng) == 1 and len(pages(apng)) == 1


# ---- bad inputs: each a typed error with a clear message ------------------------------------------


def _truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def _noise(size=(120, 90)) -> Image.Image:
    return Image.effect_noise(size, 60).convert("RGB")


BAD_INPUTS = {
    "zero-byte": (b"", EmptyDocument, "zero-byte"),
    "all-zero-bytes": (b"\0" * 4096, EmptyDocument, "zero bytes"),
    "text-file": (b"Dear Sir,\nplease find attached\n", UnsupportedType, "unknown document type"),
    "gif": (encode(page_with_box(), "GIF"), UnsupportedType, "unknown document type"),
    "truncated-jpeg": (_truncated(encode(_noise(), "JPEG")), CorruptDocument, "page 1.*truncated"),
    "truncated-png": (_truncated(encode(_noise(), "PNG")), CorruptDocument, "page 1.*truncated"),
    "png-header-only": (encode(_noise(), "PNG")[:30], CorruptDocument, "PNG image could not be opened"),
    "corrupt-pdf": (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage\n",
        CorruptDocument,
        "PDF could not be read",
    ),
    "truncated-pdf": (
        _truncated(make_pdf([(100, 100, rect(0, 0, 9, 9))] * 3), 0.4),
        CorruptDocument,
        "PDF could not be read",
    ),
    "encrypted-pdf": (
        make_pdf([(100, 100, rect(0, 0, 9, 9))], user_password="pw"),
        EncryptedDocument,
        "encrypted",
    ),
    "png-bomb": (png_claiming(100_000, 100_000), TooLarge, "pixel limit"),
    "png-zero-width": (png_claiming(0, 100), EmptyDocument, "zero size"),
    "png-zero-height": (png_claiming(100, 0), EmptyDocument, "zero size"),
    "bmp-zero-width": (
        encode(page_with_box(), "BMP")[:18] + struct.pack("<i", 0) + encode(page_with_box(), "BMP")[22:],
        EmptyDocument,
        "zero size",
    ),
    "pdf-zero-size-page": (
        make_pdf([(100, 100, b""), (0.1, 0.1, b"")]),
        EmptyDocument,
        "page 2 has zero size",
    ),
    "pdf-no-pages": (make_pdf([]), EmptyDocument, "no pages"),
    "pdf-page-over-pixel-limit": (
        make_pdf([(100, 100, b""), (20000, 20000, b"")]),
        TooLarge,
        "page 2 .*pixel limit",
    ),
    "tiff-broken-page-list": (
        tiff_break_page_list(multipage_tiff([_noise().convert("L")] * 3)),
        CorruptDocument,
        "TIFF page list could not be read",
    ),
    "tiff-truncated-last-page": (
        multipage_tiff([_noise().convert("L")] * 3)[:-300],
        CorruptDocument,
        "page 3 could not be decoded.*truncated",
    ),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_raises_typed_error(name):
    data, error, message = BAD_INPUTS[name]
    with pytest.raises(error, match=message) as info:
        list(iter_pages(data))
    assert isinstance(info.value, InputError) and info.value.stage == "decode"
    assert not re.search(r"0x[0-9a-f]{6,}", str(info.value))  # no object reprs in messages


def test_bad_input_fails_count_pages_too():
    for name in (
        "zero-byte",
        "text-file",
        "corrupt-pdf",
        "encrypted-pdf",
        "png-bomb",
        "tiff-broken-page-list",
        "pdf-no-pages",
    ):
        data, error, _ = BAD_INPUTS[name]
        with pytest.raises(error):
            count_pages(data)


def test_pixel_limit_applies_to_every_image_page():
    small = Limits(max_pixels=5000)
    with pytest.raises(TooLarge, match="100x100 px, over the 5000 pixel limit"):
        list(iter_pages(encode(Image.new("L", (100, 100), 255), "PNG"), limits=small))
    # a TIFF whose first page is fine and whose second is over the limit
    data = multipage_tiff([Image.new("L", (50, 50), 255), Image.new("L", (100, 100), 255)])
    it = iter_pages(data, limits=small)
    assert next(it).shape == (50, 50, 3)
    with pytest.raises(TooLarge, match="page 2"):
        next(it)
    # a PDF page measured before rendering: 100 x 100 pt at 72 dpi is 10000 px
    with pytest.raises(TooLarge, match="page 1 would be 100x100 px at 72 dpi"):
        list(iter_pages(make_pdf([(100, 100, b"")]), dpi=72, limits=small))
    (ok,) = pages(make_pdf([(100, 100, b"")]), dpi=36, limits=small)
    assert ok.shape == (50, 50, 3)


def test_page_limit():
    pdf = make_pdf([(50, 50, b"")] * 3)
    with pytest.raises(TooLarge, match="3 pages, over the 2 page limit"):
        list(iter_pages(pdf, limits=Limits(max_pages=2)))
    assert len(pages(pdf, dpi=72, limits=Limits(max_pages=3))) == 3
    tiff = multipage_tiff([Image.new("L", (8, 8), 255)] * 3)
    with pytest.raises(TooLarge, match="3 pages, over the 2 page limit"):
        list(iter_pages(tiff, limits=Limits(max_pages=2)))


def test_byte_limit():
    data = encode(page_with_box(), "PNG")
    with pytest.raises(TooLarge, match="byte limit"):
        list(iter_pages(data, limits=Limits(max_bytes=len(data) - 1)))
    assert len(pages(data, limits=Limits(max_bytes=len(data)))) == 1


def test_tiff_with_a_corrupt_page_yields_good_pages_then_fails():
    data = tiff_with_corrupt_page(n_pages=3, bad_page=1)
    it = iter_pages(data)
    first = next(it)
    assert first.shape == (48, 64, 3) and ink(first)[8:30, 8:30].all()
    with pytest.raises(CorruptDocument, match="page 2 could not be decoded"):
        next(it)


# ---- buffers other than bytes: the worker maps large objects instead of reading them -------------


@pytest.mark.parametrize("name", ["pdf", "tiff", "jpeg"])
def test_memory_mapped_documents(tmp_path, name):
    import mmap

    data = {
        "pdf": make_pdf([(80, 40, rect(0, 0, 40, 40)), (60, 60, b"")]),
        "tiff": multipage_tiff([page_with_box((60, 40), mode="L")] * 2, compression="tiff_deflate"),
        "jpeg": jpeg_with_orientation(6),
    }[name]
    path = tmp_path / "doc"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert sniff(mm) == sniff(data)
        assert count_pages(mm) == count_pages(data)
        got = pages(mm, dpi=72)
        assert [p.shape for p in got] == [p.shape for p in pages(data, dpi=72)]
        assert all((a == b).all() for a, b in zip(got, pages(data, dpi=72)))
        assert [p.shape for p in pages(memoryview(data), dpi=72)] == [p.shape for p in got]
        # a consumer that stops after one page can still close its map (no buffer held)
        partial = iter_pages(mm, dpi=72)
        next(partial)
    partial.close()


def test_memory_mapped_bad_documents(tmp_path):
    import mmap

    for data, error in [
        (b"\0" * 5000, EmptyDocument),
        (b"plain text " * 10, UnsupportedType),
        (_truncated(encode(_noise(), "PNG")), CorruptDocument),
    ]:
        path = tmp_path / "doc"
        path.write_bytes(data)
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            with pytest.raises(error):
                list(iter_pages(mm))


# ---- large JPEGs decoded reduced (iter_pages image_side) ------------------------------------------


def _jpeg(w: int, h: int, orientation: int | None = None) -> bytes:
    im = Image.new("RGB", (w, h), "white")
    im.paste((0, 0, 0), (w // 4, h // 4, w // 2, h // 2))  # a dark block a quarter in
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


def test_large_jpeg_is_decoded_reduced_and_knows_its_source_size():
    data = _jpeg(2400, 1800)
    full = next(iter_pages(data))
    page = next(iter_pages(data, image_side=500))
    assert full.shape == (1800, 2400, 3) and rasterise.source_scale(full) == (1.0, 1.0)
    assert page.shape == (450, 600, 3)  # 1/4: the smallest reduction still >= 500
    assert page.source_size == (2400, 1800)
    assert rasterise.source_scale(page) == (4.0, 4.0)
    assert rasterise.source_scale(page[:10]) == (1.0, 1.0)  # a crop is its own pixels
    # the content is where it was: the dark block starts a quarter in, at either scale
    assert page[450 // 4 + 5, 600 // 4 + 5].max() < 60 and page[5, 5].min() > 200


def test_reduced_jpeg_source_size_follows_exif_rotation():
    page = next(iter_pages(_jpeg(2400, 1800, orientation=6), image_side=500))  # 90 degrees
    assert page.shape[:2] == (600, 450) and page.source_size == (1800, 2400)


def test_small_jpegs_and_other_types_are_decoded_in_full():
    assert next(iter_pages(_jpeg(900, 700), image_side=500)).shape == (700, 900, 3)  # < 2x
    buf = io.BytesIO()
    Image.new("RGB", (2400, 1800), "white").save(buf, "PNG")
    assert next(iter_pages(buf.getvalue(), image_side=500)).shape == (1800, 2400, 3)
