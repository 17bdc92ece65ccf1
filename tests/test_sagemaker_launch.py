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
from batch.core.errors import EXIT_BAD_ARGS, EXIT_OK
from jobs.sagemaker import session as sm_session
from jobs.sagemaker import training

ROLE = "arn:aws:iam::123456789012:role/htr-sagemaker"
TRAIN_LOG = [  # lines as jobs/train.py prints them
    ("step=120 train_loss=0.53", {"train_loss": 0.53}),
    (
        "step=5000 train_loss=5.3e-05 lr=1.2e-06 sec_per_step=0.8",
        {"train_loss": 5.3e-05, "lr": 1.2e-06, "sec_per_step": 0.8},
    ),
    ("step=7000 test_cer=0.2447 test_wer=0.6687", {"test_cer": 0.2447, "test_wer": 0.6687}),
    ("step=500 test_cer=0.071 test_wer=0.2", {"test_cer": 0.071, "test_wer": 0.2}),
    ("test_wer=0.2", {"test_wer": 0.2}),
    ("test_f1=0.91", {"test_f1": 0.91}),
    (
        "step=500 test_precision=0.9 test_recall=0.92 test_f1=0.91",
        {"test_precision": 0.9, "test_recall": 0.92, "test_f1": 0.91},
    ),
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
    return [
        "train",
        "recogniser",
        "--train",
        f"s3://{bucket}/train",
        "--test",
        f"s3://{bucket}/test",
        "--role",
        ROLE,
        "--instance-type",
        "ml.g5.12xlarge",
        "--instance-count",
        "2",
        "--hyperparameters",
        "steps=100",
        "batch-size=32",
        "--spot",
        "--max-wait",
        "7200",
        "--max-run",
        "3600",
        "--checkpoint-s3-uri",
        f"s3://{bucket}/ckpt",
        "--output-path",
        f"s3://{bucket}/models",
        "--init",  # fine-tuning: an earlier job's output, as the `init` channel
        f"s3://{bucket}/models/rec-job/output/model.tar.gz",
    ]


def _transform_args(bucket: str) -> list[str]:
    return [
        "transform",
        "--model-data",
        f"s3://{bucket}/m/model.tar.gz",
        "--input",
        f"s3://{bucket}/docs/",
        "--output",
        f"s3://{bucket}/transform-out/",
        "--instance-count",
        "3",
        "--instance-type",
        "ml.g5.xlarge",
        "--content-type",
        "application/pdf",
        "--max-payload-mb",
        "25",
        "--max-concurrent",
        "4",
        "--role",
        ROLE,
    ]


@pytest.mark.parametrize("line,expected", TRAIN_LOG)
def test_metric_regexes_read_training_log_lines(line: str, expected: dict) -> None:
    assert _scrape(training.METRIC_DEFINITIONS, line) == pytest.approx(expected)


def test_train_job_on_moto(s3_endpoint: str, s3_bucket: str, capsys, tmp_path) -> None:
    code, printed = _run(capsys, *_train_args(s3_bucket), "--no-wait")
    assert code == EXIT_OK and printed["dry_run"] is False
    request = printed["CreateTrainingJob"]
    job = _sagemaker(s3_endpoint).describe_training_job(TrainingJobName=request["TrainingJobName"])

    assert job["AlgorithmSpecification"]["TrainingImage"].endswith(
        f"/pytorch-training:{sm_session.FRAMEWORK_VERSION}-gpu-{sm_session.PY_VERSION}"
    )
    hp = _decode(job["HyperParameters"])
    assert hp["sagemaker_program"] == "jobs/train.py"
    assert hp["model"] == "recogniser" and hp["steps"] == "100" and hp["batch-size"] == "32"
    assert hp["sagemaker_torch_distributed_enabled"] is True  # 2 x 4 GPUs
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in job["InputDataConfig"]}
    assert channels == {
        "train": f"s3://{s3_bucket}/train",
        "test": f"s3://{s3_bucket}/test",
        "init": f"s3://{s3_bucket}/models/rec-job/output/model.tar.gz",
    }
    assert "init" not in hp  # jobs/train.py reads SM_CHANNEL_INIT
    assert job["ResourceConfig"]["InstanceCount"] == 2
    assert job["ResourceConfig"]["InstanceType"] == "ml.g5.12xlarge"
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job["CheckpointConfig"] == {"S3Uri": f"s3://{s3_bucket}/ckpt", "LocalPath": "/opt/ml/checkpoints"}
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{s3_bucket}/models"
    assert job["RoleArn"] == ROLE

    # moto drops these two: check them on the request that went to it
    metrics = request["AlgorithmSpecification"]["MetricDefinitions"]
    for line, expected in TRAIN_LOG:
        assert _scrape(metrics, line) == pytest.approx(expected)
    assert request["Environment"] == {"PYTHONPATH": "/opt/ml/code"}

    _check_source_tarball(s3_endpoint, hp["sagemaker_submit_directory"], tmp_path / "source_dir")


