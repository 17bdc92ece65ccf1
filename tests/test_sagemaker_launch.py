"""`htr sagemaker train|transform` against moto's SageMaker + S3 server on 127.0.0.1.

The launcher runs the real SDK (sagemaker 2.x) with --no-wait; the jobs are then read
back with boto3 Describe calls. Moto keeps neither a training job's MetricDefinitions
nor its Environment, so those are checked on the request the launcher prints (the
parameters botocore was handed for CreateTrainingJob).
"""
from __future__ import annotations

import io
import json
import re
import tarfile

import boto3
import pytest

from batch.cli import main as htr
from batch.errors import EXIT_BAD_ARGS, EXIT_OK
from jobs.sagemaker import session as sm_session
from jobs.sagemaker import training


ROLE = "arn:aws:iam::123456789012:role/htr-sagemaker"
TRAIN_LOG = [  # lines as jobs/train.py prints them
    ("step=120 train_loss=0.53", {"train_loss": 0.53}),
    ("step=5000 train_loss=5.3e-05 lr=1.2e-06 sec_per_step=0.8",
     {"train_loss": 5.3e-05, "lr": 1.2e-06, "sec_per_step": 0.8}),
    ("step=7000 test_cer=0.2447 test_wer=0.6687", {"test_cer": 0.2447, "test_wer": 0.6687}),
    ("step=500 test_cer=0.071 test_wer=0.2", {"test_cer": 0.071, "test_wer": 0.2}),
    ("test_wer=0.2", {"test_wer": 0.2}),
    ("test_f1=0.91", {"test_f1": 0.91}),
    ("step=500 test_precision=0.9 test_recall=0.92 test_f1=0.91",
     {"test_precision": 0.9, "test_recall": 0.92, "test_f1": 0.91}),
]


def _scrape(definitions: list[dict[str, str]], line: str) -> dict[str, float]:
    """What SageMaker would record for one log line: the first group of each matching regex."""
    found = {}
    for d in definitions:
        m = re.search(d["Regex"], line)
        if m:
            found[d["Name"]] = float(m.group(1))
    return found


def _run(capsys, *argv: str) -> tuple[int, dict]:
    code = htr(["sagemaker", *argv])
    out = capsys.readouterr().out
    return code, (json.loads(out) if code == EXIT_OK else {})


def _sagemaker(endpoint: str):
    return boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1")


def _decode(hyperparameters: dict[str, str]) -> dict:
    """The SDK JSON-encodes hyperparameter values; the training toolkit decodes them."""
    return {k: json.loads(v) for k, v in hyperparameters.items()}


def _train_args(bucket: str) -> list[str]:
    return ["train", "recogniser", "--train", f"s3://{bucket}/train", "--test", f"s3://{bucket}/test",
            "--role", ROLE, "--instance-type", "ml.g5.12xlarge", "--instance-count", "2",
            "--hyperparameters", "steps=100", "batch-size=32", "--spot", "--max-wait", "7200",
            "--max-run", "3600", "--checkpoint-s3-uri", f"s3://{bucket}/ckpt",
            "--output-path", f"s3://{bucket}/models"]


def _transform_args(bucket: str) -> list[str]:
    return ["transform", "--model-data", f"s3://{bucket}/m/model.tar.gz",
            "--input", f"s3://{bucket}/docs/", "--output", f"s3://{bucket}/transform-out/",
            "--instance-count", "3", "--instance-type", "ml.g5.xlarge", "--content-type",
            "application/pdf", "--max-payload-mb", "25", "--max-concurrent", "4", "--role", ROLE]


@pytest.mark.parametrize("line,expected", TRAIN_LOG)
def test_metric_regexes_read_training_log_lines(line: str, expected: dict) -> None:
    assert _scrape(training.METRIC_DEFINITIONS, line) == pytest.approx(expected)


