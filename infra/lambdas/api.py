"""API Gateway (Lambda proxy) -> the SageMaker endpoint: one document per POST /documents.

Runs in AWS Lambda's Python runtime with only the standard library and boto3, and is
inlined into the stack by `htr deploy-template` (docstrings and comments stripped), so it
imports nothing from this repository. Every answer is JSON; errors use the container's
shape, {"error": {"type", "stage", "message"}}. No Access-Control-* headers: CORS stays off.
"""
import base64
import functools
import json
import os

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

CONTENT_TYPES = {"application/pdf", "image/jpeg", "image/png", "image/tiff", "application/x-image"}
# SageMaker runtime errors that are the caller's or the endpoint's state, by error code.
RUNTIME_STATUS = {"ThrottlingException": 429, "ServiceUnavailable": 503, "ModelNotReadyException": 503,
                  "ValidationError": 502, "InternalFailure": 502}


@functools.cache
def _runtime():
    # API Gateway gives up after 29 s: two attempts of at most 13 s each stay within it
    return boto3.client("sagemaker-runtime", config=Config(
        retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=13))


def _answer(status: int, body: dict) -> dict:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(body), "isBase64Encoded": False}


def _error(status: int, kind: str, message: str) -> dict:
    return _answer(status, {"error": {"type": kind, "stage": "api", "message": message}})


def _header(event: dict, name: str) -> str:
    headers = event.get("headers") or {}
    return next((v for k, v in headers.items() if k.lower() == name), "") or ""


def _document(event: dict) -> bytes:
    body = event.get("body") or ""
    return base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()


def _from_endpoint_error(e: ClientError) -> dict:
    """ModelError: the container answered non-2xx; pass on its JSON error, 4xx as they are."""
    code = e.response.get("Error", {}).get("Code", "")
    if code == "ModelError":
        status = int(e.response.get("OriginalStatusCode") or 502)
        try:
            body = json.loads(e.response.get("OriginalMessage") or "")
            if isinstance(body, dict) and "error" in body:
                return _answer(status if 400 <= status < 500 else 502, body)
        except ValueError:
            pass
        return _error(502, "ModelError", f"the model answered {status}")
    return _error(RUNTIME_STATUS.get(code, 502), code or "EndpointError", str(e))


def handler(event: dict, context) -> dict:
    limit = int(float(os.environ.get("MAX_DOCUMENT_MB", "4")) * 1024 * 1024)
    content_type = _header(event, "content-type").split(";")[0].strip().lower()
    content_type = content_type or "application/x-image"
    if content_type not in CONTENT_TYPES:
        return _error(415, "UnsupportedType", f"Content-Type must be one of {sorted(CONTENT_TYPES)}")
    try:
        document = _document(event)
    except ValueError:
        return _error(400, "BadRequest", "the body is not valid base64 or binary")
    if len(document) > limit:
        return _error(413, "TooLarge", f"{len(document)} bytes; the limit is {limit}")
    if not document:
        return _error(400, "EmptyDocument", "the request has no body")
    try:
        reply = _runtime().invoke_endpoint(
            EndpointName=os.environ["ENDPOINT_NAME"], ContentType=content_type,
            Accept="application/json", Body=document)
    except ClientError as e:
        return _from_endpoint_error(e)
    except BotoCoreError as e:
        return _error(502, "EndpointError", str(e))
    try:
        return _answer(200, json.loads(reply["Body"].read()))
    except ValueError:
        return _error(502, "ModelError", "the model's answer is not JSON")
