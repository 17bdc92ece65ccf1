"""CloudFormation coverage that moto 5.2.5's stack engine lacks, over moto's own backends.

moto's CloudFormation creates buckets (encryption and tags only), roles, keys, functions,
SageMaker, Step Functions and API Gateway resources, but skips AWS::S3::BucketPolicy,
AWS::SNS::TopicPolicy, AWS::Glue::*, AWS::Athena::WorkGroup, AWS::CloudWatch::Alarm,
AWS::Logs::MetricFilter, AWS::ApiGateway::Stage and AWS::Scheduler::*, and ignores a
bucket's versioning, public access block and lifecycle, a role's ManagedPolicyArns and a log
group's KmsKeyId (moto's create_log_group reads the API's kmsKeyId only), and
names an unnamed managed policy after its logical id alone (CloudFormation adds the stack's
name and a random suffix, so two stacks of one template can coexist; here too).
Each adapter below takes
the resolved template properties (moto has already substituted Ref/Sub/GetAtt) and calls the
same backend method moto's own HTTP API calls, so the test inspects the result through boto3
exactly as for natively supported types. Nothing here decides what a resource looks like:
that comes from the template. Types still skipped by moto are listed in MOTO_SKIPS.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from moto.apigateway.models import apigateway_backends
from moto.athena.models import athena_backends
from moto.cloudformation import parsing
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.common_models import CloudFormationModel
from moto.glue.models import glue_backends
from moto.iam.models import ManagedPolicy, Role, iam_backends
from moto.logs.models import LogGroup, logs_backends
from moto.s3.models import FakeBucket, s3_backends
from moto.scheduler.models import scheduler_backends
from moto.sns.models import sns_backends

# Resource types of the template that stay placeholders in moto (checked statically instead).
MOTO_SKIPS: set[str] = set()


def _flag(value: Any) -> str:
    return "true" if value in (True, "true", "True") else "false"


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's LifecycleConfiguration.Rules[] -> the S3 API's shape."""
    api: dict[str, Any] = {
        "ID": rule.get("Id"),
        "Status": rule["Status"],
        "Filter": {"Prefix": rule.get("Prefix", "")},
    }
    if "ExpirationInDays" in rule:
        api["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "NoncurrentVersionExpiration" in rule:
        api["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        }
    if "AbortIncompleteMultipartUpload" in rule:
        api["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        }
    return api


def _bucket_extras(bucket_name: str, props: dict[str, Any], account_id: str) -> None:
    s3 = s3_backends[account_id]["aws"]
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(bucket_name, props["VersioningConfiguration"]["Status"])
    if "PublicAccessBlockConfiguration" in props:
        pab = {k: _flag(v) for k, v in props["PublicAccessBlockConfiguration"].items()}
        s3.put_public_access_block(bucket_name, pab)
    if "LifecycleConfiguration" in props:
        rules = [_lifecycle_rule(r) for r in props["LifecycleConfiguration"]["Rules"]]
        s3.put_bucket_lifecycle(bucket_name, rules)


class _Created:
    """Mixin of the adapters: a physical id for Ref, nothing else to keep. (moto finds models
    as direct subclasses of CloudFormationModel, so each adapter names it itself.)"""

    NAME_PROPERTY = ""  # the property CloudFormation names it by; unset: stack-logical-random

    def __init__(self, physical_id: str, attributes: dict[str, str] | None = None):
        self.physical_resource_id = physical_id
        self._attributes = attributes or {}

    @classmethod
    def cloudformation_name_type(cls) -> str:
        return cls.NAME_PROPERTY

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return False

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return self._attributes[attribute_name]

    @classmethod
    def update_from_cloudformation_json(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("stack updates are not tested")

    @classmethod
    def delete_from_cloudformation_json(cls, *args: Any, **kwargs: Any) -> None:
        pass


class BucketPolicy(_Created, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::S3::BucketPolicy"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    ):
        props = cloudformation_json["Properties"]
        policy = json.dumps(props["PolicyDocument"]).encode()
        s3_backends[account_id]["aws"].put_bucket_policy(props["Bucket"], policy)
        return cls(props["Bucket"])


class TopicPolicy(_Created, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SNS::TopicPolicy"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    ):
        props = cloudformation_json["Properties"]
        policy = json.dumps(props["PolicyDocument"])
        for topic in props["Topics"]:
            sns_backends[account_id][region_name].set_topic_attribute(topic, "policy", policy)
        return cls(resource_name)


class GlueDatabase(_Created, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Glue::Database"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    ):
        db_input = cloudformation_json["Properties"]["DatabaseInput"]
        glue_backends[account_id][region_name].create_database(db_input["Name"], db_input)
        return cls(db_input["Name"])


class GlueTable(_Created, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Glue::Table"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    ):
        props = cloudformation_json["Properties"]
        table_input = props["TableInput"]
        glue_backends[account_id][region_name].create_table(
            props["DatabaseName"], table_input["Name"], table_input
        )
        return cls(table_input["Name"])


class AthenaWorkGroup(_Created, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Athena::WorkGroup"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    ):
        props = cloudformation_json["Properties"]
        athena_backends[account_id][region_name].create_work_group(
            props["Name"],
            props.get("WorkGroupConfiguration", {}),
            props.get("Description", ""),
            props.get("Tags", []),
        )
        return cls(props["Name"])


class Alarm(_Created, CloudFormationModel):
    NAME_PROPERTY = "AlarmName"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::Alarm"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    ):
        p = cloudformation_json["Properties"]
        name = p.get("AlarmName", resource_name)
        cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=name,
            namespace=p["Namespace"],
            metric_name=p["MetricName"],
            comparison_operator=p["ComparisonOperator"],
            evaluation_periods=int(p["EvaluationPeriods"]),
            period=int(p["Period"]),
            threshold=float(p["Threshold"]),
            statistic=p["Statistic"],
            description=p.get("AlarmDescription", ""),
            dimensions=p.get("Dimensions", []),
            alarm_actions=p.get("AlarmActions", []),
            treat_missing_data=p.get("TreatMissingData"),
        )
        return cls(name)


class MetricFilter(_Created, CloudFormationModel):
    NAME_PROPERTY = "FilterName"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Logs::MetricFilter"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    ):
        p = cloudformation_json["Properties"]
        transformations = [
            {
                "metricName": t["MetricName"],
                "metricNamespace": t["MetricNamespace"],
                "metricValue": t["MetricValue"],
            }
            for t in p["MetricTransformations"]
        ]
        logs_backends[account_id][region_name].put_metric_filter(
            resource_name, p["FilterPattern"], p["LogGroupName"], transformations
        )
        return cls(resource_name)


class ApiStage(_Created, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::ApiGateway::Stage"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    ):
        p = cloudformation_json["Properties"]
        apigw = apigateway_backends[account_id][region_name]
        apigw.create_stage(p["RestApiId"], p["StageName"], p["DeploymentId"])
        operations = []
        for s in p.get("MethodSettings", []):
            where = f"/{s['ResourcePath'].lstrip('/') or '~1'}/{s['HttpMethod']}"
            for key, path in (
                ("ThrottlingRateLimit", "throttling/rateLimit"),
                ("ThrottlingBurstLimit", "throttling/burstLimit"),
                ("MetricsEnabled", "metrics/enabled"),
            ):
                if key in s:
                    operations.append({"op": "replace", "path": f"{where}/{path}", "value": str(s[key])})
        apigw.update_stage(p["RestApiId"], p["StageName"], operations)
        return cls(p["StageName"])


class ScheduleGroup(_Created, CloudFormationModel):
    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Scheduler::ScheduleGroup"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    ):
        name = cloudformation_json["Properties"]["Name"]
        group = scheduler_backends[account_id][region_name].create_schedule_group(name, [])
        return cls(name, {"Arn": group.arn})


class Schedule(_Created, CloudFormationModel):
    NAME_PROPERTY = "Name"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Scheduler::Schedule"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
    ):
        p = cloudformation_json["Properties"]
        name = p.get("Name", resource_name)
        schedule = scheduler_backends[account_id][region_name].create_schedule(
            description=p.get("Description", ""),
            end_date=p.get("EndDate"),
            flexible_time_window=p["FlexibleTimeWindow"],
            group_name=p.get("GroupName"),
            kms_key_arn=p.get("KmsKeyArn"),
            name=name,
            schedule_expression=p["ScheduleExpression"],
            schedule_expression_timezone=p.get("ScheduleExpressionTimezone"),
            start_date=p.get("StartDate"),
            state=p.get("State", "ENABLED"),
            target=p["Target"],
            action_after_completion=None,
        )
        return cls(name, {"Arn": schedule.arn})


def install() -> Callable[[], None]:
    """Register the adapters with moto's stack engine; returns the undo for the patches of
    buckets (versioning, public access block, lifecycle) and roles (managed policies)."""
    original_bucket = FakeBucket.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    original_role = Role.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    original_policy = ManagedPolicy.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    original_log_group = LogGroup.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_bucket(cls, resource_name, cloudformation_json, account_id, region_name, **kw):
        bucket = original_bucket(cls, resource_name, cloudformation_json, account_id, region_name, **kw)
        _bucket_extras(resource_name, cloudformation_json.get("Properties", {}), account_id)
        return bucket

    def create_role(cls, resource_name, cloudformation_json, account_id, region_name, **kw):
        role = original_role(cls, resource_name, cloudformation_json, account_id, region_name, **kw)
        iam = iam_backends[account_id]["aws"]
        for arn in cloudformation_json["Properties"].get("ManagedPolicyArns", []):
            iam.attach_role_policy(arn, role.name)
        return role

    def create_policy(cls, resource_name, cloudformation_json, account_id, region_name, **kw):
        props = cloudformation_json.setdefault("Properties", {})
        props.setdefault("ManagedPolicyName", f"{resource_name}-{uuid.uuid4().hex[:12]}")
        return original_policy(cls, resource_name, cloudformation_json, account_id, region_name, **kw)

    def create_log_group(cls, resource_name, cloudformation_json, account_id, region_name, **kw):
        props = cloudformation_json["Properties"]
        if "KmsKeyId" in props:
            props = {**props, "kmsKeyId": props["KmsKeyId"]}
        cloudformation_json = {**cloudformation_json, "Properties": props}
        return original_log_group(cls, resource_name, cloudformation_json, account_id, region_name, **kw)

    FakeBucket.create_from_cloudformation_json = classmethod(create_bucket)  # type: ignore[method-assign,assignment]
    Role.create_from_cloudformation_json = classmethod(create_role)  # type: ignore[method-assign,assignment]
    ManagedPolicy.create_from_cloudformation_json = classmethod(create_policy)  # type: ignore[method-assign,assignment]
    LogGroup.create_from_cloudformation_json = classmethod(create_log_group)  # type: ignore[method-assign,assignment]
    for cached in (parsing.get_model_list, parsing.get_model_map, parsing.get_name_type_map):
        cached.cache_clear()  # the adapters are CloudFormationModel subclasses: list them

    def undo() -> None:
        FakeBucket.create_from_cloudformation_json = classmethod(original_bucket)  # type: ignore[method-assign,assignment]
        Role.create_from_cloudformation_json = classmethod(original_role)  # type: ignore[method-assign,assignment]
        ManagedPolicy.create_from_cloudformation_json = classmethod(original_policy)  # type: ignore[method-assign,assignment]
        LogGroup.create_from_cloudformation_json = classmethod(original_log_group)  # type: ignore[method-assign,assignment]

    return undo
