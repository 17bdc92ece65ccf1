"""infra/: the rendered CloudFormation template, linted by cfn-lint and deployed on moto's server.

The stack is created through boto3 against moto's CloudFormation (a real HTTP server on
127.0.0.1, tests/s3_server.py), then buckets, roles, tables, alarms, the API and the
bulk-upload path are inspected through boto3. moto's stack engine lacks a few resource
types; tests/infra_moto.py fills them in over moto's own backends.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from batch import athena
from batch.core.schema import PARTITION_COLUMN, TABLES
from jobs import infra
from tests import infra_moto
from tests.s3_server import REGION

REPO = Path(__file__).resolve().parents[1]
STACK = "htr"
MAX_TEMPLATE_BODY = 51_200  # bytes `aws cloudformation deploy` sends inline (no --s3-bucket)


def load_template(text: str) -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml  # knows !Ref, !Sub, ... (long form in the result)

    return cfn_yaml.loads(text)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("infra") / "htr-batch.yaml"
    path.write_text(infra.render())
    return path


@pytest.fixture(scope="module")
def template(rendered: Path) -> dict[str, Any]:
    return load_template(rendered.read_text())


def resources_of(template: dict, kind: str) -> dict[str, dict]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


# ---- the template itself --------------------------------------------------------------------------


def test_render_fills_every_token_and_fits_an_inline_deploy(rendered: Path) -> None:
    text = rendered.read_text()
    code_lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    assert not [ln for ln in code_lines if "{{htr:" in ln]
    assert len(text.encode()) < MAX_TEMPLATE_BODY


BROKEN = """AWSTemplateFormatVersion: "2010-09-09"
Resources:
  Fn:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python2.1
      Handler: index.handler
      Role: arn:aws:iam::123456789012:role/x
      Code: {ZipFile: "def handler(e, c): pass"}
