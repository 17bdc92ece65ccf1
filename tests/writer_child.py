"""Drive batch.outputs.OutputWriter with synthetic records, no models: fast enough to be
kill -9'd at every crash point (HTR_CRASH_AT) as a real child process.

  python -m tests.writer_child OUT PHASE      # PHASE: base | change

A phase skips what the ledger already has at that phase's version, like `htr run` does, so
running it again after a kill is the "rerun".
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from batch.core.errors import EXIT_FATAL
from batch.core.ids import doc_id_for
from batch.core.schema import DocumentRecord, ErrorRecord, Line, Page, Point, Word, now_ms
from batch.ledger import Policy
from batch.outputs import CommitFailed, OutputWriter
from batch.storage import SourceObject

N_SOURCES = 8
SOURCE = "s3://archive/scans/doc-{}.pdf"  # only a name: the writer never reads sources


@dataclass(frozen=True)
class Version:
    """What a phase makes of one source: the bytes it "has" (None = it fails)."""

    uri: str
    etag: str
    data: bytes | None


def phase_versions(phase: str) -> list[Version]:
    """base: 8 sources, #6 and #7 fail. change: #1 changed, #2 now fails, #6 now succeeds,
    #3 reprocessed with the same bytes (same doc_id: its JSON is overwritten in place)."""

    def v(i: int, version: int, ok: bool) -> Version:
        uri = SOURCE.format(i)
        return Version(uri, f"etag-{i}-{version}", f"{uri}@{version}".encode() if ok else None)

    if phase == "base":
        return [v(i, 1, i < 6) for i in range(N_SOURCES)]
    if phase == "change":
        return [
            v(1, 2, True),
            v(2, 2, False),
            Version(SOURCE.format(3), "etag-3-1-again", f"{SOURCE.format(3)}@1".encode()),
            v(6, 2, True),
        ]
    raise ValueError(phase)


def expected_after(phase: str) -> tuple[dict[str, bytes | None], set[str]]:
    """sources -> current bytes, and the failed ones, once `phase` (and those before) ran."""
    current = {x.uri: x for x in phase_versions("base")}
    if phase == "change":
        current.update({x.uri: x for x in phase_versions("change")})
    return ({u: x.data for u, x in current.items()}, {u for u, x in current.items() if x.data is None})


def record(x: Version, run_id: str) -> DocumentRecord | ErrorRecord:
    did = doc_id_for(x.data or x.uri.encode())
    if x.data is None:
        return ErrorRecord(did, x.uri, "decode", "CorruptDocument", "synthetic failure", run_id, now_ms())
    n_pages = 1 + len(x.data) % 2
    pages = [
        Page(p, 100, 100, [Line(0, [Word(f"w{p}{k}", 0.9, 0.8, _box(k), k, 0) for k in range(2 + p)])])
        for p in range(1, n_pages + 1)
    ]
    return DocumentRecord(did, x.uri, pages, "model-1", run_id, now_ms(), "application/pdf", x.etag)


def _box(k: int) -> list[Point]:
    return [Point(10 * k, 0), Point(10 * k + 8, 0), Point(10 * k + 8, 8), Point(10 * k, 8)]


def write_phase(out: str, phase: str, run_id: str, docs_per_part: int = 3) -> int:
    """Write the phase's records not yet in the ledger; returns how many were written."""
    writer = OutputWriter(out, run_id, docs_per_part=docs_per_part)
    writer.open()
    state, n = writer.ledger.state, 0
    for x in phase_versions(phase):  # like `htr run --skip-failed`
        if state.reason_to_process(x.uri, x.etag, Policy(retry_failed=False)) is None:
            continue
        rec, src = record(x, run_id), SourceObject(x.uri, x.uri, 100, x.etag, 0.0)
        if isinstance(rec, DocumentRecord):
            writer.add_document(rec, src)
        else:
            writer.add_error(rec, src)
        n += 1
    writer.close()
    return n


if __name__ == "__main__":
    from batch.cli import exit_now  # as the htr executable ends: no abort at interpreter exit

    out_uri, phase_name = sys.argv[1], sys.argv[2]
    try:
        write_phase(out_uri, phase_name, f"child-{phase_name}")
    except CommitFailed as e:  # as `htr run` does: exit 4, the next run resumes
        print(f"writer_child: {e.stage}: {e}", file=sys.stderr)
        exit_now(EXIT_FATAL)
    exit_now(0)