def test_train_job_on_moto(s3_endpoint: str, s3_bucket: str, capsys) -> None:
    code, printed = _run(capsys, *_train_args(s3_bucket), "--no-wait")
    assert code == EXIT_OK and printed["dry_run"] is False
    request = printed["CreateTrainingJob"]
    job = _sagemaker(s3_endpoint).describe_training_job(TrainingJobName=request["TrainingJobName"])

    assert job["AlgorithmSpecification"]["TrainingImage"].endswith(
        f"/pytorch-training:{sm_session.FRAMEWORK_VERSION}-gpu-{sm_session.PY_VERSION}")
    hp = _decode(job["HyperParameters"])
    assert hp["sagemaker_program"] == "jobs/train.py"
    assert hp["model"] == "recogniser" and hp["steps"] == "100" and hp["batch-size"] == "32"
    assert hp["sagemaker_torch_distributed_enabled"] is True  # 2 x 4 GPUs
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in job["InputDataConfig"]}
    assert channels == {"train": f"s3://{s3_bucket}/train", "test": f"s3://{s3_bucket}/test"}
    assert job["ResourceConfig"]["InstanceCount"] == 2
    assert job["ResourceConfig"]["InstanceType"] == "ml.g5.12xlarge"
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job["CheckpointConfig"] == {"S3Uri": f"s3://{s3_bucket}/ckpt",
                                       "LocalPath": "/opt/ml/checkpoints"}
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{s3_bucket}/models"
    assert job["RoleArn"] == ROLE

    # moto drops these two: check them on the request that went to it
    metrics = request["AlgorithmSpecification"]["MetricDefinitions"]
    for line, expected in TRAIN_LOG:
        assert _scrape(metrics, line) == pytest.approx(expected)
    assert request["Environment"] == {"PYTHONPATH": "/opt/ml/code"}

    _check_source_tarball(s3_endpoint, hp["sagemaker_submit_directory"])


def _check_source_tarball(endpoint: str, uri: str) -> None:
    """The SDK uploaded the staged code: packages + container requirements, no weights."""
    bucket, key = uri[len("s3://"):].split("/", 1)
    body = boto3.client("s3", endpoint_url=endpoint).get_object(Bucket=bucket, Key=key)["Body"]
    with tarfile.open(fileobj=io.BytesIO(body.read())) as tar:
        names = set(tar.getnames())
        requirements = tar.extractfile("requirements.txt").read().decode()
    assert {"jobs/train.py", "batch/pipeline.py", "models/checkpoints.py",
            "transforms/rasterise.py", "requirements.txt"} <= names
    assert not [n for n in names if n.endswith(".safetensors") or "__pycache__" in n]
    pins = {line.split("==")[0] for line in requirements.split()}
    assert "numpy" in pins and not pins & {"torch", "torchvision", "pytest", "moto"}


def test_transform_job_on_moto(s3_endpoint: str, s3_bucket: str, capsys) -> None:
    code, printed = _run(capsys, *_transform_args(s3_bucket), "--no-wait")
    assert code == EXIT_OK
    sm = _sagemaker(s3_endpoint)
    job = sm.describe_transform_job(TransformJobName=printed["CreateTransformJob"]["TransformJobName"])
    assert job["BatchStrategy"] == "SingleRecord"
    assert job["MaxPayloadInMB"] == 25 and job["MaxConcurrentTransforms"] == 4
    assert job["TransformInput"]["ContentType"] == "application/pdf"
    assert job["TransformInput"].get("SplitType", "None") == "None"  # one document per request
    assert job["TransformInput"]["DataSource"]["S3DataSource"] == {
        "S3DataType": "S3Prefix", "S3Uri": f"s3://{s3_bucket}/docs/"}
    assert job["TransformOutput"] == {"S3OutputPath": f"s3://{s3_bucket}/transform-out/",
                                      "Accept": "application/json", "AssembleWith": "None"}
    assert job["TransformResources"] == {"InstanceCount": 3, "InstanceType": "ml.g5.xlarge"}
    env = job["Environment"]
    assert env["SAGEMAKER_BATCH"] == "true"
    assert env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] == "25"
    assert env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] == "4"

    model = sm.describe_model(ModelName=job["ModelName"])
    container = model["PrimaryContainer"]
    assert container["Image"].endswith(f"/pytorch-inference:{sm_session.FRAMEWORK_VERSION}-gpu-{sm_session.PY_VERSION}")
    assert container["ModelDataUrl"] == f"s3://{s3_bucket}/m/model.tar.gz"
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert model["ExecutionRoleArn"] == ROLE


def _unnamed(request: dict) -> str:
    """A request with its generated (timestamped) names blanked, for comparisons."""
    text = json.dumps(request, sort_keys=True)
    return re.sub(r"htr-[a-z]+-\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-\d{3}", "NAME", text)


