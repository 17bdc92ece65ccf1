"""Bad input that is not a bad document: an input tree with symlink loops, dangling links,
FIFOs and unreadable folders, and a multi-page TIFF with one corrupt page. None of it may
crash a run or pass silently; each becomes a skip or an error record naming it."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from batch import storage
from batch.core.errors import CorruptDocument
from batch.outputs import read_table
from tests.worker_helpers import htr_inprocess, png
from transforms.rasterise import iter_pages


def fax_tiff(pages: int = 3, corrupt: int | None = None) -> bytes:
    """A multi-page CCITT G4 TIFF; page `corrupt` (1-based) has its strip scrambled."""
    rng = np.random.default_rng(0)
    ims = [
        Image.fromarray((rng.random((120, 160)) > 0.5).astype(np.uint8) * 255).convert("1")
        for _ in range(pages)
    ]
    buf = io.BytesIO()
    ims[0].save(buf, format="TIFF", save_all=True, append_images=ims[1:], compression="group4")
    data = bytearray(buf.getvalue())
    if corrupt:
        with Image.open(io.BytesIO(bytes(data))) as im:
            im.seek(corrupt - 1)
            start, size = im.tag_v2[273][0], im.tag_v2[279][0]  # type: ignore[attr-defined]  # a TIFF
        for i in range(start + 4, start + size - 4):
            data[i] = (data[i] * 7 + 13) % 256
    return bytes(data)


def test_multipage_tiff_with_a_corrupt_fax_page_is_an_error_not_a_blank_page(capfd):
    assert len(list(iter_pages(fax_tiff()))) == 3  # the healthy file reads, without complaint
    with pytest.raises(CorruptDocument, match=r"page 2 of 3 is corrupt: Fax4Decode: "):
        list(iter_pages(fax_tiff(corrupt=2)))
    assert "Fax4Decode" not in capfd.readouterr().err  # reported in the error, not on stderr


def test_a_hostile_input_tree_never_stops_the_run(tmp_path, one_word_models, capsys):
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    (inp / "a.png").write_bytes(png(1))
    (inp / "sub" / "b.png").write_bytes(png(2))
    os.symlink("loop", inp / "loop")  # ELOOP on stat
    os.symlink(inp / "nowhere.png", inp / "dangling.png")
    os.symlink(inp, inp / "sub" / "up")  # a folder link: not followed, no cycle
    os.mkfifo(inp / "pipe.png")  # reading it would block forever
    (inp / "locked").mkdir()
    (inp / "locked" / "c.png").write_bytes(png(3))
    os.chmod(inp / "locked", 0)
    try:
        keys = [o.key for o in storage.list_objects(str(inp))]
        readable_locked = os.access(inp / "locked", os.R_OK)  # root reads it anyway
        assert keys == ["a.png", "dangling.png"] + (["locked/c.png"] if readable_locked else []) + [
            "loop",
            "sub/b.png",
        ]

        rc, s = htr_inprocess(
            capsys, "run", inp, tmp_path / "out", "--models", one_word_models, "--no-progress"
        )
    finally:
        os.chmod(inp / "locked", 0o755)
    assert rc == 3 and s["errors"] == 2 and s["documents"] == len(keys)
    errors = {r["source_uri"]: r for r in read_table(str(tmp_path / "out"), "errors").to_pylist()}
    assert set(errors) == {str(inp / "loop"), str(inp / "dangling.png")}
    assert {r["stage"] for r in errors.values()} == {"fetch"}
    assert "symbolic links" in errors[str(inp / "loop")]["message"]
    assert "no such file" in errors[str(inp / "dangling.png")]["message"]
