"""`htr sagemaker collect`: a Batch Transform's .out files -> the worker's output layout.

documents/, words/, pages/, errors/ as `htr run` writes them (batch.outputs), so Athena sees one
table whichever path produced the records. Written with the storage settings in force
(`--sse`/`--sse-kms-key-id`, as for `htr run`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

OUT_SUFFIX = ".out"  # Batch Transform writes <input key>.out for each input object


@dataclass
class CollectStats:
    documents: int = 0
    errors: int = 0
    missing: int = 0  # inputs with no .out: the job failed on them


def _error_record(doc_id: str, source_uri: str, stage: str, error_type: str, message: str, run_id: str):
    from batch.core.schema import ErrorRecord, now_ms

    return ErrorRecord(
        doc_id=doc_id,
        source_uri=source_uri,
        stage=stage,
        error_type=error_type,
        message=message[:2000],
        run_id=run_id,
        processed_at=now_ms(),
    )


def record_from_out(body: bytes, source_uri: str, source_etag: str, run_id: str):
    """One .out body -> a DocumentRecord, or an ErrorRecord (error body or unreadable)."""
    from batch.core.ids import doc_id_for_uri
    from batch.core.schema import DocumentRecord

    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            err = data["error"]
            return _error_record(
                data.get("doc_id") or doc_id_for_uri(source_uri),
                source_uri,
                str(err.get("stage", "unknown")),
                str(err.get("type", "Error")),
                str(err.get("message", "")),
                run_id,
            )
        record = DocumentRecord.from_json(data)
    except (ValueError, KeyError, TypeError) as e:
        return _error_record(
            doc_id_for_uri(source_uri),
            source_uri,
            "collect",
            "InvalidTransformOutput",
            f"transform output is not a document record: {e}",
            run_id,
        )
    record.source_uri = source_uri or record.source_uri
    record.source_etag = source_etag or record.source_etag
    record.run_id = run_id
    return record


def collect(
    transform_output: str, out: str, run_id: str, input_uri: str | None = None, formats: tuple[str, ...] = ()
) -> CollectStats:
    """Write documents/, words/, pages/, errors/ from a transform's .out files.

    With `input_uri` each record gets the source URI and ETag the local worker would have
    given it, and inputs without a .out file become error rows.
    """
    from batch import storage
    from batch.core.ids import doc_id_for_uri
    from batch.core.schema import DocumentRecord
    from batch.exports import renderer  # archive formats, committed with the tables (--formats)
    from batch.outputs import OutputWriter

    sources = {o.key: o for o in storage.list_objects(input_uri)} if input_uri else {}
    writer, stats, seen = OutputWriter(out, run_id, exports=renderer(formats)), CollectStats(), set()
    for obj in storage.list_objects(transform_output):
        if not obj.key.endswith(OUT_SUFFIX):
            continue
        key = obj.key[: -len(OUT_SUFFIX)]
        seen.add(key)
        src = sources.get(key)
        rec = record_from_out(
            storage.read_bytes(obj.uri), src.uri if src else "", src.etag if src else "", run_id
        )
        rec.source_uri = rec.source_uri or key
        if isinstance(rec, DocumentRecord):
            writer.model_version = writer.model_version or rec.model_version
            writer.add_document(rec, src)  # src: the ledger's etag/size, as the worker records
            stats.documents += 1
        else:
            writer.add_error(rec, src)
            stats.errors += 1
    for key in sorted(set(sources) - seen):
        writer.add_error(
            _error_record(
                doc_id_for_uri(sources[key].uri),
                sources[key].uri,
                "transform",
                "MissingTransformOutput",
                "no .out file for this input: the transform job failed on it (see its logs)",
                run_id,
            ),
            sources[key],
        )
        stats.missing += 1
    writer.close()
    return stats
