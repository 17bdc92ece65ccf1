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
from typing import Any, cast

import boto3
import pytest

from batch import athena
from batch.core.schema import PARTITION_COLUMN, TABLES
from jobs import infra
from tests import infra_moto
from tests.s3_server import REGION

REPO = Path(__file__).resolve().parents[1]
STACK = "htr"
ACCOUNT = "123456789012"  # moto's
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


def create_stack(endpoint: str, rendered: Path, name: str, **params: str) -> Stack:
    """The rendered template deployed on moto's CloudFormation (infra_moto installed)."""
    cf = boto3.client("cloudformation", endpoint_url=endpoint, region_name=REGION)
    params = {"ImageRepository": "htr-batch", "ModelDataUrl": "s3://models-bucket/htr/model.tar.gz", **params}
    cf.create_stack(
        StackName=name,
        TemplateBody=rendered.read_text(),
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
    )
    described = cf.describe_stacks(StackName=name)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
    summaries = cf.list_stack_resources(StackName=name)["StackResourceSummaries"]
    return Stack(
        endpoint,
        {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]},
        {r["LogicalResourceId"]: r for r in summaries if r["LogicalResourceId"]},
    )


@pytest.fixture(scope="module")
def moto_stacks() -> Iterator[None]:
    undo = infra_moto.install()
    yield
    undo()


@pytest.fixture(scope="module")
def stack(s3_endpoint: str, rendered: Path, moto_stacks) -> Stack:
    """Defaults: a key in the stack, /aws/sagemaker/ProcessingJobs created by it."""
    return create_stack(s3_endpoint, rendered, STACK)


@pytest.fixture(scope="module")
def byok_stack(s3_endpoint: str, rendered: Path, stack: Stack) -> tuple[Stack, str]:
    """A second stack in the same account: the team's own key, the Processing log group
    already there (the first stack made it), its own Glue database, schedule and prefix."""
    kms = boto3.client("kms", endpoint_url=s3_endpoint, region_name=REGION)
    key = kms.create_key(Description="the team's key")["KeyMetadata"]["Arn"]
    params = {
        "KmsKeyArn": key,
        "CreateProcessingLogGroup": "false",
        "DatabaseName": "htr_byok",
        "NightlySchedule": "cron(30 23 ? * MON-FRI *)",
        "NightlyInputPrefix": "archive/2026/",
        "NightlyInstanceCount": "4",
    }
    return create_stack(s3_endpoint, rendered, "htr-byok", **params), key


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
        "ProcessingRole",
        "CollectRole",
        "NightlyScheduleRole",
        "SageMakerRole",
        "BulkStateMachineRole",
        "BulkFunctionRole",
        "ApiFunctionRole",
    }
    statements, attached = [], {}
    for logical, name in roles.items():
        for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            doc = iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
            if isinstance(doc, str):  # moto keeps a stack-made role's policy as a Python repr
                doc = ast.literal_eval(doc)
            statements += [(logical, st) for st in doc["Statement"]]
        for policy in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
            version = iam.get_policy(PolicyArn=policy["PolicyArn"])["Policy"]["DefaultVersionId"]
            doc = iam.get_policy_version(PolicyArn=policy["PolicyArn"], VersionId=version)
            attached[logical] = policy["PolicyArn"]
            statements += [(logical, st) for st in doc["PolicyVersion"]["Document"]["Statement"]]
    assert statements and wildcard_grants(iter(statements)) == []
    # the jobs' image, logs and key come from one managed policy, and only they have it
    assert attached == dict.fromkeys(("ProcessingRole", "CollectRole"), stack.physical("JobBasicsPolicy"))
    out_bucket = stack.outputs["OutputUri"][5:].split("/")[0]
    in_bucket = stack.outputs["InputBucketName"]

    def writes(role: str) -> list[str]:
        return [
            r
            for logical, st in statements
            if logical == role and "s3:PutObject" in _as_list(st["Action"])
            for r in _as_list(st["Resource"])
        ]

    # the nightly job reads the nightly prefix and writes only the output tables; so does collect
    assert writes("ProcessingRole") == writes("CollectRole") == [f"arn:aws:s3:::{out_bucket}/htr/*"]
    reads = [
        r
        for logical, st in statements
        if logical == "ProcessingRole" and "s3:GetObject" in _as_list(st["Action"])
        for r in _as_list(st["Resource"])
    ]
    assert sorted(reads) == [f"arn:aws:s3:::{in_bucket}/scans/*", f"arn:aws:s3:::{out_bucket}/htr/*"]
    # the schedule can start nightly jobs only, with the nightly role only
    schedule = [st for logical, st in statements if logical == "NightlyScheduleRole"]
    assert {a for st in schedule for a in _as_list(st["Action"])} == {
        "sagemaker:CreateProcessingJob",
        "iam:PassRole",
    }
    processing_role = iam.get_role(RoleName=stack.physical("ProcessingRole"))["Role"]["Arn"]
    assert [st["Resource"] for st in schedule if st["Action"] == "iam:PassRole"] == [processing_role]
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


