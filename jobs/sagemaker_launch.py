"""`htr sagemaker`: launch training and Batch Transform jobs, collect transform output.

A thin layer over the SageMaker Python SDK 2.x (`sagemaker.pytorch.PyTorch`, `PyTorchModel`,
`Transformer`). Every launch prints the SageMaker API requests the SDK sent, as JSON; with
`--dry-run` the SDK runs against a boto3 session whose calls are answered locally at the
botocore layer, so the printed request is exactly what the SDK would send, and nothing leaves
the machine.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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

from batch.errors import EXIT_BAD_ARGS, EXIT_FATAL, EXIT_OK, EXIT_PARTIAL  # noqa: E402

log = logging.getLogger("htr.sagemaker")

# The newest PyTorch that the SDK's image config has for both training and inference images
# (sagemaker/image_uri_config/pytorch.json), and the one torch_distributed accepts on GPUs.
FRAMEWORK_VERSION = "2.6.0"
PY_VERSION = "py312"
TRAIN_ENTRY_POINT = "jobs/train.py"
CONTAINER_CODE_DIR = "/opt/ml/code"          # where the training toolkit unpacks source_dir
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
MODEL_CODE_DIR = "/opt/ml/model/code"         # code/ inside model.tar.gz, once unpacked
MODEL_KINDS = ("segmenter", "recogniser")

# CloudWatch metrics scraped from the training log; jobs/train.py prints key=value lines such
# as "step=120 train_loss=0.53", "epoch=3 test_cer=0.071 test_wer=0.2", "test_f1=0.91".
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": "train_loss", "Regex": r"\btrain_loss=" + _NUMBER},
    {"Name": "test_cer", "Regex": r"\btest_cer=" + _NUMBER},
    {"Name": "test_wer", "Regex": r"\btest_wer=" + _NUMBER},
    {"Name": "test_f1", "Regex": r"\btest_f1=" + _NUMBER},
    {"Name": "test_precision", "Regex": r"\btest_precision=" + _NUMBER},
    {"Name": "test_recall", "Regex": r"\btest_recall=" + _NUMBER},
    {"Name": "epoch", "Regex": r"\bepoch=([0-9]+)"},
]

# GPUs per instance for the multi-GPU types (one-GPU p*/g* types are not listed).
MULTI_GPU_INSTANCES: dict[str, int] = {
    "ml.p3.8xlarge": 4, "ml.p3.16xlarge": 8, "ml.p3dn.24xlarge": 8, "ml.p4d.24xlarge": 8,
    "ml.p4de.24xlarge": 8, "ml.p5.48xlarge": 8, "ml.p5e.48xlarge": 8, "ml.p5en.48xlarge": 8,
    "ml.g4dn.12xlarge": 4, "ml.g4dn.metal": 8, "ml.g5.12xlarge": 4, "ml.g5.24xlarge": 4,
    "ml.g5.48xlarge": 8, "ml.g6.12xlarge": 4, "ml.g6.24xlarge": 4, "ml.g6.48xlarge": 8,
    "ml.g6e.12xlarge": 4, "ml.g6e.24xlarge": 4, "ml.g6e.48xlarge": 8,
}

# What `--content-type` may say; "auto" lets the container sniff each document's bytes.
CONTENT_TYPES = {"auto": "application/x-image", "application/pdf": "application/pdf",
                 "image/jpeg": "image/jpeg", "image/png": "image/png", "image/tiff": "image/tiff",
                 "application/x-image": "application/x-image"}
MAX_TRANSFORM_MB = 100   # CreateTransformJob: MaxPayloadInMB * MaxConcurrentTransforms <= 100
DEFAULT_MAX_RUN_S = 24 * 3600
DRY_RUN_ACCOUNT = "000000000000"
TELEMETRY_OPT_OUT = ("SageMaker", "PythonSDK", "Modules", "TelemetryOptOut")


class LaunchError(Exception):
    """A launch that cannot be built as asked (bad combination of arguments)."""


# ---- sessions and the request recorder ---------------------------------------------------------

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
        else:
            entry["params"] = copy.deepcopy(params)
        with self._lock:
            self.calls.append(entry)

    def _answer(self, model, **_: Any) -> tuple[Any, dict]:
        from botocore.awsrequest import AWSResponse

        body = self._fake_response(model.name)
        body.setdefault("ResponseMetadata", {"HTTPStatusCode": 200, "RequestId": "dry-run"})
        return AWSResponse("https://dry-run.invalid/", 200, {}, None), body

    def _fake_response(self, operation: str) -> dict[str, Any]:
        """Just enough of each answer for the SDK to carry on."""
        arn = f"arn:aws:sagemaker:{self.region}:{DRY_RUN_ACCOUNT}"
        request = self.requests().get(operation, {})
        if operation == "CreateTrainingJob":
            return {"TrainingJobArn": f"{arn}:training-job/{request.get('TrainingJobName')}"}
        if operation == "CreateModel":
            return {"ModelArn": f"{arn}:model/{request.get('ModelName')}"}
        if operation == "CreateTransformJob":
            return {"TransformJobArn": f"{arn}:transform-job/{request.get('TransformJobName')}"}
        if operation == "GetCallerIdentity":
            return {"Account": DRY_RUN_ACCOUNT, "UserId": "dry-run",
                    "Arn": f"arn:aws:iam::{DRY_RUN_ACCOUNT}:user/dry-run"}
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
            return {c["operation"]: c["params"] for c in self.calls if c["service"] == "sagemaker"}

    def uploads(self) -> list[str]:
        with self._lock:
            return [f"s3://{c['params']['Bucket']}/{c['params']['Key']}" for c in self.calls
                    if c["operation"] in ("PutObject", "CreateMultipartUpload")]

    def report(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "region": self.region, **self.requests(),
                "uploads": self.uploads()}


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
            validate_sagemaker_config(config)  # raises for a bad config, every time
            valid.add(key)

    validate.htr_once = True  # type: ignore[attr-defined]
    sm_utils.validate_sagemaker_config = validate


def make_session(region: str | None, dry_run: bool):
    """A sagemaker.Session (telemetry off) and the recorder attached to its boto3 session."""
    import boto3
    import sagemaker

    if dry_run:  # dummy credentials: never look up real ones (no IMDS waits, no profile)
        boto = boto3.Session(aws_access_key_id="dry-run", aws_secret_access_key="dry-run",
                             region_name=region or boto3.Session().region_name or "us-east-1")
    else:
        boto = boto3.Session(region_name=region)
    if not boto.region_name:
        raise LaunchError("no AWS region: pass --region or set AWS_REGION")
    recorder = ApiRecorder(dry_run=dry_run, region=boto.region_name)
    recorder.attach(boto)
    _validate_each_config_once()
    session = sagemaker.Session(boto_session=boto, sagemaker_config=_sdk_config())
    return session, recorder


# ---- training ----------------------------------------------------------------------------------

@dataclass
class TrainSpec:
    model: str
    train: str
    role: str
    instance_type: str
    test: str | None = None
    instance_count: int = 1
    hyperparameters: dict[str, str] = field(default_factory=dict)
    spot: bool = False
    max_wait: int | None = None
    max_run: int | None = None
    checkpoint_s3_uri: str | None = None
    output_path: str | None = None
    code_location: str | None = None
    image_uri: str | None = None
    job_name: str | None = None
    volume_size_gb: int = 30
    wait: bool = True


def gpus_per_instance(instance_type: str) -> int:
    from sagemaker.fw_utils import _is_gpu_instance

    if instance_type in MULTI_GPU_INSTANCES:
        return MULTI_GPU_INSTANCES[instance_type]
    return 1 if _is_gpu_instance(instance_type) else 0


def distribution_for(instance_type: str, instance_count: int) -> dict[str, Any] | None:
    """torchrun across every GPU of every instance, when there is more than one GPU."""
    gpus = gpus_per_instance(instance_type)
    if instance_count == 1 and gpus <= 1:
        return None
    if gpus == 0:
        raise LaunchError(f"{instance_count} x {instance_type}: distributed training needs GPU "
                          "instances (ml.g*/ml.p*); use --instance-count 1 on CPU")
    return {"torch_distributed": {"enabled": True}}


def stopping_times(spec: TrainSpec) -> tuple[int, int | None]:
    """(max_run, max_wait): spot jobs must wait at least as long as they may run."""
    max_run = spec.max_run or min(DEFAULT_MAX_RUN_S, spec.max_wait or DEFAULT_MAX_RUN_S)
    if not spec.spot:
        if spec.max_wait:
            raise LaunchError("--max-wait only applies to --spot training")
        return max_run, None
    max_wait = spec.max_wait or max_run
    if max_wait < max_run:
        raise LaunchError(f"--max-wait {max_wait}s is shorter than --max-run {max_run}s")
    return max_run, max_wait


def training_hyperparameters(spec: TrainSpec) -> dict[str, str]:
    """Passed to jobs/train.py as `--key value`; the channels arrive as SM_CHANNEL_* paths."""
    hp = {"model": spec.model, **spec.hyperparameters}
    if spec.checkpoint_s3_uri:
        hp.setdefault("checkpoint-dir", CHECKPOINT_LOCAL_PATH)
    return hp


def build_estimator(spec: TrainSpec, session, source_dir: Path):
    from sagemaker.pytorch import PyTorch

    if spec.model not in MODEL_KINDS:
        raise LaunchError(f"model must be one of {', '.join(MODEL_KINDS)}")
    max_run, max_wait = stopping_times(spec)
    kwargs: dict[str, Any] = {}
    if spec.checkpoint_s3_uri:
        kwargs.update(checkpoint_s3_uri=spec.checkpoint_s3_uri,
                      checkpoint_local_path=CHECKPOINT_LOCAL_PATH)
    distribution = distribution_for(spec.instance_type, spec.instance_count)
    if distribution:
        kwargs["distribution"] = distribution
    return PyTorch(
        entry_point=TRAIN_ENTRY_POINT, source_dir=str(source_dir), role=spec.role,
        framework_version=FRAMEWORK_VERSION, py_version=PY_VERSION, image_uri=spec.image_uri,
        instance_type=spec.instance_type, instance_count=spec.instance_count,
        hyperparameters=training_hyperparameters(spec), metric_definitions=METRIC_DEFINITIONS,
        use_spot_instances=spec.spot, max_run=max_run, max_wait=max_wait,
        output_path=spec.output_path, code_location=spec.code_location,
        volume_size=spec.volume_size_gb, sagemaker_session=session,
        disable_profiler=True, debugger_hook_config=False,  # no extra rule jobs or S3 output
        # the training toolkit runs `python jobs/train.py`: let it import batch/, models/, ...
        environment={"PYTHONPATH": CONTAINER_CODE_DIR},
        base_job_name=f"htr-{spec.model}", **kwargs)


def launch_training(spec: TrainSpec, session) -> Any:
    """Stage the code, create the training job; returns the estimator."""
    from batch.packaging import stage_code

    channels = {"train": spec.train, **({"test": spec.test} if spec.test else {})}
    with tempfile.TemporaryDirectory(prefix="htr-source-") as tmp:
        source_dir = stage_code(Path(tmp) / "source")
        estimator = build_estimator(spec, session, source_dir)
        estimator.fit(channels, wait=False, logs="None", job_name=spec.job_name)
    return estimator


# ---- batch transform ---------------------------------------------------------------------------

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
    wait: bool = True


def check_transform_limits(spec: TransformSpec) -> None:
    if spec.content_type not in CONTENT_TYPES:
        raise LaunchError(f"--content-type must be one of {', '.join(CONTENT_TYPES)}")
    if spec.max_payload_mb < 1 or spec.max_concurrent < 1:
        raise LaunchError("--max-payload-mb and --max-concurrent must be at least 1")
    if spec.max_payload_mb * spec.max_concurrent > MAX_TRANSFORM_MB:
        raise LaunchError(f"--max-payload-mb x --max-concurrent = "
                          f"{spec.max_payload_mb * spec.max_concurrent} MB; SageMaker allows "
                          f"at most {MAX_TRANSFORM_MB} MB")


def model_env() -> dict[str, str]:
    """The framework container's handler: code/inference.py inside model.tar.gz."""
    return {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": MODEL_CODE_DIR}


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


def _bucket_prefix(uri: str) -> str:
    """s3://bucket/... -> s3://bucket/htr-model-code: where the SDK may stage model code."""
    if not uri.startswith("s3://"):
        raise LaunchError(f"{uri!r} is not an s3:// URI")
    return f"s3://{uri[5:].split('/', 1)[0]}/htr-model-code"


def build_transformer(spec: TransformSpec, session):
    from sagemaker.pytorch import PyTorchModel
    from sagemaker.utils import name_from_base

    check_transform_limits(spec)
    model = PyTorchModel(
        model_data=spec.model_data, role=spec.role, entry_point=None,
        framework_version=FRAMEWORK_VERSION, py_version=PY_VERSION, image_uri=spec.image_uri,
        env=model_env(), name=spec.model_name or name_from_base("htr-model"),
        sagemaker_session=session,
        # with code_location set the SDK never creates its default bucket just to look at it
        code_location=_bucket_prefix(spec.output))
    return model.transformer(
        instance_count=spec.instance_count, instance_type=spec.instance_type,
        strategy="SingleRecord", assemble_with="None", output_path=spec.output,
        accept="application/json", max_concurrent_transforms=spec.max_concurrent,
        max_payload=spec.max_payload_mb, env=transform_env(spec))


def launch_transform(spec: TransformSpec, session) -> Any:
    """Create the model and the transform job (one document per request); returns the Transformer."""
    from sagemaker.utils import name_from_base

    transformer = build_transformer(spec, session)
    transformer.transform(
        data=spec.input, data_type="S3Prefix", content_type=CONTENT_TYPES[spec.content_type],
        split_type=None, job_name=spec.job_name or name_from_base("htr-transform"),
        wait=False, logs=False,
        model_client_config={"InvocationsTimeoutInSeconds": spec.invocation_timeout_s,
                             "InvocationsMaxRetries": 1})
    return transformer


# ---- collect: transform output -> the worker's output layout -----------------------------------

OUT_SUFFIX = ".out"   # Batch Transform writes <input key>.out for each input object


@dataclass
class CollectStats:
    documents: int = 0
    errors: int = 0
    missing: int = 0      # inputs with no .out: the job failed on them


def _error_record(doc_id: str, source_uri: str, stage: str, error_type: str, message: str,
                  run_id: str):
    from batch.schema import ErrorRecord, now_ms

    return ErrorRecord(doc_id=doc_id, source_uri=source_uri, stage=stage, error_type=error_type,
                       message=message[:2000], run_id=run_id, processed_at=now_ms())


def _uri_id(uri: str) -> str:
    """The worker's doc_id for a document whose bytes were never read: a hash of its URI."""
    import hashlib

    return hashlib.sha256(uri.encode()).hexdigest()[:24]


def record_from_out(body: bytes, source_uri: str, source_etag: str, run_id: str):
    """One .out body -> a DocumentRecord, or an ErrorRecord (error body or unreadable)."""
    from batch.schema import DocumentRecord

    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            err = data["error"]
            return _error_record(data.get("doc_id") or _uri_id(source_uri), source_uri,
                                 str(err.get("stage", "unknown")),
                                 str(err.get("type", "Error")), str(err.get("message", "")),
                                 run_id)
        record = DocumentRecord.from_json(data)
    except (ValueError, KeyError, TypeError) as e:
        return _error_record(_uri_id(source_uri), source_uri, "collect", "InvalidTransformOutput",
                             f"transform output is not a document record: {e}", run_id)
    record.source_uri = source_uri or record.source_uri
    record.source_etag = source_etag or record.source_etag
    record.run_id = run_id
    return record


def collect(transform_output: str, out: str, run_id: str, input_uri: str | None = None,
            formats: tuple[str, ...] = ()) -> CollectStats:
    """Write documents/, words/, pages/, errors/ from a transform's .out files.

    With `input_uri` each record gets the source URI and ETag the local worker would have
    given it, and inputs without a .out file become error rows.
    """
    from batch import storage
    from batch.outputs import OutputWriter
    from batch.schema import DocumentRecord

    from batch.exports import renderer   # archive formats, committed with the tables (--formats)

    sources = {o.key: o for o in storage.list_objects(input_uri)} if input_uri else {}
    writer, stats, seen = OutputWriter(out, run_id, exports=renderer(formats)), CollectStats(), set()
    for obj in storage.list_objects(transform_output):
        if not obj.key.endswith(OUT_SUFFIX):
            continue
        key = obj.key[: -len(OUT_SUFFIX)]
        seen.add(key)
        src = sources.get(key)
        rec = record_from_out(storage.read_bytes(obj.uri), src.uri if src else "",
                              src.etag if src else "", run_id)
        rec.source_uri = rec.source_uri or key
        if isinstance(rec, DocumentRecord):
            writer.model_version = writer.model_version or rec.model_version
            writer.add_document(rec, src)  # src: the ledger's etag/size, as the worker records
            stats.documents += 1
        else:
            writer.add_error(rec, src)
            stats.errors += 1
    for key in sorted(set(sources) - seen):
        writer.add_error(_error_record(
            _uri_id(sources[key].uri), sources[key].uri, "transform", "MissingTransformOutput",
            "no .out file for this input: the transform job failed on it (see its logs)", run_id),
            sources[key])
        stats.missing += 1
    writer.close()
    return stats


def _collect_main(args: argparse.Namespace) -> int:
    import time
    import uuid

    from batch.errors import HtrError

    run_id = args.run_id or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    try:
        stats = collect(args.transform_output, args.out, run_id, args.input, args.formats)
    except HtrError as e:
        print(f"htr sagemaker collect: {e.stage}: {e}", file=sys.stderr)
        return EXIT_FATAL
    print(f"collected {stats.documents} documents, {stats.errors} error records, "
          f"{stats.missing} inputs without output -> {args.out} (run {run_id})")
    return EXIT_PARTIAL if stats.errors or stats.missing else EXIT_OK


# ---- command line ------------------------------------------------------------------------------

def _key_values(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LaunchError(f"hyperparameter {item!r} is not key=value")
        out[key.lstrip("-")] = value
    return out


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", default=None, help="AWS region (default: boto3's chain)")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                   help="wait for the job to finish, streaming its logs (default: --wait)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the exact API requests as JSON; call nothing")
    p.add_argument("--image-uri", default=None,
                   help="bring-your-own image (the Dockerfile) instead of the PyTorch framework image")
    p.add_argument("--job-name", default=None)


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", choices=MODEL_KINDS)
    p.add_argument("--train", required=True, help="s3:// prefix of the training manifest + pages")
    p.add_argument("--test", default=None, help="s3:// prefix of the test set")
    p.add_argument("--role", default=os.environ.get("HTR_SAGEMAKER_ROLE"),
                   help="execution role ARN (default: $HTR_SAGEMAKER_ROLE)")
    p.add_argument("--instance-type", required=True)
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--hyperparameters", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--spot", action="store_true", help="managed spot training")
    p.add_argument("--max-wait", type=int, default=None, help="spot: seconds to wait + run")
    p.add_argument("--max-run", type=int, default=None, help="seconds (default 24h)")
    p.add_argument("--checkpoint-s3-uri", default=None,
                   help=f"synced with {CHECKPOINT_LOCAL_PATH}, so spot restarts resume")
    p.add_argument("--output-path", default=None, help="s3:// prefix for model.tar.gz")
    p.add_argument("--code-location", default=None, help="s3:// prefix for the source upload")
    p.add_argument("--volume-size", type=int, default=30, help="GB")
    _add_common(p)


def _configure_transform(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-data", required=True, help="s3://.../model.tar.gz (htr package-model)")
    p.add_argument("--input", required=True, help="s3:// prefix: one document per object")
    p.add_argument("--output", required=True, help="s3:// prefix: <key>.out JSON per document")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--instance-type", required=True)
    p.add_argument("--content-type", default="auto", choices=list(CONTENT_TYPES))
    p.add_argument("--max-payload-mb", type=int, default=20, help="largest document, MB")
    p.add_argument("--max-concurrent", type=int, default=4,
                   help="concurrent requests per instance (x max-payload-mb <= 100)")
    p.add_argument("--invocation-timeout", type=int, default=3600, help="seconds per document")
    p.add_argument("--role", default=os.environ.get("HTR_SAGEMAKER_ROLE"),
                   help="execution role ARN (default: $HTR_SAGEMAKER_ROLE)")
    p.add_argument("--model-name", default=None)
    _add_common(p)


def _configure_collect(p: argparse.ArgumentParser) -> None:
    p.add_argument("transform_output", help="s3:// prefix or folder with the transform's .out files")
    p.add_argument("out", help="output root (s3:// or folder): documents/, words/, pages/, errors/")
    p.add_argument("--input", default=None,
                   help="the transform's --input prefix: restores each record's source_uri")
    p.add_argument("--run-id", default=None, help="run id for the written rows (default: new)")
    from batch.exports import formats_arg
    p.add_argument("--formats", type=formats_arg, default=(), metavar="LIST",
                   help="as htr run --formats: also alto,page,hocr,pdf (pdf needs --input)")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sagemaker_command", metavar="ACTION", required=True)
    _configure_train(sub.add_parser("train", help="train the segmenter or recogniser"))
    _configure_transform(sub.add_parser("transform", help="Batch Transform over an s3:// prefix"))
    _configure_collect(sub.add_parser("collect", help="turn .out files into the output tables"))


def _train_spec(args: argparse.Namespace) -> TrainSpec:
    if not args.role:
        raise LaunchError("--role is required (or set HTR_SAGEMAKER_ROLE)")
    return TrainSpec(
        model=args.model, train=args.train, test=args.test, role=args.role,
        instance_type=args.instance_type, instance_count=args.instance_count,
        hyperparameters=_key_values(args.hyperparameters), spot=args.spot,
        max_wait=args.max_wait, max_run=args.max_run, checkpoint_s3_uri=args.checkpoint_s3_uri,
        output_path=args.output_path, code_location=args.code_location,
        image_uri=args.image_uri, job_name=args.job_name, volume_size_gb=args.volume_size,
        wait=args.wait)


def _transform_spec(args: argparse.Namespace) -> TransformSpec:
    if not args.role:
        raise LaunchError("--role is required (or set HTR_SAGEMAKER_ROLE)")
    return TransformSpec(
        model_data=args.model_data, input=args.input, output=args.output,
        instance_type=args.instance_type, role=args.role, instance_count=args.instance_count,
        content_type=args.content_type, max_payload_mb=args.max_payload_mb,
        max_concurrent=args.max_concurrent, invocation_timeout_s=args.invocation_timeout,
        image_uri=args.image_uri, model_name=args.model_name, job_name=args.job_name,
        wait=args.wait)


def _wait_for(wait: Callable[[], None]) -> int:
    """Block on the job; SDK progress goes to stderr so stdout stays one JSON document."""
    from sagemaker.exceptions import UnexpectedStatusException

    try:
        with contextlib.redirect_stdout(sys.stderr):
            wait()
    except UnexpectedStatusException as e:
        print(f"htr sagemaker: {e}", file=sys.stderr)
        return EXIT_FATAL
    return EXIT_OK


def _launch(args: argparse.Namespace) -> int:
    session, recorder = make_session(args.region, args.dry_run)
    if args.sagemaker_command == "train":
        spec = _train_spec(args)
        estimator = launch_training(spec, session)
        wait = lambda: estimator.latest_training_job.wait(logs="All")  # noqa: E731
    else:
        spec = _transform_spec(args)
        transformer = launch_transform(spec, session)
        wait = lambda: transformer.wait(logs=True)  # noqa: E731
    print(json.dumps(recorder.report(), indent=1, sort_keys=True, default=str), flush=True)
    if args.dry_run or not spec.wait:
        return EXIT_OK
    return _wait_for(wait)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.sagemaker_command == "collect":
        return _collect_main(args)
    try:
        return _launch(args)
    except (LaunchError, ValueError) as e:  # the SDK raises ValueError for bad combinations
        print(f"htr sagemaker {args.sagemaker_command}: {e}", file=sys.stderr)
        return EXIT_BAD_ARGS
    except Exception as e:  # botocore ClientError, missing credentials, ...
        from botocore.exceptions import BotoCoreError, ClientError
        if not isinstance(e, (BotoCoreError, ClientError)):
            raise
        print(f"htr sagemaker {args.sagemaker_command}: AWS said: {e}", file=sys.stderr)
        return EXIT_FATAL
