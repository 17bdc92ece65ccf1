"""`htr visualise` draws polygons over pages from a manifest or from run output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from batch.cli import main as htr
from batch.core.errors import EXIT_BAD_ARGS, EXIT_OK, EXIT_PARTIAL
from batch.core.manifest import Annotation, Sample
from batch.core.schema import DocumentRecord, Line, Page, Point, Word
from jobs.manifests import write_manifest


def _page(path, size=(400, 300)):
    img = Image.new("RGB", size, (250, 248, 240))
    img.paste((20, 20, 20), (50, 60, 150, 90))
    img.save(path)


def _reddish(path) -> int:
    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(((a[..., 0] > 150) & (a[..., 1] < 100) & (a[..., 2] < 100)).sum())


def test_visualise_manifest(tmp_path):
    _page(tmp_path / "p.png")
    quad = [{"x": 50, "y": 60}, {"x": 150, "y": 60}, {"x": 150, "y": 90}, {"x": 50, "y": 90}]
    write_manifest(
        [Sample("missing.png", []), Sample("p.png", [Annotation("Dear", quad, 0, "H")])],
        tmp_path / "manifest.jsonl",
    )
    out = tmp_path / "viz"
    assert htr(["visualise", str(tmp_path / "manifest.jsonl"), "--out", str(out)]) == EXIT_PARTIAL
    [png] = sorted(out.glob("*.png"))
    assert Image.open(png).size == (400, 300) and _reddish(png) > 100


def test_visualise_output_documents(tmp_path):
    _page(tmp_path / "scan.png")
    word = Word("Dear", 0.2, 0.9, [Point(50, 60), Point(150, 60), Point(150, 90), Point(50, 90)])
    doc = DocumentRecord(
        "abc123",
        str(tmp_path / "scan.png"),
        [Page(1, 400, 300, [Line(0, [word])])],
        "m1",
        "run1",
        0,
        "image/png",
    )
    (tmp_path / "out" / "documents").mkdir(parents=True)
    (tmp_path / "out" / "documents" / "abc123.json").write_text(json.dumps(doc.to_json()))
    out = tmp_path / "viz"
    assert htr(["visualise", str(tmp_path / "out"), "--out", str(out)]) == EXIT_OK
    assert (out / "abc123_p001.png").exists() and _reddish(out / "abc123_p001.png") > 50


def test_visualise_bad_source(tmp_path):
    assert htr(["visualise", str(tmp_path / "nothing"), "--out", str(tmp_path / "v")]) == EXIT_BAD_ARGS
    (tmp_path / "empty").mkdir()
    assert htr(["visualise", str(tmp_path / "empty"), "--out", str(tmp_path / "v")]) == EXIT_BAD_ARGS
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    assert htr(["visualise", str(tmp_path / "broken.jsonl"), "--out", str(tmp_path / "v")]) == EXIT_BAD_ARGS


# ---- the HTML review page, in a real headless browser ------------------------------------------------

import base64  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
from html.parser import HTMLParser  # noqa: E402

import pytest  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3/4): no driver, no
    extra package. Just what the test needs: open a page, evaluate JS, move the mouse, screenshot."""

    def __init__(self, profile: Path):
        to_browser_r, self._send_fd = os.pipe()
        self._recv_fd, from_browser_w = os.pipe()

        def fds():  # the child's fd 3 reads our commands, fd 4 writes its answers
            r, w = os.dup(to_browser_r) + 100, os.dup(from_browser_w) + 100  # out of 3/4's way
            os.dup2(to_browser_r, r)
            os.dup2(from_browser_w, w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        assert CHROMIUM is not None  # the tests using this skip without one
        self.proc = subprocess.Popen(  # pass_fds: kept open through the close after preexec_fn
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf, self._id = b"", 0
        self.events: list[Any] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: bool = False, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._send_fd, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply.get("method"))

    def _read(self) -> dict:
        while b"\0" not in self._buf:
            chunk = os.read(self._recv_fd, 1 << 16)
            assert chunk, "chromium closed the pipe"
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def page(self, method: str, **params):
        return self.call(method, session=True, **params)

    def open(self, url: str, width: int, height: int) -> None:
        self.page("Page.enable")
        self.page(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.page("Page.navigate", url=url)
        while "Page.loadEventFired" not in self.events:
            self.events.append(self._read().get("method"))

    def js(self, expression: str):
        return self.page("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self) -> Image.Image:
        data = self.page("Page.captureScreenshot", format="png")["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except AssertionError:
            pass
        self.proc.wait(timeout=30)
        os.close(self._send_fd)
        os.close(self._recv_fd)


class _Polygons(HTMLParser):
    def __init__(self):
        super().__init__()
        self.words: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "polygon":
            self.words.append(dict(attrs))


def _review_output(tmp_path: Path) -> Path:
    img = Image.new("RGB", (600, 300), (250, 248, 240))
    for x0, x1 in ((50, 150), (200, 330), (380, 520)):
        img.paste((30, 30, 30), (x0, 110, x1, 150))
    img.save(tmp_path / "scan.png")
    words = [
        Word(t, c, 0.9, [Point(x0, 100), Point(x1, 100), Point(x1, 160), Point(x0, 160)], k, 0)
        for k, (t, c, x0, x1) in enumerate(
            [("Dear", 0.93, 45, 155), ("Annie", 0.18, 195, 335), ("&co<", 0.71, 375, 525)]
        )
    ]
    doc = DocumentRecord(
        "feedface" * 3,
        str(tmp_path / "scan.png"),
        [Page(1, 600, 300, [Line(0, words)])],
        "m1",
        "run1",
        0,
        "image/png",
    )
    (tmp_path / "out" / "documents").mkdir(parents=True)
    (tmp_path / "out" / "documents" / f"{doc.doc_id}.json").write_text(json.dumps(doc.to_json()))
    return tmp_path / "out"


def test_visualise_writes_an_html_review_page(tmp_path):
    out = _review_output(tmp_path)
    assert htr(["visualise", str(out), "--out", str(tmp_path / "viz"), "--low-confidence", "0.5"]) == EXIT_OK
    page = (tmp_path / "viz" / f"{'feedface' * 3}.html").read_text()
    parser = _Polygons()
    parser.feed(page)
    assert [(w["data-text"], w["class"], w["data-conf"]) for w in parser.words] == [
        ("Dear", "word", "0.9300"),
        ("Annie", "word low", "0.1800"),
        ("&co<", "word", "0.7100"),
    ]
    assert parser.words[1]["points"] == "195.0,100.0 335.0,100.0 335.0,160.0 195.0,160.0"
    assert "1 below confidence 0.50" in page and 'src="data:image/jpeg;base64,' in page


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_html_review_page_in_headless_chromium(tmp_path):
    """Chromium renders the boxes over the page, the unsure word highlighted; hovering a word shows
    its text and confidence. The screenshots are kept next to the HTML for a look by eye."""
    out = _review_output(tmp_path)
    viz = tmp_path / "viz"
    assert htr(["visualise", str(out), "--out", str(viz)]) == EXIT_OK
    browser = Browser(tmp_path / "profile")
    try:
        browser.open((viz / f"{'feedface' * 3}.html").as_uri(), 900, 600)
        rect = "(r => [r.left, r.top, r.right, r.bottom])({}.getBoundingClientRect())"
        sure, unsure, _ = browser.js(
            "[...document.querySelectorAll('polygon.word')].map(p => " + rect.format("p") + ")"
        )
        shot = np.asarray(browser.screenshot()).astype(int)
        Image.fromarray(shot.astype(np.uint8)).save(viz / "screenshot.png")

        def redness(r):  # share of strongly red pixels inside a box
            x0, y0, x1, y1 = (int(v) for v in r)
            a = shot[y0:y1, x0:x1]
            return float(((a[..., 0] > 150) & (a[..., 1] < 120) & (a[..., 2] < 120)).mean())

        assert redness(unsure) > 0.05 and redness(sure) < 0.01  # only the unsure word is red
        assert abs((unsure[2] - unsure[0]) - 140) <= 2  # boxes at the page's scale
        assert browser.js("getComputedStyle(document.getElementById('tip')).display") == "none"
        x, y = (unsure[0] + unsure[2]) / 2, (unsure[1] + unsure[3]) / 2
        browser.page("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        assert browser.js("document.getElementById('tip').textContent") == "Annie  confidence 0.18"
        left, top, right, bottom = browser.js(rect.format("document.getElementById('tip')"))
        hovered = np.asarray(browser.screenshot()).astype(int)
        Image.fromarray(hovered.astype(np.uint8)).save(viz / "screenshot-hover.png")
    finally:
        browser.close()
    assert left > x and top > y  # next to the pointer
    box = hovered[int(top) + 2 : int(bottom) - 2, int(left) + 2 : int(right) - 2]
    assert box.size and (box.sum(-1) < 100).mean() > 0.5  # the dark tooltip is drawn
