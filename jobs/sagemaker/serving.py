"""The SageMaker model both Batch Transform and real-time endpoints serve: model.tar.gz (htr
package-model) in the PyTorch inference container, or in our own image (--image-uri)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobs.sagemaker.session import FRAMEWORK_VERSION, PY_VERSION, LaunchError
from jobs.sagemaker.validation import Security

MODEL_CODE_DIR = "/opt/ml/model/code"  # code/ inside model.tar.gz, once unpacked


@dataclass
class ModelSpec:
    model_data: str
    role: str
    image_uri: str | None = None
    model_name: str | None = None
    server_workers: int | None = None  # SAGEMAKER_MODEL_SERVER_WORKERS: processes per instance
    security: Security = field(default_factory=Security)


def model_env(spec: ModelSpec) -> dict[str, str]:
    """The framework container's handler (code/inference.py inside model.tar.gz), and how many
    model-server workers each instance runs (each loads the models: memory x workers)."""
    env = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": MODEL_CODE_DIR}
    if spec.server_workers is not None:
        if spec.server_workers < 1:
            raise LaunchError("--model-server-workers must be at least 1")
        env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(spec.server_workers)
    return env


def bucket_prefix(uri: str) -> str:
    """s3://bucket/... -> s3://bucket/htr-model-code: where the SDK may stage model code."""
    if not uri.startswith("s3://"):
        raise LaunchError(f"{uri!r} is not an s3:// URI")
    return f"s3://{uri[5:].split('/', 1)[0]}/htr-model-code"


def build_model(spec: ModelSpec, session, env: dict[str, str] | None = None) -> Any:
    from sagemaker.pytorch import PyTorchModel
    from sagemaker.utils import name_from_base

    if not spec.model_data.startswith("s3://"):
        raise LaunchError(f"--model-data {spec.model_data!r}: an s3://.../model.tar.gz")
    return PyTorchModel(
        model_data=spec.model_data,
        role=spec.role,
        entry_point=None,
        framework_version=FRAMEWORK_VERSION,
        py_version=PY_VERSION,
        image_uri=spec.image_uri,
        env={**model_env(spec), **(env or {})},
        name=spec.model_name or name_from_base("htr-model"),
        sagemaker_session=session,
        vpc_config=spec.security.vpc_config,
        # with code_location set the SDK never creates its default bucket just to look at it
        code_location=bucket_prefix(spec.model_data),
    )