def _check_source_tarball(endpoint: str, uri: str, unpacked) -> None:
    """The SDK uploaded the staged code: packages + container requirements, no weights; and the
    training toolkit's `pip install -r requirements.txt` resolves inside it alone (a dry run in
    an empty folder holding only the unpacked tarball)."""
    from tests.test_packaging import pip_dry_run

    bucket, key = uri[len("s3://") :].split("/", 1)
    body = boto3.client("s3", endpoint_url=endpoint).get_object(Bucket=bucket, Key=key)["Body"]
    with tarfile.open(fileobj=io.BytesIO(body.read())) as tar:
        names = set(tar.getnames())
        requirements = tar.extractfile("requirements.txt").read().decode()
        unpacked.mkdir()
        tar.extractall(unpacked, filter="data")
    assert "Requirement already satisfied: pypdfium2==" in pip_dry_run(unpacked, "requirements.txt")
    assert {
        "jobs/train.py",
        "batch/pipeline.py",
        "models/checkpoints.py",
        "transforms/rasterise.py",
        "requirements.txt",
    } <= names
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
        "S3DataType": "S3Prefix",
        "S3Uri": f"s3://{s3_bucket}/docs/",
    }
    assert job["TransformOutput"] == {
        "S3OutputPath": f"s3://{s3_bucket}/transform-out/",
        "Accept": "application/json",
        "AssembleWith": "None",
    }
    assert job["TransformResources"] == {"InstanceCount": 3, "InstanceType": "ml.g5.xlarge"}
    env = job["Environment"]
    assert env["SAGEMAKER_BATCH"] == "true"
    assert env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] == "25"
    assert env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] == "4"

    model = sm.describe_model(ModelName=job["ModelName"])
    container = model["PrimaryContainer"]
    assert container["Image"].endswith(
        f"/pytorch-inference:{sm_session.FRAMEWORK_VERSION}-gpu-{sm_session.PY_VERSION}"
    )
    assert container["ModelDataUrl"] == f"s3://{s3_bucket}/m/model.tar.gz"
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert model["ExecutionRoleArn"] == ROLE


def _unnamed(request: dict) -> str:
    """A request with its generated (timestamped) names blanked, for comparisons."""
    text = json.dumps(request, sort_keys=True)
    return re.sub(r"htr-[a-z]+-\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-\d{3}", "NAME", text)


def test_dry_run_prints_the_same_requests_and_sends_nothing(
    s3_endpoint: str, s3_bucket: str, capsys, monkeypatch
) -> None:
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
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    code, printed = _run(
        capsys,
        "train",
        "segmenter",
        "--train",
        "s3://b/train",
        "--role",
        ROLE,
        "--instance-type",
        "ml.m5.xlarge",
        "--dry-run",
    )
    assert code == EXIT_OK and printed["region"] == "us-east-1"
    request = printed["CreateTrainingJob"]
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith(
        f"/pytorch-training:{sm_session.FRAMEWORK_VERSION}-cpu-{sm_session.PY_VERSION}"
    )
    assert "sagemaker_torch_distributed_enabled" not in request["HyperParameters"]
    assert "EnableManagedSpotTraining" not in request or not request["EnableManagedSpotTraining"]
    # no --output-path: the SDK's default bucket, named after the (dry-run) account
    assert printed["uploads"][0].startswith(f"s3://sagemaker-us-east-1-{sm_session.DRY_RUN_ACCOUNT}/")


