"""`htr sagemaker deploy` / `invoke`: a real-time endpoint for the packaged model.

deploy creates the model, the endpoint config and the endpoint (SDK `Model.deploy`), and with
`--autoscale-max` registers the endpoint's variant with Application Auto Scaling: a target-
tracking policy on invocations per instance. invoke sends one document and prints the answer
(the document's JSON record, or its JSON error body).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.sagemaker.serving import ModelSpec, build_model, model_env
from jobs.sagemaker.session import LaunchError
from jobs.sagemaker.validation import Security, check_instance_type

VARIANT = "AllTraffic"  # the SDK's one production variant
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


@dataclass
class Autoscaling:
    min_instances: int
    max_instances: int
    invocations_per_instance: float = 10.0  # per minute: the target the policy keeps
    scale_in_cooldown_s: int = 300
    scale_out_cooldown_s: int = 60

    def check(self, initial: int) -> None:
        if not 1 <= self.min_instances <= self.max_instances:
            raise LaunchError("--autoscale-min must be at least 1 and at most --autoscale-max")
        if not self.min_instances <= initial <= self.max_instances:
            raise LaunchError(f"--instance-count {initial} is outside --autoscale-min/--autoscale-max")
        if self.invocations_per_instance <= 0:
            raise LaunchError("--autoscale-target must be positive")


@dataclass
class DeploySpec:
    model_data: str
    role: str
    instance_type: str
    endpoint_name: str | None = None
    instance_count: int = 1
    image_uri: str | None = None
    model_name: str | None = None
    server_workers: int | None = None
    autoscaling: Autoscaling | None = None
    security: Security = field(default_factory=Security)
    wait: bool = True

    def model(self) -> ModelSpec:
        return ModelSpec(
            self.model_data, self.role, self.image_uri, self.model_name, self.server_workers, self.security
        )


def resource_id(endpoint: str) -> str:
    return f"endpoint/{endpoint}/variant/{VARIANT}"


def check_deploy(spec: DeploySpec) -> None:
    check_instance_type("endpoint", spec.instance_type)
    if spec.instance_count < 1:
        raise LaunchError("--instance-count must be at least 1")
    if spec.autoscaling:
        spec.autoscaling.check(spec.instance_count)
    model_env(spec.model())


def deploy(spec: DeploySpec, session) -> str:
    """Model, endpoint config, endpoint (+ autoscaling); returns the endpoint's name."""
    from sagemaker.utils import name_from_base

    check_deploy(spec)
    name = spec.endpoint_name or name_from_base("htr-endpoint")
    model = build_model(spec.model(), session)
    model.deploy(
        initial_instance_count=spec.instance_count,
        instance_type=spec.instance_type,
        endpoint_name=name,
        tags=spec.security.tag_list,
        kms_key=spec.security.volume_kms_key,
        wait=False,
    )
    if spec.autoscaling:  # only a variant that exists can be registered: the endpoint InService
        wait_in_service(session.boto_session, name)
        register_autoscaling(session.boto_session, name, spec.autoscaling)
    return name


def wait_in_service(boto_session, endpoint: str) -> None:
    """botocore's waiter: asks first, then every 30 s (the SDK's own wait sleeps first)."""
    waiter = boto_session.client("sagemaker").get_waiter("endpoint_in_service")
    waiter.wait(EndpointName=endpoint, WaiterConfig={"Delay": 30, "MaxAttempts": 120})


def register_autoscaling(boto_session, endpoint: str, scaling: Autoscaling) -> None:
    client = boto_session.client("application-autoscaling")
    target = dict(
        ServiceNamespace="sagemaker", ResourceId=resource_id(endpoint), ScalableDimension=SCALABLE_DIMENSION
    )
    client.register_scalable_target(
        **target, MinCapacity=scaling.min_instances, MaxCapacity=scaling.max_instances
    )
    client.put_scaling_policy(
        **target,
        PolicyName=f"{endpoint}-invocations",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(scaling.invocations_per_instance),
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
            "ScaleInCooldown": scaling.scale_in_cooldown_s,
            "ScaleOutCooldown": scaling.scale_out_cooldown_s,
        },
    )


def content_type_of(data: bytes, declared: str) -> str:
    """`auto`: the type sniffed from the bytes, as `htr run` would read them."""
    if declared != "auto":
        return declared
    from batch.core.errors import InputError
    from transforms.rasterise import sniff

    try:
        return sniff(data[:1024])
    except InputError as e:
        raise LaunchError(f"cannot tell the document's type: {e}; pass --content-type") from e


def invoke(
    boto_session, endpoint: str, document: Path, content_type: str = "auto"
) -> tuple[dict[str, Any], bytes]:
    """One document to the endpoint; returns (response metadata, body bytes)."""
    data = document.read_bytes()
    client = boto_session.client("sagemaker-runtime")
    answer = client.invoke_endpoint(
        EndpointName=endpoint,
        Body=data,
        Accept="application/json",
        ContentType=content_type_of(data, content_type),
    )
    body = answer["Body"].read()
    return {k: v for k, v in answer.items() if k not in ("Body", "ResponseMetadata")}, body
