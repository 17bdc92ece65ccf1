"""Sessions for the launchers: a sagemaker.Session whose every AWS call is recorded, and in
dry-run mode answered locally at the botocore layer (nothing leaves the machine; the printed
requests are exactly what the SDK would send)."""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

# Before any `import sagemaker`: silence the v2 deprecation banner, and give the SDK's config
# logger a stderr handler at WARNING, or it adds its own on stdout and breaks our JSON output.
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")


def _quiet_sdk_logging() -> None:
    config_log = logging.getLogger("sagemaker.config")
    config_log.setLevel(logging.WARNING)
    if not config_log.handlers:
        config_log.addHandler(logging.StreamHandler(sys.stderr))
        config_log.propagate = False


_quiet_sdk_logging()

# The newest PyTorch that the SDK's image config has for both training and inference images
# (sagemaker/image_uri_config/pytorch.json), and the one torch_distributed accepts on GPUs.
FRAMEWORK_VERSION = "2.6.0"
PY_VERSION = "py312"
DRY_RUN_ACCOUNT = "000000000000"
TELEMETRY_OPT_OUT = ("SageMaker", "PythonSDK", "Modules", "TelemetryOptOut")
# Operations whose requests the report shows (S3 uploads are listed apart, by where they went).
REPORTED_SERVICES = ("sagemaker", "application-autoscaling", "sagemaker-runtime")


# Create* operation -> (ARN key of its answer, ARN resource kind, request key holding the name)
_CREATED = {
    "CreateTrainingJob": ("TrainingJobArn", "training-job", "TrainingJobName"),
    "CreateModel": ("ModelArn", "model", "ModelName"),
    "CreateTransformJob": ("TransformJobArn", "transform-job", "TransformJobName"),
    "CreateProcessingJob": ("ProcessingJobArn", "processing-job", "ProcessingJobName"),
    "CreateEndpointConfig": ("EndpointConfigArn", "endpoint-config", "EndpointConfigName"),
    "CreateEndpoint": ("EndpointArn", "endpoint", "EndpointName"),
}


class LaunchError(Exception):
    """A launch that cannot be built as asked (bad combination of arguments)."""


