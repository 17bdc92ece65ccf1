"""Ids: a document's id (a hash of its bytes, or of its URI where the bytes could not be read)
and a run's id (start time plus a random suffix)."""

from __future__ import annotations

import hashlib
import time
import uuid


def doc_id_for(content: bytes) -> str:
    """Stable id for the same source content: reruns and re-uploads compare equal."""
    return hashlib.sha256(content).hexdigest()[:24]


def doc_id_for_uri(uri: str) -> str:
    """The id of a document known only by its URI (its bytes could not be read)."""
    return doc_id_for(uri.encode())


def new_run_id(prefix: str = "") -> str:
    """prefix + local start time + 6 random hex digits, e.g. 20250101T120000-1a2b3c."""
    return prefix + time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