"""


def test_cfn_lint_passes_and_can_fail(rendered: Path, tmp_path: Path) -> None:
    """One cfn-lint run over the template and a small broken one: its finding proves cfn-lint looks."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    cfn_lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or "cfn-lint"
    proc = subprocess.run(
        [cfn_lint, "--format", "parseable", str(rendered), str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    findings = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert not [f for f in findings if f.startswith(str(rendered))], proc.stdout
    assert [f for f in findings if f.startswith(str(broken)) and "python2.1" in f], proc.stdout + proc.stderr


def test_unknown_token_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "t.yaml"
    source.write_text('Resources:\n  X:\n    Properties:\n      Code: "{{htr:nope}}"\n')
    with pytest.raises(infra.TemplateError, match="unknown token"):
        infra.render(source)


def test_lambda_code_is_the_repo_handler_without_docstrings() -> None:
    for name in ("api", "bulk"):
        code = infra.inline_code(name)
        assert len(code) <= infra.INLINE_CODE_LIMIT
        source = ast.parse((REPO / "infra" / "lambdas" / f"{name}.py").read_text())
        defined = {n.name for n in source.body if isinstance(n, ast.FunctionDef)}
        assert defined <= {n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)}
        assert '"""' not in code


def test_cli_prints_and_writes_the_template(htr_cmd, subprocess_env, tmp_path: Path) -> None:
    out = tmp_path / "stack.yaml"
    printed = subprocess.run(
        [*htr_cmd, "deploy-template"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    written = subprocess.run(
        [*htr_cmd, "deploy-template", "--out", str(out)],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert printed.returncode == 0 and written.returncode == 0, printed.stderr + written.stderr
    assert printed.stdout == out.read_text() == infra.render()


# ---- policies -------------------------------------------------------------------------------------


def _statements(template: dict) -> Iterator[tuple[str, dict]]:
    """(where, statement) for every policy document in the template."""
    for name, res in template["Resources"].items():
        props = res.get("Properties", {})
        docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
        docs += [props[k] for k in ("PolicyDocument", "KeyPolicy", "AssumeRolePolicyDocument") if k in props]
        for doc in docs:
            for st in doc["Statement"]:
                yield name, st


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def wildcard_grants(statements: Iterator[tuple[str, dict]]) -> list[str]:
    """Allow statements with a wildcard action, or any wildcard in an action on Resource "*"."""
    bad = []
    for where, st in statements:
        if st["Effect"] != "Allow":
            continue  # a Deny with wildcards only narrows (the TLS-only bucket policies)
        actions = [a for a in _as_list(st.get("Action", [])) if isinstance(a, str)]
        resources = _as_list(st.get("Resource", []))
        if any(a == "*" or a.endswith(":*") for a in actions):
            bad.append(f"{where}: {actions}")
        elif "*" in resources and any("*" in a for a in actions):
            bad.append(f"{where}: {actions} on *")
    return bad


def test_no_wildcard_actions_on_wildcard_resources(template: dict) -> None:
    assert wildcard_grants(_statements(template)) == []
    # and the check bites
    assert wildcard_grants(iter([("x", {"Effect": "Allow", "Action": "s3:*", "Resource": "*"})]))
    assert wildcard_grants(iter([("x", {"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"})]))


def test_every_resource_star_is_a_named_action_without_resource_form(template: dict) -> None:
    """Resource "*" only where AWS has no narrower form (or in a key policy: this key)."""
    allowed = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}
    for where, st in _statements(template):
        if st["Effect"] == "Allow" and "*" in _as_list(st.get("Resource", [])):
            if template["Resources"][where]["Type"] == "AWS::KMS::Key":
                continue
            assert set(_as_list(st["Action"])) <= allowed, (where, st["Action"])


def test_buckets_deny_plain_http(template: dict) -> None:
    policies = resources_of(template, "AWS::S3::BucketPolicy")
    assert {p["Properties"]["Bucket"]["Ref"] for p in policies.values()} == {"InputBucket", "OutputBucket"}
    for p in policies.values():
        st = p["Properties"]["PolicyDocument"]["Statement"][0]
        assert st["Effect"] == "Deny" and st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


# ---- Glue tables: the same definitions as `htr athena-ddl` ----------------------------------------


def _ddl_tables(out: str) -> dict[str, tuple[dict, dict, dict]]:
    """{table: (columns, partitions, tblproperties)} from `htr athena-ddl OUT`'s statements."""
    tables = {}
    for ddl in athena.all_ddl(out)[1:]:
        name = re.search(r"CREATE EXTERNAL TABLE IF NOT EXISTS `[^`]+`\.`([^`]+)`", ddl).group(1)
        columns, partitions = athena.parse_ddl_columns(ddl)
        props = dict(re.findall(r"'([^']*)'\s*=\s*'([^']*)'", ddl[ddl.index("TBLPROPERTIES") :]))
        tables[name] = (columns, partitions, props)
    return tables


def test_glue_tables_follow_the_athena_ddl(template: dict) -> None:
    tables = resources_of(template, "AWS::Glue::Table")
    assert len(tables) == len(TABLES) == 3
    expected = _ddl_tables("s3://BUCKET/htr/")
    for res in tables.values():
        ti = res["Properties"]["TableInput"]
        name = ti["Name"]["Fn::Sub"].replace("${TablePrefix}", "")
        columns, partitions, props = expected[name]
        assert {c["Name"]: c["Type"] for c in ti["StorageDescriptor"]["Columns"]} == columns
        assert list(columns) == [f.name for f in TABLES[name]]  # order too
        assert (
            {c["Name"]: c["Type"] for c in ti["PartitionKeys"]} == partitions == {PARTITION_COLUMN: "string"}
        )
        for key, value in props.items():
            got = ti["Parameters"][key]
            got = (
                got["Fn::Sub"].replace("${OutputBucket}", "BUCKET").replace("${!", "${")
                if isinstance(got, dict)
                else got
            )
            assert got == value, key


def test_glue_columns_drift_with_the_schema(monkeypatch) -> None:
    """A column added to the Parquet schema shows up in the template without a hand edit."""
    import pyarrow as pa

    monkeypatch.setitem(athena.TABLES, "errors", TABLES["errors"].append(pa.field("retry", pa.int32())))
    columns = infra.table_input("errors")["StorageDescriptor"]["Columns"]
    assert columns[-1] == {"Name": "retry", "Type": "int"}


# ---- metric filters read the real summary lines ---------------------------------------------------


def _match_space_delimited(pattern: str, line: str) -> dict[str, str] | None:
    """CloudWatch Logs' space-delimited filter: [name, name="literal", ...] over the words."""
    fields = re.findall(r'\.\.\.|\w+(?:="[^"]*")?', pattern.strip()[1:-1])
    words, values = line.split(), dict[str, str]()
    for i, f in enumerate(fields):
        if f == "...":
            return values
        if i >= len(words):
            return None
        name, _, literal = f.partition("=")
        if literal and words[i] != literal.strip('"'):
            return None
        values[name] = words[i]
    return values if len(words) == len(fields) else None


def _run_summary(errors: int) -> str:
    """RunStats.summary() of batch/worker.py, compiled alone: importing the worker loads torch."""
    tree = ast.parse((REPO / "batch" / "worker.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RunStats")
    namespace: dict[str, Any] = {"dataclass": dataclass, "field": field, "time": time}
    exec(compile(ast.Module([cls], []), "batch/worker.py", "exec"), namespace)
    return namespace["RunStats"](documents=7, pages=9, words=80, errors=errors).summary("s3://o/htr/")


def _collect_summary(tmp_path: Path, capsys) -> str:
    from jobs.sagemaker_launch import _collect_main

    (tmp_path / "transform").mkdir()
    _collect_main(
        _parses_as_htr(
            [
                "htr",
                "sagemaker",
                "collect",
                str(tmp_path / "transform"),
                str(tmp_path / "out"),
                "--run-id",
                "r1",
            ]
        )
    )
    return capsys.readouterr().out.strip()


def test_metric_filters_read_the_run_and_collect_summaries(template: dict, tmp_path, capsys) -> None:
    filters = {k: r["Properties"] for k, r in resources_of(template, "AWS::Logs::MetricFilter").items()}
    run = _match_space_delimited(filters["RunErrorsMetricFilter"]["FilterPattern"], _run_summary(2))
    assert run and run["errors"] == "2"
    assert (
        _match_space_delimited(
            filters["RunErrorsMetricFilter"]["FilterPattern"], _run_summary(0) + " [shard 1/2]"
        )["errors"]
        == "0"
    )
    collect_line = _collect_summary(tmp_path, capsys)
    for name, field_name in (
        ("CollectErrorsMetricFilter", "errors"),
        ("CollectMissingMetricFilter", "missing"),
    ):
        got = _match_space_delimited(filters[name]["FilterPattern"], collect_line)
        assert got and got[field_name] == "0", collect_line
        value = filters[name]["MetricTransformations"][0]["MetricValue"]
        assert value == f"${field_name}"


# ---- the API: IAM auth, throttled, no CORS --------------------------------------------------------


def test_api_is_iam_authenticated_throttled_and_without_cors(template: dict) -> None:
    methods = resources_of(template, "AWS::ApiGateway::Method")
    assert [m["Properties"]["HttpMethod"] for m in methods.values()] == ["POST"]  # no OPTIONS
    assert all(m["Properties"]["AuthorizationType"] == "AWS_IAM" for m in methods.values())
    assert "Access-Control" not in json.dumps(template)
    stage = next(iter(resources_of(template, "AWS::ApiGateway::Stage").values()))["Properties"]
    setting = stage["MethodSettings"][0]
    assert setting["ThrottlingRateLimit"] == {"Ref": "ApiRateLimit"}
    assert setting["ThrottlingBurstLimit"] == {"Ref": "ApiBurstLimit"}
    env = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert env["MAX_DOCUMENT_MB"] == {"Ref": "MaxDocumentMB"}


# ---- deployed on moto's CloudFormation ------------------------------------------------------------


@dataclass
class Stack:
    endpoint: str
    outputs: dict[str, str]
    resources: dict[str, dict]  # logical id -> stack resource summary

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION)

    def physical(self, logical_id: str) -> str:
        return self.resources[logical_id]["PhysicalResourceId"]


@pytest.fixture(scope="module")
def stack(s3_endpoint: str, rendered: Path) -> Iterator[Stack]:
    undo = infra_moto.install()
    try:
        ec2 = boto3.client("ec2", endpoint_url=s3_endpoint, region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        sg = ec2.create_security_group(GroupName="htr-tasks", Description="htr", VpcId=vpc)["GroupId"]
        cf = boto3.client("cloudformation", endpoint_url=s3_endpoint, region_name=REGION)
        params = {
            "ImageRepository": "htr-batch",
            "ModelDataUrl": "s3://models-bucket/htr/model.tar.gz",
            "SubnetIds": subnet,
            "SecurityGroupIds": sg,
        }
        cf.create_stack(
            StackName=STACK,
            TemplateBody=rendered.read_text(),
            Capabilities=["CAPABILITY_IAM"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        )
        described = cf.describe_stacks(StackName=STACK)["Stacks"][0]
        assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
        summaries = cf.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
        yield Stack(
            s3_endpoint,
            {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]},
            {r["LogicalResourceId"]: r for r in summaries if r["LogicalResourceId"]},
        )
    finally:
        undo()


def test_every_resource_is_created(stack: Stack, template: dict) -> None:
    missing = {
        k: r["Type"]
        for k, r in template["Resources"].items()
        if k not in stack.resources
        and r["Type"] not in infra_moto.MOTO_SKIPS
        and r.get("Condition") != "HasAlarmEmail"
    }
    assert missing == {}
    assert set(stack.outputs) == set(template["Outputs"])


def test_buckets_are_encrypted_private_and_expire_scratch(stack: Stack) -> None:
    s3 = stack.client("s3")
    key_arn = stack.outputs["KmsKeyArn"]
    buckets = {
        "input": stack.outputs["InputBucketName"],
        "output": stack.outputs["OutputUri"][5:].split("/")[0],
    }
    for bucket in buckets.values():
        rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"] == {
            "SSEAlgorithm": "aws:kms",
            "KMSMasterKeyID": key_arn,
        }
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert block == dict.fromkeys(
            ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
        )
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert f"arn:aws:s3:::{bucket}/*" in policy["Statement"][0]["Resource"]
    assert s3.get_bucket_versioning(Bucket=buckets["input"])["Status"] == "Enabled"
    assert s3.get_bucket_versioning(Bucket=buckets["output"]).get("Status") is None
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=buckets["output"])["Rules"]}
    assert rules["transform-scratch"]["Filter"] == {"Prefix": "scratch/"}
    assert rules["transform-scratch"]["Expiration"] == {"Days": 14}
    inputs = s3.get_bucket_lifecycle_configuration(Bucket=buckets["input"])["Rules"]
    assert inputs[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 90


def test_roles_are_least_privilege(stack: Stack) -> None:
    iam = stack.client("iam")
    roles = {
        k: stack.physical(k) for k, r in stack.resources.items() if r["ResourceType"] == "AWS::IAM::Role"
    }
    assert set(roles) == {
        "TaskExecutionRole",
        "TaskRole",
        "NightlyEventsRole",
        "SageMakerRole",
        "BulkStateMachineRole",
        "BulkFunctionRole",
        "ApiFunctionRole",
    }
    statements = []
    for logical, name in roles.items():
        for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            doc = iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
            if isinstance(doc, str):  # moto keeps a stack-made role's policy as a Python repr
                doc = ast.literal_eval(doc)
            statements += [(logical, st) for st in doc["Statement"]]
    assert statements and wildcard_grants(iter(statements)) == []
    out_bucket = stack.outputs["OutputUri"][5:].split("/")[0]
    in_bucket = stack.outputs["InputBucketName"]
    # the nightly task reads the input and writes only the output tables
    task_writes = [
        r
        for logical, st in statements
        if logical == "TaskRole" and "s3:PutObject" in _as_list(st["Action"])
        for r in _as_list(st["Resource"])
    ]
    assert task_writes == [f"arn:aws:s3:::{out_bucket}/htr/*"]
    assert not [
        st
        for logical, st in statements
        if in_bucket in json.dumps(st.get("Resource"))
        and {"s3:PutObject", "s3:DeleteObject"} & set(_as_list(st["Action"]))
    ]
    # the API may only invoke its endpoint
    api = [
        st
        for logical, st in statements
        if logical == "ApiFunctionRole" and "sagemaker:InvokeEndpoint" in _as_list(st["Action"])
    ]
    assert [st["Resource"] for st in api] == [stack.physical("Endpoint")]


def test_glue_tables_are_created_with_partition_projection(stack: Stack) -> None:
    glue = stack.client("glue")
    database = stack.outputs["GlueDatabase"]
    tables = {t["Name"]: t for t in glue.get_tables(DatabaseName=database)["TableList"]}
    out = stack.outputs["OutputUri"]
    expected = _ddl_tables(out)
    assert set(tables) == set(expected) == set(TABLES)
    for name, table in tables.items():
        columns, partitions, props = expected[name]
        assert {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]} == columns
        assert {c["Name"]: c["Type"] for c in table["PartitionKeys"]} == partitions
        assert table["StorageDescriptor"]["Location"] == f"{out}{name}/"
        assert {k: table["Parameters"][k] for k in props} == props


def test_athena_workgroup_encrypts_results(stack: Stack) -> None:
    wg = stack.client("athena").get_work_group(WorkGroup=stack.outputs["AthenaWorkGroup"])["WorkGroup"]
    result = wg["Configuration"]["ResultConfiguration"]
    assert result["OutputLocation"] == stack.outputs["OutputUri"].replace("/htr/", "/athena-results/")
    assert result["EncryptionConfiguration"] == {
        "EncryptionOption": "SSE_KMS",
        "KmsKey": stack.outputs["KmsKeyArn"],
    }
    assert wg["Configuration"]["EnforceWorkGroupConfiguration"] is True


def test_nightly_schedule_runs_htr_run_on_fargate(stack: Stack) -> None:
    events, ecs = stack.client("events"), stack.client("ecs")
    rule = events.describe_rule(Name=stack.physical("NightlyRule"))
    assert rule["ScheduleExpression"] == "cron(0 2 * * ? *)"
    target = events.list_targets_by_rule(Rule=stack.physical("NightlyRule"))["Targets"][0]
    assert target["EcsParameters"]["LaunchType"] == "FARGATE"
    task = ecs.describe_task_definition(taskDefinition=target["EcsParameters"]["TaskDefinitionArn"])
    command = task["taskDefinition"]["containerDefinitions"][0]["command"]
    assert command == [
        "htr",
        "run",
        f"s3://{stack.outputs['InputBucketName']}/scans/",
        stack.outputs["OutputUri"],
        "--sse",
        "aws:kms",
        "--sse-kms-key-id",
        stack.outputs["KmsKeyArn"],
    ]
    logs = task["taskDefinition"]["containerDefinitions"][0]["logConfiguration"]["options"]
    assert logs["awslogs-group"] == f"/htr/{STACK}/tasks"


def _parses_as_htr(command: list[str]) -> argparse.Namespace:
    """htr's own parser; not for `run`, whose module imports torch (seconds)."""
    from batch.cli import build_parser

    assert command[0] == "htr"
    return build_parser(command[1:]).parse_args(command[1:])


def test_alarms_watch_failed_runs_error_documents_bulk_and_api(stack: Stack) -> None:
    alarms = stack.client("cloudwatch").describe_alarms()["MetricAlarms"]
    ours = {
        (a["Namespace"], a["MetricName"]): a
        for a in alarms
        if a["AlarmActions"] == [stack.physical("AlarmTopic")]
    }
    assert {
        ("AWS/Events", "TriggeredRules"),
        ("AWS/Events", "FailedInvocations"),
        (f"htr-batch/{STACK}", "DocumentErrors"),
        ("AWS/States", "ExecutionsFailed"),
        ("AWS/ApiGateway", "5XXError"),
    } <= set(ours)
    failed = ours[("AWS/Events", "TriggeredRules")]
    assert failed["Dimensions"] == [{"Name": "RuleName", "Value": stack.physical("TaskFailedRule")}]
    pattern = json.loads(
        stack.client("events").describe_rule(Name=stack.physical("TaskFailedRule"))["EventPattern"]
    )
    assert pattern["detail"]["containers"]["exitCode"] == [{"anything-but": [0, 3]}]
    filters = stack.client("logs").describe_metric_filters(logGroupName=f"/htr/{STACK}/tasks")[
        "metricFilters"
    ]
    assert len(filters) == 3
    topic_policy = json.loads(
        stack.client("sns").get_topic_attributes(TopicArn=stack.physical("AlarmTopic"))["Attributes"][
            "Policy"
        ]
    )
    assert topic_policy["Statement"][0]["Principal"]["Service"] == [
        "events.amazonaws.com",
        "cloudwatch.amazonaws.com",
    ]


def test_api_gateway_posts_documents_to_the_lambda(stack: Stack) -> None:
    apigw = stack.client("apigateway")
    api_id = stack.physical("Api")
    resources = {r["path"]: r for r in apigw.get_resources(restApiId=api_id)["items"]}
    assert set(resources["/documents"].get("resourceMethods", {})) == {"POST"}
    method = apigw.get_method(restApiId=api_id, resourceId=resources["/documents"]["id"], httpMethod="POST")
    assert method["authorizationType"] == "AWS_IAM"
    assert method["methodIntegration"]["type"] == "AWS_PROXY"
    assert stack.physical("ApiFunction") in method["methodIntegration"]["uri"]


# ---- bulk uploads: marker -> manifest of exactly the new objects -> state machine -------------------


def _bulk_handler():
    import importlib.util

    spec = importlib.util.spec_from_file_location("htr_bulk_lambda", REPO / "infra" / "lambdas" / "bulk.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


@pytest.fixture
def without_bucket_policies(stack: Stack) -> Iterator[None]:
    """moto ignores the TLS-only policies' aws:SecureTransport condition and denies every
    request to the buckets (it only evaluates Principal "*" statements, unconditionally);
    lift them while a test writes objects, put them back after."""
    s3 = stack.client("s3")
    buckets = [stack.outputs["InputBucketName"], stack.outputs["OutputUri"][5:].split("/")[0]]
    policies = {b: s3.get_bucket_policy(Bucket=b)["Policy"] for b in buckets}
    for b in buckets:
        s3.delete_bucket_policy(Bucket=b)
    yield
    for b, policy in policies.items():
        s3.put_bucket_policy(Bucket=b, Policy=policy)


BATCH_KEYS = ["letters/1.pdf", "letters/2.jpg", "p 3.png"]


def _bulk_upload(stack: Stack, monkeypatch, attempt: str = "1") -> tuple[dict, dict]:
    """Upload a batch and its marker (again: a new attempt), run the bulk Lambda's handler with
    the deployed function's settings; returns (the marker's event, the handler's answer)."""
    s3, sfn = stack.client("s3"), stack.client("stepfunctions")
    config = stack.client("lambda").get_function_configuration(FunctionName=stack.physical("BulkFunction"))
    for name, value in config["Environment"]["Variables"].items():
        monkeypatch.setenv(name, value)
    bucket = stack.outputs["InputBucketName"]
    s3.put_object(Bucket=bucket, Key="bulk/older/a.png", Body=b"x")  # an earlier batch
    s3.put_object(Bucket=bucket, Key="scans/nightly.png", Body=b"x")  # the nightly path
    for key in BATCH_KEYS:
        s3.put_object(Bucket=bucket, Key=f"bulk/2026-11-29/{key}", Body=b"%PDF-1.7")
    marker = s3.put_object(Bucket=bucket, Key="bulk/2026-11-29.ready", Body=b"")
    event = {
        "detail": {
            "bucket": {"name": bucket},
            "object": {
                "key": "bulk/2026-11-29.ready",
                "version-id": marker["VersionId"],
                "sequencer": attempt,
            },
        }
    }
    return event, _bulk_handler()(event, None, s3=s3, sfn=sfn)


def _execution_input(stack: Stack, started: dict) -> dict:
    execution = stack.client("stepfunctions").describe_execution(executionArn=started["execution"])
    assert execution["stateMachineArn"] == stack.outputs["BulkStateMachineArn"]
    return json.loads(execution["input"])


def test_bulk_marker_starts_one_transform_over_exactly_the_new_objects(
    stack: Stack, monkeypatch, without_bucket_policies
) -> None:
    s3, sfn = stack.client("s3"), stack.client("stepfunctions")
    event, first = _bulk_upload(stack, monkeypatch, "0A1")
    again = _bulk_handler()(event, None, s3=s3, sfn=sfn)  # EventBridge delivered it twice
    _, rerun = _bulk_upload(stack, monkeypatch, "0A2")  # the uploader asks again on purpose

    assert first["started"] and first["documents"] == 3 and not again["started"]
    assert rerun["started"] and rerun["execution"] != first["execution"]
    bucket = stack.outputs["InputBucketName"]
    manifest_bucket, manifest_key = first["manifest"][5:].split("/", 1)
    manifest = json.loads(s3.get_object(Bucket=manifest_bucket, Key=manifest_key)["Body"].read())
    assert manifest == [{"prefix": f"s3://{bucket}/bulk/2026-11-29/"}, *sorted(BATCH_KEYS)]
    job = _execution_input(stack, first)
    collect = _parses_as_htr(job["collect_command"])
    assert (collect.transform_output, collect.out, collect.input) == (
        job["transform_output"],
        stack.outputs["OutputUri"],
        f"s3://{bucket}/bulk/2026-11-29/",
    )
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", job["job_name"])


def _transform_outputs(s3, job: dict, keys: list[str]) -> None:
    """What Batch Transform leaves for a manifest: <output path>/<key relative to the
    manifest's prefix>.out, one JSON document record each (here: no pages)."""
    from batch.core.ids import doc_id_for
    from batch.core.schema import DocumentRecord, now_ms

    bucket, prefix = job["transform_output"][5:].split("/", 1)
    for key in keys:
        record = DocumentRecord(doc_id_for(key.encode()), "", [], "seg-x+rec-y", job["job_name"], now_ms())
        s3.put_object(Bucket=bucket, Key=f"{prefix}{key}.out", Body=record.dumps().encode())


def test_collect_command_turns_the_transform_output_into_the_tables(
    stack: Stack, monkeypatch, without_bucket_policies, fresh_storage, capsys
) -> None:
    """The state machine's last step, `htr sagemaker collect` as the Lambda wrote it, run for
    real over what the transform would leave: every new object is one document, none missing."""
    from jobs.sagemaker_launch import _collect_main

    _, started = _bulk_upload(stack, monkeypatch, "0B1")
    job, keys = _execution_input(stack, started), BATCH_KEYS
    s3 = stack.client("s3")
    _transform_outputs(s3, job, keys)
    code = _collect_main(_parses_as_htr(job["collect_command"]))
    assert code == 0, capsys.readouterr()
    assert "collected 3 documents, 0 error records, 0 inputs without output" in capsys.readouterr().out
    out_bucket, out_prefix = stack.outputs["OutputUri"][5:].split("/", 1)
    written = s3.list_objects_v2(Bucket=out_bucket, Prefix=f"{out_prefix}documents/")["Contents"]
    sources = {
        json.loads(s3.get_object(Bucket=out_bucket, Key=o["Key"])["Body"].read())["source_uri"]
        for o in written
    }
    bulk = f"s3://{stack.outputs['InputBucketName']}/bulk/2026-11-29/"
    assert {bulk + k for k in keys} <= sources


def test_bulk_handler_ignores_other_keys(stack: Stack, monkeypatch) -> None:
    monkeypatch.setenv("MAX_PAYLOAD_MB", "20")
    handler = _bulk_handler()
    for key in ("bulk/a/b.ready", "scans/x.ready", "bulk/.ready"):
        event = {"detail": {"bucket": {"name": "b"}, "object": {"key": key}}}
        assert handler(event, None, s3=object(), sfn=object())["started"] is False


def test_state_machine_transforms_the_manifest_with_the_launcher_settings(stack: Stack) -> None:
    definition = json.loads(
        stack.client("stepfunctions").describe_state_machine(
            stateMachineArn=stack.outputs["BulkStateMachineArn"]
        )["definition"]
    )
    transform = definition["States"]["Transform"]["Parameters"]
    spec = infra.default_transform_spec()
    assert transform["Environment"] == infra.transform_module().transform_env(spec)
    assert (transform["MaxPayloadInMB"], transform["MaxConcurrentTransforms"]) == (
        spec.max_payload_mb,
        spec.max_concurrent,
    )
    assert transform["TransformInput"]["DataSource"]["S3DataSource"]["S3DataType"] == "ManifestFile"
    assert transform["TransformOutput"]["KmsKeyId"] == stack.outputs["KmsKeyArn"]
    collect = definition["States"]["Collect"]["Parameters"]
    assert collect["Overrides"]["ContainerOverrides"][0]["Command.$"] == "$.collect_command"
    assert definition["States"]["Collected"]["Default"] == "CollectFailed"