def test_bring_your_own_image(capsys) -> None:
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/htr-batch:1"
    code, printed = _run(
        capsys,
        "transform",
        "--model-data",
        "s3://b/model.tar.gz",
        "--input",
        "s3://b/in/",
        "--output",
        "s3://b/out/",
        "--instance-type",
        "ml.c5.xlarge",
        "--role",
        ROLE,
        "--image-uri",
        image,
        "--region",
        "eu-west-1",
        "--dry-run",
    )
    assert code == EXIT_OK
    assert printed["CreateModel"]["PrimaryContainer"]["Image"] == image
    assert printed["CreateTransformJob"]["TransformInput"]["ContentType"] == "application/x-image"


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            [
                "train",
                "segmenter",
                "--train",
                "s3://b/t",
                "--role",
                ROLE,
                "--instance-type",
                "ml.m5.xlarge",
                "--instance-count",
                "2",
            ],
            "needs GPU instances",
        ),
        (
            [
                "train",
                "segmenter",
                "--train",
                "s3://b/t",
                "--role",
                ROLE,
                "--instance-type",
                "ml.g5.xlarge",
                "--spot",
                "--max-wait",
                "600",
                "--max-run",
                "3600",
            ],
            "shorter than",
        ),
        (
            [
                "train",
                "segmenter",
                "--train",
                "s3://b/t",
                "--role",
                ROLE,
                "--instance-type",
                "ml.g5.xlarge",
                "--hyperparameters",
                "steps",
            ],
            "not key=value",
        ),
        (
            [
                "transform",
                "--model-data",
                "s3://b/m.tar.gz",
                "--input",
                "s3://b/i/",
                "--output",
                "s3://b/o/",
                "--instance-type",
                "ml.g5.xlarge",
                "--role",
                ROLE,
                "--max-payload-mb",
                "50",
                "--max-concurrent",
                "4",
            ],
            "at most 100 MB",
        ),
    ],
)
def test_bad_combinations_are_refused(argv: list[str], message: str, capsys) -> None:
    assert htr(["sagemaker", *argv, "--dry-run", "--region", "us-east-1"]) == EXIT_BAD_ARGS
    assert message in capsys.readouterr().err


def test_gpu_counts() -> None:
    assert training.distribution_for("ml.g5.xlarge", 1) is None
    assert training.distribution_for("ml.p4d.24xlarge", 1) == {"torch_distributed": {"enabled": True}}
    assert training.distribution_for("ml.g5.2xlarge", 2) == {"torch_distributed": {"enabled": True}}
    assert training.distribution_for("ml.m5.xlarge", 1) is None


# ---- the API's limits, security options, payload pre-check (issue #11 item 6) -------------------


def _train_log_lines(capsys) -> list[str]:
    """Log lines as jobs/train.py's own _log writes them (its %.4g formatting included)."""
    from jobs import train

    train._log(step=7000, test_cer=0.24469, test_wer=0.66871)
    train._log(step=50, train_loss=5.3e-05, lr=0.0012, sec_per_step=0.81234)
    train._log(step=500, test_precision=0.9, test_recall=0.92, test_f1=0.91)
    train._log(rank=1, weights="ab12cd34ef56")
    return capsys.readouterr().out.splitlines()


def test_metric_regexes_read_train_py_log_lines(capsys) -> None:
    lines = _train_log_lines(capsys)
    assert lines[0] == "step=7000 test_cer=0.2447 test_wer=0.6687"
    scraped = [_scrape(training.METRIC_DEFINITIONS, line) for line in lines]
    assert scraped[0] == pytest.approx({"test_cer": 0.2447, "test_wer": 0.6687})
    assert scraped[1] == pytest.approx({"train_loss": 5.3e-05, "lr": 0.0012, "sec_per_step": 0.8123})
    assert scraped[2] == pytest.approx({"test_precision": 0.9, "test_recall": 0.92, "test_f1": 0.91})
    assert scraped[3] == {}
    every = {d["Name"] for d in training.METRIC_DEFINITIONS}
    assert every == set().union(*scraped)  # each definition matches some real line


