"""`htr export OUT --to alto,page,hocr,pdf`: archive formats for an existing output.

Reads OUT/documents/*.json (what `htr run` committed; local or s3://) and writes each document's
files next to them (or under --dest), each file whole or not at all (batch.storage writes are
atomic), so a killed export is simply run again. The PDF reads each source again by its
source_uri (the record's doc_id must still match the bytes).
"""

from __future__ import annotations

import argparse
import json
import sys

from batch import storage
from batch.core.errors import EXIT_BAD_ARGS, EXIT_OK, EXIT_PARTIAL, HtrError
from batch.core.schema import DocumentRecord
from batch.exports import FORMATS, formats_arg, render


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="an htr output: a folder or s3://bucket/prefix/")
    parser.add_argument(
        "--to",
        type=formats_arg,
        required=True,
        metavar="FORMATS",
        help=f"comma-separated: {', '.join(FORMATS)}",
    )
    parser.add_argument("--dest", help="where to write (default: OUT itself, e.g. OUT/alto/)")
    parser.add_argument("--doc", action="append", metavar="DOC_ID", help="only these documents (repeatable)")
    storage.add_arguments(parser)


def document_uris(out: str, only: list[str] | None = None) -> list[str]:
    """The output's document JSONs (sorted), optionally only some doc_ids."""
    try:
        uris = [u for u in storage.list_uris(storage.join(out, "documents")) if u.endswith(".json")]
    except storage.NotFound:
        return []
    if only:
        uris = [u for u in uris if u.replace("\\", "/").rsplit("/", 1)[-1][:-5] in set(only)]
    return uris


def export_document(uri: str, formats: tuple[str, ...], dest: str) -> int:
    """Write one document's files; returns how many."""
    doc = DocumentRecord.from_json(json.loads(storage.read_bytes(uri)))
    written = 0
    for fmt in formats:
        for rel, data in render(doc, fmt).items():
            storage.write_bytes(storage.join(dest, rel), data, FORMATS[fmt].media_type)
            written += 1
    return written


def main(args: argparse.Namespace) -> int:
    storage.configure_from_args(args)
    if not args.to:
        print("htr export: error: --to names no archive format", file=sys.stderr)
        return EXIT_BAD_ARGS
    uris = document_uris(args.out, args.doc)
    if not uris:
        print(f"htr export: error: no documents/*.json under {args.out}", file=sys.stderr)
        return EXIT_BAD_ARGS
    dest, files, failed = args.dest or args.out, 0, 0
    for uri in uris:
        try:
            files += export_document(uri, args.to, dest)
        except (HtrError, OSError, ValueError, KeyError) as e:  # one document must not stop the rest
            failed += 1
            print(f"htr export: {uri}: {type(e).__name__}: {e}", file=sys.stderr)
    print(
        f"htr export: {len(uris) - failed} documents, {files} files ({','.join(args.to)}), "
        f"{failed} failed -> {dest}"
    )
    return EXIT_PARTIAL if failed else EXIT_OK