@dataclass
class ApiRecorder:
    """Records each AWS API call the SDK makes; in dry-run mode answers them locally.

    Hooks botocore's `before-parameter-build` (the call's parameters, as the SDK passed them)
    and `before-call` (returning a response there short-circuits the call before it is
    signed or sent).
    """

    dry_run: bool
    region: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, boto_session) -> None:
        boto_session.events.register("before-parameter-build", self._record)
        if self.dry_run:
            boto_session.events.register("before-call", self._answer)
            boto_session.events.register("before-send", self._refuse)

    def _record(self, params: dict, model, **_: Any) -> None:
        service = model.service_model.service_name
        entry = {"service": service, "operation": model.name}
        if service == "s3":  # the body is the code tarball: keep where it goes, not what
            entry["params"] = {k: v for k, v in params.items() if k in ("Bucket", "Key")}
        elif service == "sagemaker-runtime":  # a document: its size, not its bytes
            entry["params"] = {k: (f"<{len(v)} bytes>" if k == "Body" else v) for k, v in params.items()}
        else:
            entry["params"] = copy.deepcopy(params)
        with self._lock:
            self.calls.append(entry)

    def _answer(self, model, **_: Any) -> tuple[Any, dict]:
        from botocore.awsrequest import AWSResponse

        body = self._fake_response(model.name)
        if model.name == "InvokeEndpoint":
            import io

            from botocore.response import StreamingBody

            body["Body"] = StreamingBody(io.BytesIO(body["Body"]), len(body["Body"]))
        body.setdefault("ResponseMetadata", {"HTTPStatusCode": 200, "RequestId": "dry-run"})
        return AWSResponse("https://dry-run.invalid/", 200, {}, None), body

    def _fake_response(self, operation: str) -> dict[str, Any]:
        """Just enough of each answer for the SDK to carry on."""
        arn = f"arn:aws:sagemaker:{self.region}:{DRY_RUN_ACCOUNT}"
        request = self.requests().get(operation, {})
        if operation in _CREATED:  # Create* answers the new resource's ARN
            key, kind, name = _CREATED[operation]
            return {key: f"{arn}:{kind}/{request.get(name)}"}
        if operation == "DescribeEndpoint":
            return {"EndpointName": request.get("EndpointName", ""), "EndpointStatus": "InService"}
        if operation == "InvokeEndpoint":
            return {"Body": b"{}", "ContentType": "application/json"}
        if operation == "GetCallerIdentity":
            return {
                "Account": DRY_RUN_ACCOUNT,
                "UserId": "dry-run",
                "Arn": f"arn:aws:iam::{DRY_RUN_ACCOUNT}:user/dry-run",
            }
        if operation == "ListBuckets":  # the SDK's default bucket "exists": nothing to create
            import datetime as dt

            name = f"sagemaker-{self.region}-{DRY_RUN_ACCOUNT}"
            return {"Buckets": [{"Name": name, "CreationDate": dt.datetime(2020, 1, 1)}]}
        if operation == "CreateMultipartUpload":
            return {"UploadId": "dry-run"}
        return {"ETag": '"dry-run"'}

    @staticmethod
    def _refuse(**_: Any) -> None:
        raise RuntimeError("dry-run: an AWS request was about to be sent")

    def requests(self) -> dict[str, dict[str, Any]]:
        """SageMaker API requests by operation name (the last of each)."""
        with self._lock:
            return {c["operation"]: c["params"] for c in self.calls if c["service"] in REPORTED_SERVICES}

    def uploads(self) -> list[str]:
        with self._lock:
            return [
                f"s3://{c['params']['Bucket']}/{c['params']['Key']}"
                for c in self.calls
                if c["operation"] in ("PutObject", "CreateMultipartUpload")
            ]

    def report(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "region": self.region, **self.requests(), "uploads": self.uploads()}


def _sdk_config() -> dict[str, Any]:
    """The user's SageMaker SDK defaults (if any), with telemetry always off."""
    from sagemaker.config import load_sagemaker_config

    config = load_sagemaker_config() or {}
    config.setdefault("SchemaVersion", "1.0")
    node = config
    for key in TELEMETRY_OPT_OUT[:-1]:
        node = node.setdefault(key, {})
    node[TELEMETRY_OPT_OUT[-1]] = True
    return config


def _validate_each_config_once() -> None:
    """The SDK re-checks its whole JSON schema on every config lookup (~0.3 s each, dozens per
    launch) whenever any config is set, and ours always is (telemetry off). Same verdict,
    checked once per distinct config."""
    import sagemaker.utils as sm_utils
    from sagemaker.config import validate_sagemaker_config

    if getattr(sm_utils.validate_sagemaker_config, "htr_once", False):
        return
    valid: set[str] = set()

    def validate(config: dict | None = None) -> None:
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in valid:
            validate_sagemaker_config(config)  # type: ignore[arg-type]  # (its default is None) raises for a bad config
            valid.add(key)

    validate.htr_once = True  # type: ignore[attr-defined]
    sm_utils.validate_sagemaker_config = validate  # type: ignore[assignment]  # takes None, as the original


def make_session(region: str | None, dry_run: bool):
    """A sagemaker.Session (telemetry off) and the recorder attached to its boto3 session."""
    import boto3
    import sagemaker

    if dry_run:  # dummy credentials: never look up real ones (no IMDS waits, no profile)
        boto = boto3.Session(
            aws_access_key_id="dry-run",
            aws_secret_access_key="dry-run",
            region_name=region or boto3.Session().region_name or "us-east-1",
        )
    else:
        boto = boto3.Session(region_name=region)
    if not boto.region_name:
        raise LaunchError("no AWS region: pass --region or set AWS_REGION")
    recorder = ApiRecorder(dry_run=dry_run, region=boto.region_name)
    recorder.attach(boto)
    _validate_each_config_once()
    session = sagemaker.Session(boto_session=boto, sagemaker_config=_sdk_config())
    return session, recorder