def test_dry_run_prints_the_same_requests_and_sends_nothing(s3_endpoint: str, s3_bucket: str,
                                                            capsys, monkeypatch) -> None:
    _, live_train = _run(capsys, *_train_args(s3_bucket), "--no-wait")
    _, live_transform = _run(capsys, *_transform_args(s3_bucket), "--no-wait")
    # Anything sent now would hit a closed port and fail the command.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    code, dry_train = _run(capsys, *_train_args(s3_bucket), "--dry-run")
    assert code == EXIT_OK and dry_train["dry_run"] is True
    assert _unnamed(dry_train["CreateTrainingJob"]) == _unnamed(live_train["CreateTrainingJob"])
    assert [_unnamed(u) for u in dry_train["uploads"]] == [_unnamed(u) for u in live_train["uploads"]]
    code, dry_transform = _run(capsys, *_transform_args(s3_bucket), "--dry-run")
    assert code == EXIT_OK
    for op in ("CreateModel", "CreateTransformJob"):
        assert _unnamed(dry_transform[op]) == _unnamed(live_transform[op])


def test_dry_run_needs_no_credentials(monkeypatch, capsys) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    code, printed = _run(capsys, "train", "segmenter", "--train", "s3://b/train", "--role", ROLE,
                         "--instance-type", "ml.m5.xlarge", "--dry-run")
    assert code == EXIT_OK and printed["region"] == "us-east-1"
    request = printed["CreateTrainingJob"]
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith(
        f"/pytorch-training:{sm_session.FRAMEWORK_VERSION}-cpu-{sm_session.PY_VERSION}")
    assert "sagemaker_torch_distributed_enabled" not in request["HyperParameters"]
    assert "EnableManagedSpotTraining" not in request or not request["EnableManagedSpotTraining"]
    # no --output-path: the SDK's default bucket, named after the (dry-run) account
    assert printed["uploads"][0].startswith(f"s3://sagemaker-us-east-1-{sm_session.DRY_RUN_ACCOUNT}/")


def test_bring_your_own_image(capsys) -> None:
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/htr-batch:1"
    code, printed = _run(capsys, "transform", "--model-data", "s3://b/model.tar.gz", "--input",
                         "s3://b/in/", "--output", "s3://b/out/", "--instance-type", "ml.c5.xlarge",
                         "--role", ROLE, "--image-uri", image, "--region", "eu-west-1", "--dry-run")
    assert code == EXIT_OK
    assert printed["CreateModel"]["PrimaryContainer"]["Image"] == image
    assert printed["CreateTransformJob"]["TransformInput"]["ContentType"] == "application/x-image"


@pytest.mark.parametrize("argv,message", [
    (["train", "segmenter", "--train", "s3://b/t", "--role", ROLE, "--instance-type",
      "ml.m5.xlarge", "--instance-count", "2"], "needs GPU instances"),
    (["train", "segmenter", "--train", "s3://b/t", "--role", ROLE, "--instance-type",
      "ml.g5.xlarge", "--spot", "--max-wait", "600", "--max-run", "3600"], "shorter than"),
    (["train", "segmenter", "--train", "s3://b/t", "--role", ROLE, "--instance-type",
      "ml.g5.xlarge", "--hyperparameters", "steps"], "not key=value"),
    (["transform", "--model-data", "s3://b/m.tar.gz", "--input", "s3://b/i/", "--output",
      "s3://b/o/", "--instance-type", "ml.g5.xlarge", "--role", ROLE, "--max-payload-mb", "50",
      "--max-concurrent", "4"], "at most 100 MB"),
])
def test_bad_combinations_are_refused(argv: list[str], message: str, capsys) -> None:
    assert htr(["sagemaker", *argv, "--dry-run", "--region", "us-east-1"]) == EXIT_BAD_ARGS
    assert message in capsys.readouterr().err


def test_gpu_counts() -> None:
    assert training.distribution_for("ml.g5.xlarge", 1) is None
    assert training.distribution_for("ml.p4d.24xlarge", 1) == {"torch_distributed": {"enabled": True}}
    assert training.distribution_for("ml.g5.2xlarge", 2) == {"torch_distributed": {"enabled": True}}
    assert training.distribution_for("ml.m5.xlarge", 1) is None
