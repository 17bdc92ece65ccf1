"""`htr sagemaker process`: the nightly `htr run` as a SageMaker Processing job on N instances.

Every instance runs the same command, `htr run INPUT OUTPUT --shard auto`: it reads its place
among the job's hosts from /opt/ml/config/resourceconfig.json (batch.worker), takes its shard
of the sources, and writes into the one OUTPUT with the one ledger, so a re-run of the job is
incremental exactly like a re-run of `htr run`. INPUT and OUTPUT are read and written directly
(s3://), not copied through Processing inputs/outputs.

Images: our Dockerfile's (`--image-uri`; `htr` is installed) or, by default, the PyTorch
training image with the project's code shipped as a Processing input, its requirements
installed at start (PDFs through the pypdfium2 wheel: that image has no poppler).
"""

from __future__ import annotations

import shlex
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.sagemaker.session import FRAMEWORK_VERSION, PY_VERSION, LaunchError
from jobs.sagemaker.validation import Security, check_instance_type, check_range

CODE_DIR = "/opt/ml/processing/input/code"
CODE_TARBALL = "source.tar.gz"
# Framework image: unpack the code, install what the image lacks, then `htr run "$@"`.
BOOTSTRAP = (
    f"set -e; cd {CODE_DIR}; tar xzf {CODE_TARBALL}; "
    "pip install --quiet --disable-pip-version-check -r requirements.txt; "
    'exec python -m batch.cli run "$@"'
)


@dataclass
class ProcessSpec:
    input: str
    output: str
    role: str
    instance_type: str
    instance_count: int = 1
    image_uri: str | None = None
    job_name: str | None = None
    run_args: list[str] = field(default_factory=list)  # more `htr run` options
    max_runtime_s: int = 24 * 3600
    volume_size_gb: int = 30
    code_location: str | None = None
    security: Security = field(default_factory=Security)
    wait: bool = True


def run_arguments(spec: ProcessSpec) -> list[str]:
    """`htr run`'s arguments on every instance (the shard comes from the host list)."""
    if any(a == "--shard" or a.startswith("--shard=") for a in spec.run_args):
        raise LaunchError("--htr-args: leave out --shard; each instance takes its own (--shard auto)")
    return [spec.input, spec.output, "--shard", "auto", "--no-progress", *spec.run_args]


def check_process(spec: ProcessSpec) -> None:
    for flag, uri in (("--input", spec.input), ("--output", spec.output)):
        if not uri.startswith("s3://"):
            raise LaunchError(f"{flag} {uri!r}: a Processing job reads and writes s3:// only")
    check_instance_type("processing", spec.instance_type)
    check_range("--instance-count", spec.instance_count, "ProcessingInstanceCount")
    check_range("--max-runtime", spec.max_runtime_s, "ProcessingMaxRuntimeInSeconds")


def _code_prefix(spec: ProcessSpec, job_name: str) -> str:
    base = spec.code_location or f"s3://{spec.output[5:].split('/', 1)[0]}/htr-processing-code"
    return f"{base.rstrip('/')}/{job_name}"


def _upload_code(session, prefix: str) -> str:
    """The project's code as one tarball at prefix/source.tar.gz; returns its URI."""
    from batch.packaging import stage_code

    bucket, key_prefix = prefix[5:].split("/", 1)
    with tempfile.TemporaryDirectory(prefix="htr-process-") as tmp:
        code = stage_code(Path(tmp) / "code")
        tarball = Path(tmp) / CODE_TARBALL
        with tarfile.open(tarball, "w:gz") as tar:
            for path in sorted(code.rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=path.relative_to(code).as_posix(), recursive=False)
        return session.upload_data(str(tarball), bucket=bucket, key_prefix=key_prefix)


def _sdk_list(items: list[str]) -> list[Any]:
    """items as the SDK's list[str | PipelineVariable] (the same list; the type is invariant)."""
    return items


def launch_processing(spec: ProcessSpec, session) -> Any:
    """Create the Processing job; returns the SDK Processor (its latest_job to wait on)."""
    from sagemaker import image_uris
    from sagemaker.network import NetworkConfig
    from sagemaker.processing import ProcessingInput, Processor
    from sagemaker.utils import name_from_base

    check_process(spec)
    job_name = spec.job_name or name_from_base("htr-process")
    inputs, entrypoint, image = [], ["htr", "run"], spec.image_uri
    if not image:
        image = image_uris.retrieve(
            "pytorch",
            session.boto_region_name,
            version=FRAMEWORK_VERSION,
            py_version=PY_VERSION,
            instance_type=spec.instance_type,
            image_scope="training",
        )
        code_uri = _upload_code(session, _code_prefix(spec, job_name))
        inputs = [ProcessingInput(source=code_uri, destination=CODE_DIR, input_name="code")]
        entrypoint = ["bash", "-c", BOOTSTRAP, "htr-run"]
    network = None
    if spec.security.vpc_config:
        network = NetworkConfig(
            subnets=_sdk_list(spec.security.subnets),
            security_group_ids=_sdk_list(spec.security.security_group_ids),
        )
    processor = Processor(
        role=spec.role,
        image_uri=image,
        instance_count=spec.instance_count,
        instance_type=spec.instance_type,
        entrypoint=_sdk_list(entrypoint),
        volume_size_in_gb=spec.volume_size_gb,
        volume_kms_key=spec.security.volume_kms_key,
        output_kms_key=spec.security.output_kms_key,
        max_runtime_in_seconds=spec.max_runtime_s,
        sagemaker_session=session,
        tags=spec.security.tag_list,  # type: ignore[arg-type]  # SDK: list[dict[str, str | PipelineVariable]]
        network_config=network,
        env={"PYTHONUNBUFFERED": "1"},
    )
    processor.run(inputs=inputs, arguments=run_arguments(spec), wait=False, logs=False, job_name=job_name)
    return processor


def split_args(text: str) -> list[str]:
    return shlex.split(text or "")