TRANSFORM = [
    "transform",
    "--model-data",
    "s3://b/m/model.tar.gz",
    "--input",
    "s3://b/in/",
    "--output",
    "s3://b/out/",
    "--instance-type",
    "ml.g5.xlarge",
    "--role",
    ROLE,
]
KMS = "arn:aws:kms:us-east-1:123456789012:key/0f3c6a4e-1b2c-4d5e-8f90-123456789abc"
NETWORK = [
    "--subnets",
    "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
    "--security-group-ids",
    "sg-0123456789abcdef0",
]


@pytest.mark.parametrize(
    "argv,message",
    [
        (TRANSFORM + ["--invocation-timeout", "7200"], "allows 1..3600"),
        (TRANSFORM[:-4] + ["--instance-type", "ml.t2.medium", "--role", ROLE], "not a transform instance"),
        (TRANSFORM + ["--max-payload-mb", "150", "--max-concurrent", "1"], "at most 100 MB"),
        (TRANSFORM + ["--output-kms-key", "my-key"], "not a KMS key"),
        (TRANSFORM + ["--subnets", "subnet-0123456789abcdef0"], "go together"),
        (
            TRANSFORM + ["--subnets", "subnet-1", "--security-group-ids", "sg-0123456789abcdef0"],
            "not a subnet",
        ),
        (TRANSFORM + ["--tags", "aws:team=x"], "reserved"),
        (TRANSFORM + ["--tags", *[f"k{i}=v" for i in range(51)]], "at most 50"),
        (
            [
                "train",
                "recogniser",
                "--train",
                "s3://b/t",
                "--role",
                ROLE,
                "--instance-type",
                "ml.g5.xlarge",
                "--init",
                "runs/rec",
            ],
            "--init",
        ),
        (
            ["train", "recogniser", "--train", "s3://b/t", "--role", ROLE, "--instance-type", "ml.t2.medium"],
            "not a training instance",
        ),
    ],
)
def test_api_limits_are_refused_before_anything_is_sent(argv: list[str], message: str, capsys) -> None:
    assert htr(["sagemaker", *argv, "--dry-run", "--region", "us-east-1"]) == EXIT_BAD_ARGS
    assert message in capsys.readouterr().err


def test_transform_security_options_reach_the_requests(capsys) -> None:
    code, printed = _run(
        capsys,
        *TRANSFORM,
        "--output-kms-key",
        KMS,
        "--volume-kms-key",
        "alias/htr",
        *NETWORK,
        "--tags",
        "team=archive",
        "cost-centre=42",
        "--model-server-workers",
        "2",
        "--dry-run",
        "--region",
        "us-east-1",
    )
    assert code == EXIT_OK
    job, model = printed["CreateTransformJob"], printed["CreateModel"]
    assert job["TransformOutput"]["KmsKeyId"] == KMS
    assert job["TransformResources"]["VolumeKmsKeyId"] == "alias/htr"
    assert job["Tags"] == [{"Key": "team", "Value": "archive"}, {"Key": "cost-centre", "Value": "42"}]
    assert model["VpcConfig"] == {
        "Subnets": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"],
        "SecurityGroupIds": ["sg-0123456789abcdef0"],
    }
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_MODEL_SERVER_WORKERS"] == "2"
    assert job["ModelClientConfig"]["InvocationsTimeoutInSeconds"] == 3600


def test_train_security_and_init_reach_the_request(capsys) -> None:
    base = [
        "train",
        "recogniser",
        "--train",
        "s3://b/train",
        "--role",
        ROLE,
        "--instance-type",
        "ml.g5.xlarge",
        "--output-path",
        "s3://b/models",
        "--code-location",
        "s3://b/code",
        "--dry-run",
        "--region",
        "us-east-1",
    ]
    code, printed = _run(
        capsys,
        *base,
        "--init",
        "s3://b/models/rec-job/output/model.tar.gz",
        "--output-kms-key",
        KMS,
        "--volume-kms-key",
        KMS,
        *NETWORK,
        "--tags",
        "team=archive",
    )
    assert code == EXIT_OK
    request = printed["CreateTrainingJob"]
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]
    }
    assert channels["init"] == "s3://b/models/rec-job/output/model.tar.gz"  # SM_CHANNEL_INIT
    assert request["OutputDataConfig"]["KmsKeyId"] == KMS
    assert request["ResourceConfig"]["VolumeKmsKeyId"] == KMS
    assert request["VpcConfig"]["SecurityGroupIds"] == ["sg-0123456789abcdef0"]
    assert request["Tags"] == [{"Key": "team", "Value": "archive"}]
    code, printed = _run(capsys, *base, "--init", "default")
    hp = _decode(printed["CreateTrainingJob"]["HyperParameters"])
    assert hp["init"] == "/opt/ml/code/models/default"  # shipped in the source_dir
    assert "init" not in {c["ChannelName"] for c in printed["CreateTrainingJob"]["InputDataConfig"]}


