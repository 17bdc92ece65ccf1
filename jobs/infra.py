"""`htr deploy-template`: the CloudFormation template of the whole service, ready to deploy.

infra/htr-batch.template.yaml is written by hand, except for a few "{{htr:NAME}}" tokens
that this module fills from the code they must agree with, so they cannot drift:

* `table_input:<table>`: the Glue tables, translated from the statements `htr athena-ddl`
  prints (batch/athena.py over batch/schema.py): same columns, partition key and projection;
* `transform_*`: Batch Transform settings and container environment of `htr sagemaker
  transform`'s defaults (jobs/sagemaker/transform.py);
* `job_entrypoint_json`: the entry point of the stack's Processing jobs (JOB_ENTRYPOINT);
* `lambda:<name>`: the handlers in infra/lambdas/, inlined as the functions' code
  (docstrings and comments dropped: inline code is limited to 4096 characters).

Each token is the whole quoted value of a YAML key; it is replaced by JSON (valid YAML), or
by a block literal for code, so the rest of the file keeps its short-form tags. Comment lines
are left out of the rendered file (it must stay under the 51,200 bytes of an inline deploy).
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from batch.core.errors import EXIT_FATAL, EXIT_OK

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "infra" / "htr-batch.template.yaml"
LAMBDAS = REPO_ROOT / "infra" / "lambdas"
INLINE_CODE_LIMIT = 4096  # CloudFormation's Code.ZipFile maximum
OUTPUT_PREFIX = "htr/"  # OUT is s3://<output bucket>/htr/
_PLACEHOLDER_OUT = "s3://htr-output-placeholder/" + OUTPUT_PREFIX
RENDERED_HEADER = "# Rendered by `htr deploy-template` from infra/htr-batch.template.yaml: edit that.\n"
# The stack's Processing jobs (nightly `htr run`, bulk `htr sagemaker collect`) run
# ENTRYPOINT + [htr, ...]: exit status 3 (done, some documents in errors/) is reported as
# success, so a job fails only when its command does; errors/ has its own alarm.
JOB_ENTRYPOINT = ["sh", "-c", '"$@"; s=$?; [ "$s" -eq 3 ] && s=0; exit "$s"', "htr-job"]
_TOKEN_LINE = re.compile(
    r'^(?P<indent>[ -]*)(?P<key>[\w.]+): "\{\{htr:(?P<name>[\w:.-]+)\}\}"[ \t]*$', re.MULTILINE
)
PARQUET_STORAGE = {
    "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
    "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
    "SerdeInfo": {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"},
}


class TemplateError(Exception):
    """The template source and the code disagree (unknown token, code too long)."""


# ---- Glue tables from the Athena DDL -----------------------------------------------------------


def _tblproperties(ddl: str) -> dict[str, str]:
    body = ddl[ddl.upper().index("TBLPROPERTIES") :]
    return dict(re.findall(r"'([^']*)'\s*=\s*'([^']*)'", body))


def _sub(value: str) -> dict[str, str]:
    """A DDL string as Fn::Sub: literal ${...} escaped, the placeholder bucket made a Ref."""
    escaped = value.replace("${", "${!")
    return {"Fn::Sub": escaped.replace(_PLACEHOLDER_OUT, "s3://${OutputBucket}/" + OUTPUT_PREFIX)}


def table_input(table: str) -> dict[str, Any]:
    """AWS::Glue::Table TableInput equal to `htr athena-ddl`'s CREATE EXTERNAL TABLE."""
    from batch import athena, storage

    ddl = athena.ddl_for(table, athena.TABLES[table], storage.join(_PLACEHOLDER_OUT, table))
    columns, partitions = athena.parse_ddl_columns(ddl)
    found = re.search(r"LOCATION '([^']*)'", ddl)
    assert found is not None, ddl  # ddl_for always writes one
    location = found.group(1)
    parameters: dict[str, Any] = {"classification": "parquet", "EXTERNAL": "TRUE"}
    parameters.update({k: _sub(v) if _PLACEHOLDER_OUT in v else v for k, v in _tblproperties(ddl).items()})
    return {
        "Name": {"Fn::Sub": "${TablePrefix}" + table},
        "TableType": "EXTERNAL_TABLE",
        "Parameters": parameters,
        "PartitionKeys": [{"Name": n, "Type": t} for n, t in partitions.items()],
        "StorageDescriptor": {
            "Columns": [{"Name": n, "Type": t} for n, t in columns.items()],
            "Location": _sub(location),
            **PARQUET_STORAGE,
        },
    }


