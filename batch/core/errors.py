"""Typed errors that carry the pipeline stage, and the process exit codes.

A document-level error becomes an error record (see batch.core.schema.ErrorRecord);
it never stops the run. Only bad arguments or an unusable environment do.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_PARTIAL = 3  # the run finished, but at least one document failed
EXIT_BAD_ARGS = 2  # argparse's convention
EXIT_FATAL = 4  # nothing could be processed (e.g. models missing, output unwritable)


# user:password@ in a URL (`--s3-endpoint-url http://KEY:SECRET@host`), with or without its scheme
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)?[^\s/'\"@()=,]+:[^\s/'\"@]*@")


def scrub(text: str) -> str:
    """`text` with credentials embedded in URLs replaced by ***, for every message we print
    or store (error rows, logs, stderr)."""
    return _USERINFO.sub(lambda m: (m.group(1) or "") + "***@", text)


class HtrError(Exception):
    """Base class. `stage` names the pipeline stage where it happened; the message is
    scrubbed of URL credentials."""

    stage = "unknown"

    def __init__(self, message: str, stage: str | None = None):
        super().__init__(scrub(str(message)))
        if stage:
            self.stage = stage

    @property
    def kind(self) -> str:
        return type(self).__name__


class InputError(HtrError):
    """The document itself cannot be processed (corrupt, encrypted, empty, ...)."""

    stage = "decode"


class UnsupportedType(InputError):
    pass


class EmptyDocument(InputError):
    pass


class CorruptDocument(InputError):
    pass


class EncryptedDocument(InputError):
    pass


class TooLarge(InputError):
    """Over a pixel, page or byte limit (decompression bombs included)."""


class StorageError(HtrError):
    """A storage operation failed. `transient`: worth retrying (5xx, throttling, resets,
    timeouts, truncated bodies); otherwise permanent (missing, denied, invalid)."""

    stage = "fetch"
    transient = False

    def __init__(self, message: str, stage: str | None = None, transient: bool | None = None):
        super().__init__(message, stage)
        if transient is not None:
            self.transient = transient


class ModelError(HtrError):
    stage = "model"


class CheckpointError(HtrError):
    stage = "load-models"


class MissingDependency(HtrError):
    """The machine lacks a tool or library every document of a kind needs (no PDF renderer):
    the environment's fault, not the document's, so it stops the job at start-up instead of
    becoming one error row per document."""

    stage = "environment"
