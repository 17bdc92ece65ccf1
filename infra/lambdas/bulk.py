"""A bulk upload is finished: transform exactly its objects, then collect.

Uploaders put many documents under `bulk/<batch>/` in the input bucket, then an empty
`bulk/<batch>.ready` beside the folder (not in it: collect would count it as a document).
That marker's EventBridge event calls this function, which lists
the batch folder, writes a SageMaker manifest of exactly those keys and starts the state
machine (Batch Transform over the manifest, then `htr sagemaker collect` as a Processing job). Each upload of
the marker is one attempt (its version id); the manifest is written with If-None-Match, so
a repeated delivery of the same event never starts a second transform, while putting the
marker again deliberately runs the batch again.
Inlined into the stack by `htr deploy-template`: standard library and boto3 only.
"""
import hashlib
import json
import os
import re

import boto3
from botocore.exceptions import ClientError

MARKER = ".ready"
COLLECT = "-collect"  # the collect job's name: the transform job's and this
BATCH_NAME = re.compile(r"^[A-Za-z0-9._-]{1,80}$")


def _job_name(batch: str, attempt: str) -> str:
    """SageMaker job names: [a-zA-Z0-9-], at most 63 with COLLECT added, unique per attempt."""
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", batch).strip("-")[:32] or "batch"
    return f"htr-bulk-{slug}-{hashlib.sha256(f'{batch}/{attempt}'.encode()).hexdigest()[:10]}"


def new_objects(s3, bucket: str, prefix: str, max_bytes: int) -> tuple[list[str], list[str]]:
    """(keys relative to prefix that fit a transform request, keys too large for one)."""
    fits, too_large = [], []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):]
            if rel and not rel.endswith("/"):
                (fits if obj["Size"] <= max_bytes else too_large).append(rel)
    return sorted(fits), sorted(too_large)


def handler(event: dict, context, s3=None, sfn=None) -> dict:
    s3, sfn = s3 or boto3.client("s3"), sfn or boto3.client("stepfunctions")
    bucket, marker = event["detail"]["bucket"]["name"], event["detail"]["object"]
    key = marker["key"]
    attempt = str(marker.get("version-id") or marker.get("sequencer") or marker.get("etag") or "1")
    root = os.environ.get("BULK_PREFIX", "bulk/")
    batch = key[len(root):-len(MARKER)] if key.startswith(root) and key.endswith(MARKER) else ""
    if not BATCH_NAME.match(batch):
        return {"started": False, "reason": f"{key!r} is not {root}<letters, digits . _ ->{MARKER}"}
    prefix = f"{root}{batch}/"
    max_bytes = int(os.environ["MAX_PAYLOAD_MB"]) * 1024 * 1024
    keys, too_large = new_objects(s3, bucket, prefix, max_bytes)
    if not keys:
        return {"started": False, "reason": f"nothing to transform under {prefix}", "too_large": too_large}
    scratch, out = os.environ["SCRATCH_URI"].rstrip("/"), os.environ["OUTPUT_URI"]
    job = _job_name(batch, attempt)
    manifest_uri = f"{scratch}/manifests/{batch}/{job}.manifest"
    manifest = json.dumps([{"prefix": f"s3://{bucket}/{prefix}"}, *keys])
    scratch_bucket, scratch_key = manifest_uri[5:].split("/", 1)
    try:  # put-if-absent: the first event for a batch wins, repeats stop here
        s3.put_object(Bucket=scratch_bucket, Key=scratch_key, Body=manifest.encode(), IfNoneMatch="*")
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return {"started": False, "reason": f"{manifest_uri} exists: this attempt has started"}
        raise
    transform_out = f"{scratch}/transform-out/{batch}/{job}/"
    execution = sfn.start_execution(stateMachineArn=os.environ["STATE_MACHINE_ARN"], name=job, input=json.dumps({
        "job_name": job, "collect_job_name": job + COLLECT, "manifest_uri": manifest_uri,
        "transform_output": transform_out,
        "collect_command": ["htr", "sagemaker", "collect", transform_out, out,
                            "--input", f"s3://{bucket}/{prefix}", "--run-id", job]}))
    return {"started": True, "execution": execution["executionArn"], "documents": len(keys),
            "too_large": too_large, "manifest": manifest_uri}
