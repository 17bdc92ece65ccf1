"""Handlers for the SageMaker PyTorch framework container: code/inference.py in model.tar.gz.

The container's model server calls `model_fn` once per worker, then `input_fn` ->
`predict_fn` -> `output_fn` for each request. They delegate to batch.serve.Service, the
code `htr serve` runs, so both containers give the same answers: the document's record
JSON, or `{"error": {...}}`. Statuses follow `htr serve`: 415 for a content type we do not
take, 400 for a bad document, 500 for a model failure; under Batch Transform
(SAGEMAKER_BATCH=true) document failures come back 200 with the error body, so one bad
document does not fail the whole job.

Error bodies stay JSON outside batch mode too: the toolkit answers a raised error with its
message, a newline and the traceback (`Transformer.handle_error`); importing this module
replaces that answer with the message alone (the traceback goes to the log).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from http import HTTPStatus

# The project's packages (batch, models, transforms, jobs) ship beside this file in code/.
_CODE_DIR = os.path.dirname(os.path.abspath(__file__))
if _CODE_DIR not in sys.path:
    sys.path.insert(0, _CODE_DIR)

from batch.serve import ServeSettings, Service, check_content_type, error_body, error_doc_id, status_for  # noqa: E402
from transforms.rasterise import pdf_renderer  # noqa: E402

log = logging.getLogger("htr.inference")
JSON = "application/json"


class InvocationError(Exception):
    """An HTTP error answer, when the sagemaker-inference toolkit is not there to take one."""

    def __init__(self, status_code: int, body: dict):
        super().__init__(json.dumps(body))
        self.status_code, self.body = status_code, body


def _http_error(status: int, body: dict) -> Exception:
    """The toolkit's own error type where available: it sets the response status from it."""
    try:
        from sagemaker_inference.errors import GenericInferenceToolkitError
    except ImportError:
        return InvocationError(status, body)
    # phrase: the status line's reason; left out, the toolkit would put the whole body there
    return GenericInferenceToolkitError(status, json.dumps(body), HTTPStatus(status).phrase)


def _json_message(message: str) -> str:
    """An error message as our JSON error body (a toolkit error may carry plain text)."""
    try:
        if isinstance(json.loads(message), dict):
            return message
    except ValueError:
        pass
    return json.dumps({"error": {"type": "InternalError", "stage": "model", "message": message}})


def _install_json_error_answers() -> None:
    """Make the toolkit answer errors with the JSON body alone, never body + traceback."""
    try:
        from sagemaker_inference import transformer, utils
    except ImportError:  # not in the framework container (tests, htr serve): nothing to fix
        return
    if getattr(transformer.Transformer.handle_error, "htr_json", False):
        return

    def handle_error(context, inference_exception, trace):
        log.error("invocation failed:\n%s", trace)
        context.set_response_status(
            code=inference_exception.status_code, phrase=utils.remove_crlf(inference_exception.phrase)
        )
        return [_json_message(inference_exception.message)]

    handle_error.htr_json = True  # type: ignore[attr-defined]
    transformer.Transformer.handle_error = staticmethod(handle_error)


_install_json_error_answers()


@dataclass
class Document:
    data: bytes
    content_type: str


def model_fn(model_dir: str) -> Service:
    log.info("PDF renderer: %s", pdf_renderer())  # none at all: fails here, at start-up
    service = Service(ServeSettings.from_env())
    service.load(model_dir, os.environ.get("HTR_DEVICE", "auto"))
    return service


def input_fn(body: bytes | bytearray | str, content_type: str) -> Document:
    # the toolkit hands text types (text/csv, application/json, ...) over decoded
    data = body.encode() if isinstance(body, str) else bytes(body)
    try:
        check_content_type(content_type)  # the bytes are sniffed in predict_fn
    except Exception as e:  # noqa: BLE001 - an unsupported Content-Type
        raise _http_error(415, error_body(e, error_doc_id(data))) from e
    return Document(data, content_type)


def predict_fn(document: Document, service: Service) -> dict:
    try:
        return service.process(document.data, document.content_type).to_json()
    except Exception as e:  # noqa: BLE001 - answered, never a dead worker
        body = error_body(e, error_doc_id(document.data))
        status = status_for(e, service.settings.batch)
        if status == 200:
            return body
        raise _http_error(status, body) from e


def output_fn(prediction: dict, accept: str | None) -> str:
    """JSON whatever the Accept header says: it is the only representation there is."""
    return json.dumps(prediction, ensure_ascii=False)
