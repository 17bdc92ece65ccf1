"""`htr sagemaker deploy` / `invoke` against moto's SageMaker, Application Auto Scaling and
SageMaker Runtime on 127.0.0.1, and as dry runs (the exact requests, nothing sent)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import boto3
import pytest

from batch.cli import main as htr
from batch.core.errors import EXIT_BAD_ARGS, EXIT_OK, EXIT_PARTIAL
from jobs.sagemaker.deploy import SCALABLE_DIMENSION, resource_id

ROLE = "arn:aws:iam::123456789012:role/htr-sagemaker"


def _deploy_args(bucket: str, name: str, *extra: str) -> list[str]:
    # ml.g4dn: moto's CreateEndpointConfig knows an older list of instance types than the API
    return [
        "sagemaker",
        "deploy",
        "--model-data",
        f"s3://{bucket}/m/model.tar.gz",
        "--endpoint-name",
        name,
        "--instance-type",
        "ml.g4dn.xlarge",
        "--instance-count",
        "2",
        "--model-server-workers",
        "2",
        "--role",
        ROLE,
        "--tags",
        "team=archive",
        *extra,
    ]


def _client(endpoint: str, service: str):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def test_deploy_with_autoscaling_on_moto(s3_endpoint: str, s3_bucket: str, capsys) -> None:
    argv = _deploy_args(
        s3_bucket,
        "htr-live",
        "--autoscale-min",
        "1",
        "--autoscale-max",
        "4",
        "--autoscale-target",
        "30",
        "--volume-kms-key",
        "alias/htr-volumes",
    )
    assert htr(argv) == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    sm = _client(s3_endpoint, "sagemaker")
    endpoint = sm.describe_endpoint(EndpointName="htr-live")
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    (variant,) = config["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.g4dn.xlarge", 2)
    assert printed["CreateEndpointConfig"]["KmsKeyId"] == "alias/htr-volumes"
    model = sm.describe_model(ModelName=variant["ModelName"])
    env = model["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_MODEL_SERVER_WORKERS"] == "2" and env["SAGEMAKER_PROGRAM"] == "inference.py"
    assert "SAGEMAKER_BATCH" not in env  # real time: bad documents answer 400, not 200
    assert printed["CreateEndpoint"]["Tags"] == [{"Key": "team", "Value": "archive"}]

    scaling = _client(s3_endpoint, "application-autoscaling")
    (target,) = scaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[resource_id("htr-live")]
    )["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    assert target["ScalableDimension"] == SCALABLE_DIMENSION
    (policy,) = scaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=resource_id("htr-live")
    )["ScalingPolicies"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 30.0
    assert (
        tracking["PredefinedMetricSpecification"]["PredefinedMetricType"]
        == "SageMakerVariantInvocationsPerInstance"
    )


def test_deploy_dry_run_sends_nothing(monkeypatch, capsys) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # anything sent would fail
    assert (
        htr(_deploy_args("b", "htr-dry", "--autoscale-max", "3", "--dry-run", "--region", "us-east-1"))
        == EXIT_OK
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["CreateEndpoint"]["EndpointName"] == "htr-dry"
    assert printed["RegisterScalableTarget"]["MaxCapacity"] == 3
    assert printed["RegisterScalableTarget"]["MinCapacity"] == 2  # the initial count
    assert printed["PutScalingPolicy"]["PolicyType"] == "TargetTrackingScaling"
    variant = printed["CreateEndpointConfig"]["ProductionVariants"][0]
    assert variant["InitialInstanceCount"] == 2


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--autoscale-min", "3", "--autoscale-max", "2"], "--autoscale-min"),
        (["--autoscale-min", "1", "--autoscale-max", "1"], "outside --autoscale-min/--autoscale-max"),
        (["--autoscale-min", "1"], "needs --autoscale-max"),
        (["--tags", "aws:owner=me"], "reserved"),
        (["--model-server-workers", "0"], "at least 1"),
    ],
)
def test_deploy_refuses(extra: list[str], message: str, capsys) -> None:
    assert htr(_deploy_args("b", "x", *extra, "--dry-run", "--region", "us-east-1")) == EXIT_BAD_ARGS
    assert message in capsys.readouterr().err


def _pdf(path: Path, note: str = "a") -> Path:
    """PDF-typed ASCII bytes: the type is sniffed from them, and moto's InvokeEndpoint decodes
    request bodies as UTF-8 (it never runs a model, so the rest of the file does not matter)."""
    path.write_bytes(f"%PDF-1.4\n% {note}\n%%EOF\n".encode())
    return path


def _queue_answers(endpoint: str, bodies: list[dict]) -> None:
    """moto's own API: what its InvokeEndpoint answers next (the model is not run there)."""
    results = [{"Body": json.dumps(b), "ContentType": "application/json"} for b in bodies]
    request = urllib.request.Request(
        f"{endpoint}/moto-api/static/sagemaker/endpoint-results",
        data=json.dumps({"results": results}).encode(),
        method="POST",
    )
    urllib.request.urlopen(request).read()


def test_invoke_on_moto(s3_endpoint: str, tmp_path: Path, capsys) -> None:
    record = {"doc_id": "abc", "page_count": 1, "pages": []}
    error = {"error": {"type": "CorruptDocument", "stage": "decode", "message": "bad"}}
    _queue_answers(s3_endpoint, [record, error])
    assert htr(["sagemaker", "invoke", "htr-live", str(_pdf(tmp_path / "a.pdf"))]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == record
    other = _pdf(tmp_path / "b.pdf", "b")  # another request: the next answer
    assert htr(["sagemaker", "invoke", "htr-live", str(other)]) == EXIT_PARTIAL
    assert json.loads(capsys.readouterr().out) == error


def test_invoke_dry_run_sniffs_the_type(tmp_path: Path, capsys) -> None:
    page = _pdf(tmp_path / "page.bin")
    assert (
        htr(["sagemaker", "invoke", "htr-live", str(page), "--dry-run", "--region", "us-east-1"]) == EXIT_OK
    )
    request = json.loads(capsys.readouterr().out)["InvokeEndpoint"]
    assert request["ContentType"] == "application/pdf" and request["EndpointName"] == "htr-live"
    assert request["Body"] == f"<{page.stat().st_size} bytes>"
