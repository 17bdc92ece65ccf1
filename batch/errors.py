"""Typed errors that carry the pipeline stage, and the process exit codes.

A document-level error becomes an error record (see batch.schema.ErrorRecord);
it never stops the run. Only bad arguments or an unusable environment do.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 3      # the run finished, but at least one document failed
EXIT_BAD_ARGS = 2     # argparse's convention
EXIT_FATAL = 4        # nothing could be processed (e.g. models missing, output unwritable)


class HtrError(Exception):
    """Base class. `stage` names the pipeline stage where it happened."""

    stage = "unknown"

    def __init__(self, message: str, stage: str | None = None):
        super().__init__(message)
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
    stage = "fetch"


class ModelError(HtrError):
    stage = "model"


class CheckpointError(HtrError):
    stage = "load-models"


class MissingDependency(HtrError):
    """The machine lacks a tool or library every document of a kind needs (no PDF renderer):
    the environment's fault, not the document's, so it stops the job at start-up instead of
    becoming one error row per document."""

    stage = "environment"