def _nightly_request(stack: Stack) -> tuple[dict, dict]:
    """(the schedule, the CreateProcessingJob request it sends, context attributes filled)."""
    schedule = stack.client("scheduler").get_schedule(
        Name=stack.physical("NightlyRun"), GroupName=stack.physical("NightlyScheduleGroup")
    )
    text = schedule["Target"]["Input"].replace("<aws.scheduler.execution-id>", "d32c5kddcf5bb8c3")
    return schedule, json.loads(text)


def _processing_input_shape():
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return model.operation_model("CreateProcessingJob").input_shape


def test_nightly_schedule_starts_the_processing_job(stack: Stack) -> None:
    """EventBridge Scheduler calls CreateProcessingJob (a universal target) with a request
    that botocore's model of the API accepts, naming this stack's buckets, key and role."""
    from botocore.validate import ParamValidator

    schedule, request = _nightly_request(stack)
    assert schedule["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert schedule["State"] == "ENABLED"
    assert schedule["Target"]["Arn"] == "arn:aws:scheduler:::aws-sdk:sagemaker:createProcessingJob"
    assert schedule["Target"]["RoleArn"].endswith("/" + stack.physical("NightlyScheduleRole"))
    report = ParamValidator().validate(request, _processing_input_shape())
    assert not report.has_errors(), report.generate_report()
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", request["ProcessingJobName"])
    app = request["AppSpecification"]
    assert app["ContainerEntrypoint"] == infra.JOB_ENTRYPOINT
    key = stack.outputs["KmsKeyArn"]
    assert app["ContainerArguments"][:4] == [
        "htr",
        "run",
        f"s3://{stack.outputs['InputBucketName']}/scans/",
        stack.outputs["OutputUri"],
    ]
    assert app["ContainerArguments"][4:] == [
        "--shard",
        "auto",
        "--no-progress",
        "--sse",
        "aws:kms",
        "--sse-kms-key-id",
        key,
    ]
    assert request["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == key


def test_nightly_request_is_what_htr_sagemaker_process_sends(stack: Stack, capsys) -> None:
    """The same job as `htr sagemaker process --image-uri IMAGE` for the stack's buckets, role,
    key and instances (its dry run prints the request), but for the name and the entry point,
    which wraps the same command."""
    from batch.cli import main as htr

    _, request = _nightly_request(stack)
    app, cluster = request["AppSpecification"], request["ProcessingResources"]["ClusterConfig"]
    key = stack.outputs["KmsKeyArn"]
    argv = [
        "sagemaker",
        "process",
        "--input",
        f"s3://{stack.outputs['InputBucketName']}/scans/",
        "--output",
        stack.outputs["OutputUri"],
        "--role",
        request["RoleArn"],
        "--image-uri",
        app["ImageUri"],
        "--instance-type",
        cluster["InstanceType"],
        "--instance-count",
        str(cluster["InstanceCount"]),
        "--htr-args",
        f"--sse aws:kms --sse-kms-key-id {key}",
        "--volume-kms-key",
        key,
        "--dry-run",
        "--region",
        REGION,
    ]
    assert htr(argv) == 0, capsys.readouterr().err
    launched = json.loads(capsys.readouterr().out)["CreateProcessingJob"]
    ours, theirs = dict(request), dict(launched)
    ours_app, theirs_app = ours.pop("AppSpecification"), theirs.pop("AppSpecification")
    assert ours.pop("ProcessingJobName").startswith("htr-nightly-")
    theirs.pop("ProcessingJobName")
    assert ours == theirs
    assert (
        ours_app["ImageUri"]
        == theirs_app["ImageUri"]
        == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/htr-batch:latest"
    )
    command = theirs_app["ContainerEntrypoint"] + theirs_app["ContainerArguments"]
    assert ours_app["ContainerEntrypoint"] + ours_app["ContainerArguments"] == infra.JOB_ENTRYPOINT + command


@pytest.mark.parametrize("status, job_status", [(0, 0), (3, 0), (4, 4), (2, 2)])
def test_job_entrypoint_passes_the_command_and_forgives_exit_3(
    stack: Stack, tmp_path: Path, status: int, job_status: int
) -> None:
    """The Processing jobs' entry point run by a real sh, with an `htr` that records its
    arguments and exits as told: 3 (some documents in errors/) ends the job as a success."""
    _, request = _nightly_request(stack)
    app = request["AppSpecification"]
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "htr"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args\nexit {status}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    done = subprocess.run(app["ContainerEntrypoint"] + app["ContainerArguments"], env=env, timeout=30)
    assert done.returncode == job_status
    assert (tmp_path / "args").read_text().splitlines() == app["ContainerArguments"][1:]


def test_a_given_key_replaces_the_stack_key(byok_stack: tuple[Stack, str]) -> None:
    """KmsKeyArn given: no key in the stack, and the buckets, workgroup, logs, topic and the
    nightly job all use the team's key; the existing Processing log group gets the filters."""
    stack, key = byok_stack
    assert "DataKey" not in stack.resources and "ProcessingLogGroup" not in stack.resources
    assert stack.outputs["KmsKeyArn"] == key
    s3 = stack.client("s3")
    for bucket in (stack.outputs["InputBucketName"], stack.outputs["OutputUri"][5:].split("/")[0]):
        rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == key
    wg = stack.client("athena").get_work_group(WorkGroup=stack.outputs["AthenaWorkGroup"])["WorkGroup"]
    assert wg["Configuration"]["ResultConfiguration"]["EncryptionConfiguration"]["KmsKey"] == key
    schedule, request = _nightly_request(stack)
    assert request["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == key
    assert request["AppSpecification"]["ContainerArguments"][-1] == key
    # the other parameters of the nightly job reach it too
    assert schedule["ScheduleExpression"] == "cron(30 23 ? * MON-FRI *)"
    assert request["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 4
    source = f"s3://{stack.outputs['InputBucketName']}/archive/2026/"
    assert request["AppSpecification"]["ContainerArguments"][2] == source
    logs = stack.client("logs")
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/htr-byok-")["logGroups"]
    assert groups and all(g["kmsKeyId"] == key for g in groups)
    topic = stack.client("sns").get_topic_attributes(TopicArn=stack.physical("AlarmTopic"))["Attributes"]
    assert topic["KmsMasterKeyId"] == key
    filters = logs.describe_metric_filters(logGroupName="/aws/sagemaker/ProcessingJobs")["metricFilters"]
    assert len(filters) == 6  # three of each stack, on the one account-wide group


def _parses_as_htr(command: list[str]) -> argparse.Namespace:
    """htr's own parser; not for `run`, whose module imports torch (seconds)."""
    from batch.cli import build_parser

    assert command[0] == "htr"
    return build_parser(command[1:]).parse_args(command[1:])


def _matches(stack: Stack, rule: str, event: dict) -> bool:
    """The deployed rule's pattern (read back through boto3) against an event, by moto's
    implementation of EventBridge's matching (moto has no TestEventPattern API)."""
    from moto.events.models import EventPattern, EventPatternParser

    raw = stack.client("events").describe_rule(Name=stack.physical(rule))["EventPattern"]
    full = {"id": "1", "account": ACCOUNT, "time": "2026-11-29T02:00:00Z", "region": REGION, **event}
    return EventPattern(raw, EventPatternParser(raw).parse()).matches_event(cast(Any, full))


def _job_event(status: str, role: str) -> dict:
    detail = {"ProcessingJobName": "htr-nightly-d32c5kddcf5bb8c3", "ProcessingJobStatus": status}
    return {
        "source": "aws.sagemaker",
        "detail-type": "SageMaker Processing Job State Change",
        "detail": {**detail, "RoleArn": role},
    }


def test_alarms_watch_failed_runs_error_documents_bulk_and_api(stack: Stack) -> None:
    alarms = stack.client("cloudwatch").describe_alarms()["MetricAlarms"]
    topic = stack.physical("AlarmTopic")
    ours = {(a["Namespace"], a["MetricName"]): a for a in alarms if a["AlarmActions"] == [topic]}
    assert set(ours) == {
        ("AWS/Events", "TriggeredRules"),
        ("AWS/Scheduler", "InvocationDroppedCount"),
        (f"htr-batch/{STACK}", "DocumentErrors"),
        ("AWS/States", "ExecutionsFailed"),
        ("AWS/ApiGateway", "5XXError"),
    }
    failed = ours[("AWS/Events", "TriggeredRules")]
    assert failed["Dimensions"] == [{"Name": "RuleName", "Value": stack.physical("NightlyFailedRule")}]
    dropped = ours[("AWS/Scheduler", "InvocationDroppedCount")]
    assert dropped["Dimensions"] == [
        {"Name": "ScheduleGroup", "Value": stack.physical("NightlyScheduleGroup")}
    ]
    # the failure rule catches this stack's nightly job failing or stopped, nothing else
    role = stack.client("iam").get_role(RoleName=stack.physical("ProcessingRole"))["Role"]["Arn"]
    other = role.replace(stack.physical("ProcessingRole"), "someone-elses-role")
    assert _matches(stack, "NightlyFailedRule", _job_event("Failed", role))
    assert _matches(stack, "NightlyFailedRule", _job_event("Stopped", role))
    assert not _matches(stack, "NightlyFailedRule", _job_event("Completed", role))
    assert not _matches(stack, "NightlyFailedRule", _job_event("Failed", other))
    targets = stack.client("events").list_targets_by_rule(Rule=stack.physical("NightlyFailedRule"))
    assert [t["Arn"] for t in targets["Targets"]] == [topic]
    filters = stack.client("logs").describe_metric_filters(logGroupName="/aws/sagemaker/ProcessingJobs")
    assert {f["filterName"].rsplit("-", 1)[0] for f in filters["metricFilters"]} >= {
        f"{STACK}-RunErrorsMetricFilter",
        f"{STACK}-CollectErrorsMetricFilter",
        f"{STACK}-CollectMissingMetricFilter",
    }
    group = stack.client("logs").describe_log_groups(logGroupNamePrefix="/aws/sagemaker/ProcessingJobs")
    assert [(g["retentionInDays"], g["kmsKeyId"]) for g in group["logGroups"]] == [
        (30, stack.outputs["KmsKeyArn"])
    ]
    topic_policy = json.loads(
        stack.client("sns").get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"]
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


def _bulk_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("htr_bulk_lambda", REPO / "infra" / "lambdas" / "bulk.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bulk_handler():
    return _bulk_module().handler


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
    for name in (job["job_name"], job["collect_job_name"]):
        assert re.fullmatch(JOB_NAME, name)


JOB_NAME = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"  # SageMaker's pattern for job names


def test_job_names_fit_for_the_longest_batch_names() -> None:
    bulk = _bulk_module()
    for batch in ("a" * 80, "2026-11-29_scans.v2" * 4, "..."):
        for attempt in ("1", "3HL4kqtJlcpXroDTDmJ.aeE3e5uF1zm9"):
            name = bulk._job_name(batch[:80], attempt)
            assert re.fullmatch(JOB_NAME, name) and re.fullmatch(JOB_NAME, name + bulk.COLLECT), name
    assert bulk._job_name("x", "1") != bulk._job_name("x", "2")


def test_bulk_ready_rule_matches_only_batch_markers(stack: Stack) -> None:
    bucket = stack.outputs["InputBucketName"]

    def created(key: str, in_bucket: str = bucket) -> dict:
        detail = {"bucket": {"name": in_bucket}, "object": {"key": key, "size": 0}}
        return {"source": "aws.s3", "detail-type": "Object Created", "detail": detail}

    assert _matches(stack, "BulkReadyRule", created("bulk/2026-11-29.ready"))
    assert not _matches(stack, "BulkReadyRule", created("bulk/2026-11-29/letter.pdf"))
    assert not _matches(stack, "BulkReadyRule", created("scans/2026-11-29.ready"))
    assert not _matches(stack, "BulkReadyRule", created("bulk/2026-11-29.ready", "another-bucket"))


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
    collect_state = definition["States"]["Collect"]
    assert collect_state["Resource"] == "arn:aws:states:::sagemaker:createProcessingJob.sync"
    assert collect_state.get("End") is True  # exit 3 is a success of the job (JOB_ENTRYPOINT)
    collect = collect_state["Parameters"]
    assert collect["ProcessingJobName.$"] == "$.collect_job_name"
    assert collect["AppSpecification"]["ContainerEntrypoint"] == infra.JOB_ENTRYPOINT
    assert collect["AppSpecification"]["ContainerArguments.$"] == "$.collect_command"
    collect_role = stack.client("iam").get_role(RoleName=stack.physical("CollectRole"))["Role"]["Arn"]
    assert collect["RoleArn"] == collect_role
    assert collect["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.t3.medium"


def _with_input(parameters: Any, execution_input: dict) -> Any:
    """A task's Parameters as Step Functions sends them: "Key.$": "$.field" filled in."""
    if isinstance(parameters, dict):
        return {
            k.removesuffix(".$"): execution_input[v[2:]]
            if k.endswith(".$")
            else _with_input(v, execution_input)
            for k, v in parameters.items()
        }
    return parameters


def test_state_machine_requests_are_valid_api_calls(
    stack: Stack, monkeypatch, without_bucket_policies
) -> None:
    """Both tasks' parameters, filled from a real bulk trigger's execution input, pass
    botocore's model of CreateTransformJob and CreateProcessingJob."""
    import botocore.session
    from botocore.validate import ParamValidator

    _, started = _bulk_upload(stack, monkeypatch, "0C1")
    execution_input = _execution_input(stack, started)
    definition = json.loads(
        stack.client("stepfunctions").describe_state_machine(
            stateMachineArn=stack.outputs["BulkStateMachineArn"]
        )["definition"]
    )
    model = botocore.session.get_session().get_service_model("sagemaker")
    for state, operation in (("Transform", "CreateTransformJob"), ("Collect", "CreateProcessingJob")):
        request = _with_input(definition["States"][state]["Parameters"], execution_input)
        report = ParamValidator().validate(request, model.operation_model(operation).input_shape)
        assert not report.has_errors(), (state, report.generate_report())
    collect = _with_input(definition["States"]["Collect"]["Parameters"], execution_input)
    assert collect["AppSpecification"]["ContainerArguments"][:3] == ["htr", "sagemaker", "collect"]