# ---- Batch Transform settings from the launcher ------------------------------------------------


def transform_module() -> ModuleType:
    """Where TransformSpec, transform_env and CONTENT_TYPES live."""
    return importlib.import_module("jobs.sagemaker.transform")


def default_transform_spec() -> Any:
    return transform_module().TransformSpec(model_data="", input="", output="", instance_type="", role="")


def transform_settings() -> dict[str, Any]:
    """`htr sagemaker transform`'s defaults, as the state machine's CreateTransformJob needs them."""
    launcher, spec = transform_module(), default_transform_spec()
    return {
        "transform_max_payload_mb": str(spec.max_payload_mb),
        "transform_max_concurrent": str(spec.max_concurrent),
        "transform_invocation_timeout_s": str(spec.invocation_timeout_s),
        "transform_content_type": launcher.CONTENT_TYPES[spec.content_type],
        "transform_environment_json": json.dumps(launcher.transform_env(spec), sort_keys=True),
    }


# ---- Lambda handlers inlined -------------------------------------------------------------------


def _drop_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            setattr(node, "body", body[1:] or [ast.Pass()])  # noqa: B010 (node: any AST with a body)
    return tree


def inline_code(name: str) -> str:
    """infra/lambdas/<name>.py without docstrings and comments, as CloudFormation inlines it."""
    source = (LAMBDAS / f"{name}.py").read_text()
    code = ast.unparse(_drop_docstrings(ast.parse(source))) + "\n"
    if len(code) > INLINE_CODE_LIMIT:
        raise TemplateError(
            f"infra/lambdas/{name}.py inlines to {len(code)} characters; "
            f"CloudFormation takes at most {INLINE_CODE_LIMIT}"
        )
    return code


# ---- rendering ---------------------------------------------------------------------------------


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def token_values() -> dict[str, Callable[[], Any]]:
    """Every {{htr:NAME}} the template may use -> how to compute its value."""
    from batch.core.schema import TABLES

    values: dict[str, Callable[[], Any]] = {
        f"table_input:{t}": functools.partial(table_input, t) for t in TABLES
    }
    settings = transform_settings()
    values.update({k: _constant(v) for k, v in settings.items()})
    values["job_entrypoint_json"] = _constant(json.dumps(JOB_ENTRYPOINT))
    values.update(
        {f"lambda:{p.stem}": functools.partial(inline_code, p.stem) for p in sorted(LAMBDAS.glob("*.py"))}
    )
    return values


def _block_literal(indent: str, key: str, code: str) -> str:
    pad = " " * (len(indent) + 2)
    lines = "\n".join(pad + line if line else "" for line in code.rstrip("\n").split("\n"))
    return f"{indent}{key}: |\n{lines}"


def render(template: Path = TEMPLATE) -> str:
    """The deployable template: every token replaced, or TemplateError."""
    values = token_values()

    def replace(m: re.Match) -> str:
        name = m.group("name")
        if name not in values:
            raise TemplateError(f"{template.name}: unknown token {{{{htr:{name}}}}}")
        value = values[name]()
        if name.startswith("lambda:"):
            return _block_literal(m.group("indent"), m.group("key"), value)
        return f"{m.group('indent')}{m.group('key')}: {json.dumps(value)}"

    # Comments stay in the source: the rendered file must fit an inline deploy (51,200 bytes).
    lines = [
        ln
        for ln in _TOKEN_LINE.sub(replace, template.read_text()).splitlines()
        if not ln.lstrip().startswith("#")
    ]
    if any("{{htr:" in line for line in lines):
        raise TemplateError(f"{template.name}: a {{{{htr:...}}}} token is not the whole value of a key")
    return RENDERED_HEADER + "\n".join(lines) + "\n"


# ---- CLI ---------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="write the template here (default: print it)")


def main(args: argparse.Namespace) -> int:
    try:
        text = render()
    except (TemplateError, OSError) as e:
        print(f"htr deploy-template: {e}", file=sys.stderr)
        return EXIT_FATAL
    if args.out is None:
        sys.stdout.write(text)
        return EXIT_OK
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(
        f"wrote {args.out}; deploy it with aws cloudformation deploy (README: Deploy on AWS)", file=sys.stderr
    )
    return EXIT_OK
