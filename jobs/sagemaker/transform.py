"""`htr sagemaker transform`: Batch Transform over an s3:// prefix, one document per request.

Checked before anything is sent: the instance type can run transforms, the invocation timeout
is within the API's 1..3600 s, MaxPayloadInMB (and x MaxConcurrentTransforms) within 100 MB,
and no input object is larger than MaxPayloadInMB (those are listed, with the `htr run` line
that processes them instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs.sagemaker.serving import ModelSpec, build_model
from jobs.sagemaker.session import LaunchError
from jobs.sagemaker.validation import (
    Security,
    check_instance_type,
    check_range,
    check_transform_payload,
    oversized_objects,
    payload_report,
)

# What `--content-type` may say; "auto" lets the container sniff each document's bytes.
CONTENT_TYPES = {
    "auto": "application/x-image",
    "application/pdf": "application/pdf",
    "image/jpeg": "image/jpeg",
    "image/png": "image/png",
    "image/tiff": "image/tiff",
    "application/x-image": "application/x-image",
}


@dataclass
class TransformSpec:
    model_data: str
    input: str
    output: str
    instance_type: str
    role: str
    instance_count: int = 1
    content_type: str = "auto"
    max_payload_mb: int = 20
    max_concurrent: int = 4
    invocation_timeout_s: int = 3600
    image_uri: str | None = None
    model_name: str | None = None
    job_name: str | None = None
    server_workers: int | None = None
    check_payloads: bool = True
    security: Security = field(default_factory=Security)
    wait: bool = True

    def model(self) -> ModelSpec:
        return ModelSpec(
            self.model_data, self.role, self.image_uri, self.model_name, self.server_workers, self.security
        )


def check_transform_limits(spec: TransformSpec) -> None:
    if spec.content_type not in CONTENT_TYPES:
        raise LaunchError(f"--content-type must be one of {', '.join(CONTENT_TYPES)}")
    check_instance_type("transform", spec.instance_type)
    check_range("--invocation-timeout", spec.invocation_timeout_s, "InvocationsTimeoutInSeconds")
    check_transform_payload(spec.max_payload_mb, spec.max_concurrent)


def check_input_sizes(spec: TransformSpec) -> None:
    """Refuse a job that would fail on objects over MaxPayloadInMB (a listing of the input)."""
    too_big = oversized_objects(spec.input, spec.max_payload_mb)
    if too_big:
        raise LaunchError(payload_report(too_big, spec.max_payload_mb, spec.input))


def transform_env(spec: TransformSpec) -> dict[str, str]:
    """What the container's server reads (batch/serve.py, code/inference.py, TorchServe)."""
    payload_bytes = spec.max_payload_mb * 1024 * 1024
    return {
        "SAGEMAKER_BATCH": "true",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(spec.max_payload_mb),
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": str(spec.max_concurrent),
        "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(spec.invocation_timeout_s),
        "TS_MAX_REQUEST_SIZE": str(payload_bytes),
        "TS_MAX_RESPONSE_SIZE": str(max(payload_bytes, 100 * 1024 * 1024)),
    }


def build_transformer(spec: TransformSpec, session):
    check_transform_limits(spec)
    model = build_model(spec.model(), session)
    return model.transformer(
        instance_count=spec.instance_count,
        instance_type=spec.instance_type,
        strategy="SingleRecord",
        assemble_with="None",
        output_path=spec.output,
        accept="application/json",
        max_concurrent_transforms=spec.max_concurrent,
        max_payload=spec.max_payload_mb,
        env=transform_env(spec),
        output_kms_key=spec.security.output_kms_key,
        volume_kms_key=spec.security.volume_kms_key,
        tags=spec.security.tag_list,
    )


def launch_transform(spec: TransformSpec, session, dry_run: bool = False) -> Any:
    """Create the model and the transform job (one document per request); returns the Transformer."""
    from sagemaker.utils import name_from_base

    transformer = build_transformer(spec, session)
    if spec.check_payloads and not dry_run:  # dry runs list nothing: no AWS calls at all
        check_input_sizes(spec)
    transformer.transform(
        data=spec.input,
        data_type="S3Prefix",
        content_type=CONTENT_TYPES[spec.content_type],
        split_type=None,
        job_name=spec.job_name or name_from_base("htr-transform"),
        wait=False,
        logs=False,
        model_client_config={
            "InvocationsTimeoutInSeconds": spec.invocation_timeout_s,
            "InvocationsMaxRetries": 1,
        },
    )
    return transformer
