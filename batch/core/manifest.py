"""The labelled-data records: a manifest is JSON lines, one Sample (a page or a crop) per line,
each with its Annotations (text + polygon). jobs.manifests reads and writes them (local, s3://)
and converts other formats to them; transforms.synth writes them for the pages it renders.

    {"source-ref": "pages/p1.jpg",
     "annotations": {"texts": [{"text": "Dear", "polygon": [{"x": 10, "y": 20}, ... 4 points],
                                "line_idx": 0, "type": "H"}]}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from batch.core.errors import InputError

# GNHK special tokens: the region is text-like (keep it for detection) but has no transcription.
SPECIAL_TOKENS = ("%math%", "%SC%", "%NA%")
TYPES = ("H", "P")
LEVELS = ("line", "word")


class ManifestError(InputError):
    """A manifest or annotation file that cannot be understood."""

    stage = "manifest"


@dataclass
class Annotation:
    text: str
    polygon: list[dict[str, float]]  # [{"x", "y"}, ...], page pixels, clockwise from top-left
    line_idx: int = 0
    type: str = "H"
    baseline: list[dict[str, float]] | None = None  # a line's baseline, left to right, if known

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "text": self.text,
            "polygon": [{"x": p["x"], "y": p["y"]} for p in self.polygon],
            "line_idx": self.line_idx,
            "type": self.type,
        }
        if self.baseline:
            d["baseline"] = [{"x": p["x"], "y": p["y"]} for p in self.baseline]
        return d


@dataclass
class Sample:
    source_ref: str
    annotations: list[Annotation] = field(default_factory=list)
    level: str | None = None  # "line" | "word": what each annotation is (None: not said)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "source-ref": self.source_ref,
            "annotations": {"texts": [a.to_json() for a in self.annotations]},
        }
        if self.level:
            d["level"] = self.level
        return d


def is_recognition_target(text: str) -> bool:
    """False for GNHK's special tokens (and empty text): detect these regions, never read them."""
    return bool(text) and text not in SPECIAL_TOKENS


def parse_point(p: Any, where: str) -> dict[str, float]:
    try:
        if isinstance(p, dict):
            return {"x": float(p["x"]), "y": float(p["y"])}
        x, y = p
        return {"x": float(x), "y": float(y)}
    except (KeyError, TypeError, ValueError) as e:
        raise ManifestError(f"{where}: bad polygon point {p!r}") from e


def parse_annotation(d: Any, where: str) -> Annotation:
    if not isinstance(d, dict) or "text" not in d or "polygon" not in d:
        raise ManifestError(f"{where}: annotation needs 'text' and 'polygon', got {str(d)[:120]}")
    poly = d["polygon"]
    if not isinstance(poly, list) or len(poly) < 3:
        raise ManifestError(f"{where}: polygon needs at least 3 points")
    kind = d.get("type", "H") or "H"
    if kind not in TYPES:
        raise ManifestError(f"{where}: type must be 'H' or 'P', got {kind!r}")
    try:
        line_idx = int(d.get("line_idx", 0))
    except (TypeError, ValueError) as e:
        raise ManifestError(f"{where}: line_idx must be an integer") from e
    base = d.get("baseline")
    baseline = [parse_point(p, where) for p in base] if isinstance(base, list) and len(base) >= 2 else None
    return Annotation(str(d["text"]), [parse_point(p, where) for p in poly], line_idx, kind, baseline)


def parse_sample(obj: Any, where: str) -> Sample:
    if not isinstance(obj, dict) or not isinstance(obj.get("source-ref"), str):
        raise ManifestError(f"{where}: each line needs a string 'source-ref'")
    anns = obj.get("annotations", {"texts": []})
    texts = anns.get("texts") if isinstance(anns, dict) else None
    if not isinstance(texts, list):
        raise ManifestError(f"{where}: 'annotations' must be {{\"texts\": [...]}}")
    level = obj.get("level") if obj.get("level") in LEVELS else None
    return Sample(
        obj["source-ref"], [parse_annotation(t, f"{where} text {i}") for i, t in enumerate(texts)], level
    )


def dumps_manifest(samples: Iterable[Sample]) -> str:
    return "".join(json.dumps(s.to_json(), ensure_ascii=False) + "\n" for s in samples)
