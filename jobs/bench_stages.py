"""`htr bench` (apps/jobs layer): the stage breakdown of htr-batch's time (also used by
jobs/bench_gpu.py). The Pipeline names its stages through its clock hook (batch/core/clock.py);
instrument hands it a StageClock, stage_rows turns the seconds into the report's rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batch.core.clock import Clock

# Leaf stages inside Pipeline.process_pages, in pipeline order; "other" is the rest of its time.
STAGES = (
    "decode",
    "seg_resize",
    "seg_model",
    "postprocess",
    "crop",
    "rec_pack",
    "rec_model",
    "ctc_decode",
    "lexicon",
    "lines",
    "other",
    "write",
)
STAGE_NOTES = {
    "decode": "read + rasterise the page file and put it right (iter_pages, Pipeline.prepare_page), on the "
    "decode threads",
    "seg_resize": "resize each page for the segmenter, pad the batch",
    "seg_model": "segmenter forward (DB probability map), PyTorch or ONNX Runtime",
    "postprocess": "DB post-processing: probability maps -> word (and line) quads",
    "crop": "rectify each line (or word) quad to a 32 px crop",
    "rec_pack": "plan width-bucketed batches, pack crops into them",
    "rec_model": "recogniser forward (CRNN), PyTorch or ONNX Runtime",
    "ctc_decode": "greedy CTC read-outs (line models: words and where they lie along the line)",
    "lexicon": "lexicon rescoring of out-of-vocabulary readings (CTC likelihood of candidates)",
    "lines": "line layout: pieces of lines in reading order, words placed on the page, outlines",
    "other": "the rest of process_pages (page fix where not prepared ahead, gray conversion, "
    "upside-down check)",
    "write": "JSON + Parquet records (OutputWriter); not in the head-to-head time",
}


def instrument(pipe: Any, clock: Clock) -> Callable[[], None]:
    """Time a Pipeline's stages with `clock` through its clock hook (Pipeline.clock: the runners and
    the pipeline name their stages as they run them). Returns an undo."""
    before = pipe.clock
    pipe.clock = clock

    def undo() -> None:
        pipe.clock = before

    return undo


def stage_rows(seconds: dict[str, float], pages: int) -> list[list[str]]:
    """Markdown rows: stage, seconds, share of the OCR time, ms/page (leaves + 'other')."""
    s = dict(seconds)
    total_pp = s.pop("_process_pages", 0.0)
    leaves = [k for k in STAGES if k not in ("decode", "other", "write")]
    s["other"] = max(0.0, total_pp - sum(s.get(k, 0.0) for k in leaves))
    ocr_total = s.get("decode", 0.0) + total_pp
    rows = []
    for k in STAGES:
        if k not in s:
            continue
        share = f"{100 * s[k] / ocr_total:.1f} %" if k != "write" and ocr_total else "-"
        rows.append([k, f"{s[k]:.2f}", share, f"{1000 * s[k] / max(1, pages):.0f}", STAGE_NOTES[k]])
    return rows
