"""The SageMaker API's own limits, checked before anything is sent.

Instance types and numeric ranges come from botocore's model of the SageMaker API (the same
file the service's request validation is generated from), so they follow the installed
botocore rather than a hand-kept list: an `ml.t2.medium` transform or a 7200 s invocation
timeout is refused here, not an hour later by CreateTransformJob.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jobs.sagemaker.session import LaunchError

MAX_TRANSFORM_MB = 100  # MaxPayloadInMB, and MaxPayloadInMB * MaxConcurrentTransforms
# Instance-type enums of the API, per kind of job.
INSTANCE_SHAPES = {
    "training": "TrainingInstanceType",
    "transform": "TransformInstanceType",
    "endpoint": "ProductionVariantInstanceType",
    "processing": "ProcessingInstanceType",
}
_KMS_KEY = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|mrk-[0-9a-f]{32}|alias/[A-Za-z0-9/_-]{1,250}"
    r"|arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(?:key|alias)/[A-Za-z0-9/_-]+)$"
)
_SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")
_TAG_TEXT = re.compile(r"^[\w\s.:/=+\-@]*$", re.UNICODE)


@lru_cache(maxsize=1)
def _api():
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


def api_range(shape: str) -> tuple[int | None, int | None]:
    meta = _api().shape_for(shape).metadata
    return meta.get("min"), meta.get("max")


def api_bounds(shape: str) -> tuple[int, int]:
    """api_range with an absent bound as no bound (0 below, unlimited above)."""
    low, high = api_range(shape)
    return (0 if low is None else low), (sys.maxsize if high is None else high)


def instance_types(kind: str) -> list[str]:
    return list(_api().shape_for(INSTANCE_SHAPES[kind]).enum)


def check_instance_type(kind: str, instance_type: str) -> None:
    allowed = instance_types(kind)
    if instance_type not in allowed:
        near = (
            [t for t in allowed if t.split(".")[1] == instance_type.split(".")[1:2][0]]
            if instance_type.count(".") >= 2
            else []
        )
        hint = f" (this family has: {', '.join(near[:8])})" if near else ""
        raise LaunchError(f"--instance-type {instance_type}: not a {kind} instance type{hint}")


def check_range(flag: str, value: int, shape: str) -> None:
    low, high = api_range(shape)
    if (low is not None and value < low) or (high is not None and value > high):
        raise LaunchError(f"{flag} {value}: SageMaker allows {low}..{high}")


def check_transform_payload(max_payload_mb: int, max_concurrent: int) -> None:
    if max_payload_mb < 1 or max_concurrent < 1:
        raise LaunchError("--max-payload-mb and --max-concurrent must be at least 1")
    if max_payload_mb > MAX_TRANSFORM_MB:
        raise LaunchError(
            f"--max-payload-mb {max_payload_mb}: SageMaker allows at most {MAX_TRANSFORM_MB} MB"
        )
    if max_payload_mb * max_concurrent > MAX_TRANSFORM_MB:
        raise LaunchError(
            f"--max-payload-mb x --max-concurrent = {max_payload_mb * max_concurrent}"
            f" MB; SageMaker allows at most {MAX_TRANSFORM_MB} MB"
        )


@dataclass
class Oversized:
    uri: str
    size: int


def oversized_objects(input_uri: str, max_payload_mb: int) -> list[Oversized]:
    """Input objects a transform could never send (each is one request of at most MaxPayloadInMB)."""
    from batch import storage

    limit = max_payload_mb * 1024 * 1024
    return [Oversized(o.uri, o.size) for o in storage.list_objects(input_uri) if o.size > limit]


def payload_report(too_big: list[Oversized], max_payload_mb: int, input_uri: str) -> str:
    lines = [
        f"{len(too_big)} input object(s) are over --max-payload-mb {max_payload_mb}: a transform "
        "would fail on them. Run them with `htr run` (no payload limit), e.g.",
        f"  htr run {input_uri} OUT "
        + " ".join(f"--include '{o.uri[len(input_uri.rstrip('/')) + 1 :]}'" for o in too_big[:5]),
        "or raise --max-payload-mb (and lower --max-concurrent). Too large:",
    ]
    lines += [f"  {o.uri}  {o.size / 1024 / 1024:.1f} MB" for o in too_big[:50]]
    if len(too_big) > 50:
        lines.append(f"  ... and {len(too_big) - 50} more")
    return "\n".join(lines)


# ---- security and bookkeeping options shared by every launcher -----------------------------------


@dataclass
class Security:
    """KMS keys, VPC and tags, passed the same way to training, transform, processing, endpoints."""

    output_kms_key: str | None = None
    volume_kms_key: str | None = None
    subnets: list[str] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    def check(self) -> Security:
        for flag, key in (
            ("--output-kms-key", self.output_kms_key),
            ("--volume-kms-key", self.volume_kms_key),
        ):
            if key and not _KMS_KEY.match(key):
                raise LaunchError(f"{flag} {key!r}: not a KMS key id, key ARN, alias or alias ARN")
        check_vpc(self.subnets, self.security_group_ids)
        check_tags(self.tags)
        return self

    @property
    def vpc_config(self) -> dict[str, list[str]] | None:
        if not self.subnets:
            return None
        return {"Subnets": list(self.subnets), "SecurityGroupIds": list(self.security_group_ids)}

    @property
    def tag_list(self) -> list[dict[str, str]] | None:
        return [{"Key": k, "Value": v} for k, v in self.tags.items()] or None


def check_vpc(subnets: list[str], groups: list[str]) -> None:
    if bool(subnets) != bool(groups):
        raise LaunchError("--subnets and --security-group-ids go together (a VPC config needs both)")
    if not subnets:
        return
    low, high = api_bounds("Subnets")
    if not low <= len(subnets) <= high:
        raise LaunchError(f"--subnets: {len(subnets)} given; SageMaker takes {low}..{high}")
    low, high = api_bounds("VpcSecurityGroupIds")
    if not low <= len(groups) <= high:
        raise LaunchError(f"--security-group-ids: {len(groups)} given; SageMaker takes {low}..{high}")
    bad = [s for s in subnets if not _SUBNET.match(s)] + [g for g in groups if not _SECURITY_GROUP.match(g)]
    if bad:
        raise LaunchError(f"not a subnet-… / sg-… id: {', '.join(bad)}")


def check_tags(tags: dict[str, str]) -> None:
    _, most = api_bounds("TagList")
    if len(tags) > most:
        raise LaunchError(f"--tags: {len(tags)} given; SageMaker takes at most {most}")
    key_low, key_high = api_bounds("TagKey")
    _, value_high = api_bounds("TagValue")
    for key, value in tags.items():
        if not key_low <= len(key) <= key_high or not _TAG_TEXT.match(key):
            raise LaunchError(f"--tags: bad key {key!r} (1..{key_high} letters, digits, spaces, _.:/=+-@)")
        if key.lower().startswith("aws:"):
            raise LaunchError(f"--tags: {key!r}: the aws: prefix is reserved")
        if len(value) > value_high or not _TAG_TEXT.match(value):
            raise LaunchError(f"--tags: bad value for {key!r} (at most {value_high} characters)")


def key_values(items: Iterable[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LaunchError(f"{what} {item!r} is not key=value")
        out[key.lstrip("-")] = value
    return out


def add_security_arguments(p, output_kms: bool = True) -> None:
    """output_kms: the command writes S3 output of its own (an endpoint does not)."""
    g = p.add_argument_group("security and tags")
    if output_kms:
        g.add_argument("--output-kms-key", default=None, help="KMS key for the job's S3 output")
    g.add_argument("--volume-kms-key", default=None, help="KMS key for the instances' volumes")
    g.add_argument("--subnets", default="", help="comma-separated subnet ids: run inside a VPC")
    g.add_argument("--security-group-ids", default="", help="comma-separated sg- ids (with --subnets)")
    g.add_argument("--tags", nargs="*", default=[], metavar="KEY=VALUE")


def security_from_args(args: Any) -> Security:
    split = lambda text: [x for x in (text or "").split(",") if x]  # noqa: E731
    return Security(
        output_kms_key=getattr(args, "output_kms_key", None),
        volume_kms_key=getattr(args, "volume_kms_key", None),
        subnets=split(args.subnets),
        security_group_ids=split(args.security_group_ids),
        tags=key_values(args.tags, "tag"),
    ).check()
