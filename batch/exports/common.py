"""Geometry and naming shared by the archive serialisers (pure: records in, values out)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from batch.core.schema import DocumentRecord, Line, Page, Point

SOFTWARE = "htr-batch"


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in whole page pixels, clipped to the page."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def clip(p: Point, page: Page) -> tuple[int, int]:
    """A point as whole pixels inside the page: PAGE XML allows only non-negative integers, and a
    line grown by its margin may reach past the edge."""
    return (min(max(round(p.x), 0), max(page.width - 1, 0)), min(max(round(p.y), 0), max(page.height - 1, 0)))


def box_of(points: list[Point], page: Page) -> Box:
    xy = [clip(p, page) for p in points]
    return Box(min(x for x, _ in xy), min(y for _, y in xy), max(x for x, _ in xy), max(y for _, y in xy))


def points_text(points: list[Point], page: Page) -> str:
    """'x1,y1 x2,y2 ...' (both ALTO's recommended form and PAGE's only one)."""
    return " ".join(f"{x},{y}" for x, y in (clip(p, page) for p in points))


def line_outline(line: Line) -> tuple[list[Point], list[Point]]:
    """The line's polygon and baseline; for records written before schema version 2 (no outline
    stored) the same rotated rectangle the pipeline computes now, from the words."""
    if line.polygon and line.baseline:
        return line.polygon, line.baseline
    from batch.lines import outline  # the pipeline's own definition, on a copy

    copy = Line(line.line_idx, line.words)
    outline(copy)
    return copy.polygon or line.polygon, copy.baseline or line.baseline


def line_confidence(line: Line) -> float:
    return sum(w.confidence for w in line.words) / len(line.words) if line.words else 0.0


def image_name(doc: DocumentRecord) -> str:
    """The source's file name, as archives' viewers look for it next to the XML."""
    return posixpath.basename(doc.source_uri.replace("\\", "/").rstrip("/")) or doc.doc_id


def conf(v: float) -> str:
    """A confidence 0..1 as XML text, clamped (the schemas reject 1.0000001)."""
    return f"{min(max(v, 0.0), 1.0):.4f}".rstrip("0").rstrip(".") or "0"
