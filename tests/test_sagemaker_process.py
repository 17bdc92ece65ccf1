"""`htr sagemaker process` (the nightly `htr run` as a Processing job on N instances) and
`htr run --shard auto`, which takes each instance's shard from the job's host list.

The launch runs the real SDK against moto's SageMaker + S3 server (moto keeps no
ProcessingResources: those are checked on the printed request); the sharding runs two real
`htr run --shard auto` processes at once, each with its own fake /opt/ml/config/resourceconfig.json
(HTR_RESOURCE_CONFIG points at it), into one moto bucket.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import pytest

from batch.cli import main as htr
from batch.core.errors import EXIT_BAD_ARGS, EXIT_OK, EXIT_PARTIAL
from batch.ledger import Shard
from batch.worker import _shard_arg, shard_from_resource_config
from jobs.sagemaker.process import BOOTSTRAP, CODE_DIR
from tests.s3_server import s3_client
from tests.worker_helpers import DOCS, assert_exactly_once, child_env, htr_inprocess, summary, upload

ROLE = "arn:aws:iam::123456789012:role/htr-sagemaker"
HOSTS = ["algo-1", "algo-2"]


def _resource_config(path: Path, host: str, hosts: list[str] = HOSTS) -> Path:
    """What SageMaker writes on each instance of a job (the fields --shard auto reads)."""
    path.write_text(json.dumps({"current_host": host, "hosts": hosts, "network_interface_name": "eth0"}))
    return path


def test_shard_auto_reads_the_host_list(tmp_path: Path, monkeypatch) -> None:
    config = _resource_config(tmp_path / "rc.json", "algo-3", ["algo-1", "algo-2", "algo-3"])
    assert shard_from_resource_config(str(config)) == Shard(2, 3)
    assert shard_from_resource_config(str(tmp_path / "none.json")) == Shard()  # not on SageMaker
    monkeypatch.setenv("HTR_RESOURCE_CONFIG", str(config))
    assert _shard_arg("auto") == Shard(2, 3) and _shard_arg("1/4") == Shard(1, 4)
    _resource_config(config, "algo-9")
    with pytest.raises(argparse.ArgumentTypeError):
        _shard_arg("auto")


def _run_shards(inp: str, out: str, models: Path, configs: list[Path]) -> list[dict[str, int]]:
    """The job's instances: one `htr run --shard auto` each, all at once."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batch.cli",
                "run",
                inp,
                out,
                "--shard",
                "auto",
                "--models",
                str(models),
                "--no-progress",
                "--decode-workers",
                "1",
            ],
            env=child_env(HTR_RESOURCE_CONFIG=str(c), OMP_NUM_THREADS="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in configs
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode in (EXIT_OK, EXIT_PARTIAL), stderr[-3000:]
        results.append(summary(stdout, stderr))
    return results


def test_two_auto_shards_write_every_document_once(
    s3_endpoint: str, s3_bucket: str, one_word_models: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    # The split hashes the full URI, bucket name included (random per test): pick a prefix that
    # gives both shards work, so "both took part" is checked on every run, not by luck.
    prefix = next(
        p
        for p in (f"in{i}/" for i in range(64))
        if all(any(Shard(k, 2).owns(f"s3://{s3_bucket}/{p}{key}") for key in DOCS) for k in range(2))
    )
    upload(s3_endpoint, s3_bucket, prefix, DOCS)
    inp, out = f"s3://{s3_bucket}/{prefix}", f"s3://{s3_bucket}/out/"
    owned = [sum(Shard(k, 2).owns(inp + key) for key in DOCS) for k in range(2)]
    configs = [_resource_config(tmp_path / f"{h}.json", h) for h in HOSTS]
    first = _run_shards(inp, out, one_word_models, configs)
    assert [s["documents"] for s in first] == owned  # each its own, none twice
    assert sum(owned) == len(DOCS) and all(owned)
    assert sum(s["errors"] for s in first) == 1
    sources = {inp + key: data for key, data in DOCS.items()}
    assert_exactly_once(out, sources, bad={inp + "zz-bad.pdf"})
    again = []  # the next night
    for config in configs:  # in this process: the same command, without two more start-ups
        monkeypatch.setenv("HTR_RESOURCE_CONFIG", str(config))
        again.append(
            htr_inprocess(
                capsys, "run", inp, out, "--shard", "auto", "--models", one_word_models, "--no-progress"
            )[1]
        )
    assert sum(s["skipped"] for s in again) == len(DOCS) - 1  # the bad one is retried
    assert sum(s["documents"] for s in again) == 1
    assert_exactly_once(out, sources, bad={inp + "zz-bad.pdf"})


def _process_args(bucket: str, *extra: str) -> list[str]:
    return [
        "process",
        "--input",
        f"s3://{bucket}/in/",
        "--output",
        f"s3://{bucket}/out/",
        "--instance-type",
        "ml.m5.2xlarge",
        "--instance-count",
        "3",
        "--role",
        ROLE,
        "--htr-args",
        "--reprocess-on-model-change --sse AES256",
        "--tags",
        "team=archive",
        *extra,
    ]


def test_process_job_on_moto(s3_endpoint: str, s3_bucket: str, capsys) -> None:
    assert htr(["sagemaker", *_process_args(s3_bucket), "--no-wait"]) == EXIT_OK
    request = json.loads(capsys.readouterr().out)["CreateProcessingJob"]
    sm = boto3.client("sagemaker", endpoint_url=s3_endpoint, region_name="us-east-1")
    job = sm.describe_processing_job(ProcessingJobName=request["ProcessingJobName"])
    cluster = request["ProcessingResources"]["ClusterConfig"]  # moto does not keep it
    assert (cluster["InstanceCount"], cluster["InstanceType"]) == (3, "ml.m5.2xlarge")
    app = job["AppSpecification"]
    assert app["ImageUri"].endswith("/pytorch-training:2.6.0-cpu-py312")
    assert app["ContainerEntrypoint"] == ["bash", "-c", BOOTSTRAP, "htr-run"]
    assert app["ContainerArguments"] == [
        f"s3://{s3_bucket}/in/",
        f"s3://{s3_bucket}/out/",
        "--shard",
        "auto",
        "--no-progress",
        "--reprocess-on-model-change",
        "--sse",
        "AES256",
    ]
    (code,) = job["ProcessingInputs"]
    assert code["S3Input"]["LocalPath"] == CODE_DIR
    assert request["Tags"] == [{"Key": "team", "Value": "archive"}]
    key = code["S3Input"]["S3Uri"].split(f"s3://{s3_bucket}/", 1)[1]
    body = s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = set(tar.getnames())
        requirements = tar.extractfile("requirements.txt").read().decode()
    assert {"batch/worker.py", "batch/cli.py", "requirements.txt"} <= names
    assert "pypdfium2==" in requirements  # PDFs in an image without poppler


def test_process_dry_run_with_our_image(capsys) -> None:
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/htr-batch:1"
    code = htr(
        [
            "sagemaker",
            *_process_args("b"),
            "--image-uri",
            image,
            "--subnets",
            "subnet-0123456789abcdef0",
            "--security-group-ids",
            "sg-0123456789abcdef0",
            "--volume-kms-key",
            "alias/htr",
            "--dry-run",
            "--region",
            "eu-west-1",
        ]
    )
    assert code == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    request = printed["CreateProcessingJob"]
    assert request["AppSpecification"]["ContainerEntrypoint"] == ["htr", "run"]
    assert "ProcessingInputs" not in request or not request["ProcessingInputs"]
    assert request["NetworkConfig"]["VpcConfig"] == {
        "Subnets": ["subnet-0123456789abcdef0"],
        "SecurityGroupIds": ["sg-0123456789abcdef0"],
    }
    assert request["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == "alias/htr"
    assert printed["uploads"] == []


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--htr-args", "--shard 0/2"], "leave out --shard"),
        (["--instance-count", "101"], "1..100"),
        (["--instance-type", "ml.g5.xlarge.huge"], "not a processing instance type"),
    ],
)
def test_process_refuses(extra: list[str], message: str, capsys) -> None:
    argv = _process_args("b") + extra
    assert htr(["sagemaker", *argv, "--dry-run", "--region", "us-east-1"]) == EXIT_BAD_ARGS
    assert message in capsys.readouterr().err