def test_source_dir_carries_the_default_models_only_when_asked(tmp_path) -> None:
    from batch.packaging import stage_code

    with_models = stage_code(tmp_path / "a", default_models=True)
    assert (with_models / "models" / "default" / "recogniser.safetensors").is_file()
    assert not (stage_code(tmp_path / "b") / "models" / "default").exists()


def test_payload_precheck_lists_objects_too_large(s3_endpoint: str, s3_bucket: str, capsys) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.put_object(Bucket=s3_bucket, Key="docs/small.pdf", Body=b"%PDF-1.4 small")
    s3.put_object(Bucket=s3_bucket, Key="docs/big scan.tiff", Body=b"\0" * (2 * 1024 * 1024 + 1))
    argv = [*_transform_args(s3_bucket), "--no-wait", "--job-name", f"precheck-{s3_bucket}"]
    argv[argv.index("--max-payload-mb") + 1] = "2"
    assert htr(["sagemaker", *argv]) == EXIT_BAD_ARGS
    err = capsys.readouterr().err
    too_large = err.split("Too large:", 1)[1]
    assert f"s3://{s3_bucket}/docs/big scan.tiff  2.0 MB" in too_large and "small" not in too_large
    assert f"htr run s3://{s3_bucket}/docs/ OUT --include 'big scan.tiff'" in err
    sm = _sagemaker(s3_endpoint)
    started = {j["TransformJobName"] for j in sm.list_transform_jobs()["TransformJobSummaries"]}
    assert f"precheck-{s3_bucket}" not in started  # nothing was started
    assert htr(["sagemaker", *argv, "--no-payload-check"]) == EXIT_OK


def test_collect_with_sse_and_query_in_utc(
    s3_endpoint: str, s3_bucket: str, tmp_path, capsys, monkeypatch
) -> None:
    """collect --sse encrypts what it writes; htr query shows processed_at in UTC (as Athena)
    whatever the machine's time zone."""
    import time

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    error = {"error": {"type": "CorruptDocument", "stage": "decode", "message": "bad"}, "doc_id": "d1"}
    s3.put_object(Bucket=s3_bucket, Key="t-out/a.pdf.out", Body=json.dumps(error).encode())
    out = f"s3://{s3_bucket}/collected/"
    assert (
        htr(["sagemaker", "collect", f"s3://{s3_bucket}/t-out/", out, "--sse", "AES256", "--run-id", "r1"])
        == 3
    )  # EXIT_PARTIAL: one error record
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="collected/")["Contents"]]
    assert any("/errors/" in k for k in keys)
    unencrypted = [
        k for k in keys if s3.head_object(Bucket=s3_bucket, Key=k).get("ServerSideEncryption") != "AES256"
    ]
    assert not unencrypted, (unencrypted, keys)  # every object collect wrote, ledger included
    local = tmp_path / "collected"
    assert htr(["sagemaker", "collect", f"s3://{s3_bucket}/t-out/", str(local), "--run-id", "r1"]) == 3
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        capsys.readouterr()
        assert (
            htr(
                [
                    "query",
                    str(local),
                    "SELECT current_setting('TimeZone') AS tz, strftime(processed_at, '%z') AS z FROM errors",
                ]
            )
            == 0
        )
        out_text = capsys.readouterr().out
    finally:
        monkeypatch.undo()
        time.tzset()
    assert "UTC" in out_text and "+00" in out_text and "-05" not in out_text
