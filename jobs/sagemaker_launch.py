"""`htr sagemaker`: the command line over the launchers in jobs/sagemaker/.

  train      train the segmenter or the recogniser (jobs/train.py in a PyTorch training job)
  transform  Batch Transform over an s3:// prefix with a packaged model
  deploy     a real-time endpoint for a packaged model (optional autoscaling)
  invoke     send one document to an endpoint
  process    `htr run` as a Processing job on N instances (--shard auto)
  collect    a transform's .out files -> documents/, words/, pages/, errors/

Every launch prints the SageMaker API requests the SDK sent, as JSON; with `--dry-run` the SDK
runs against a boto3 session whose calls are answered locally at the botocore layer, so the
printed requests are exactly what would be sent, and nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batch.core.errors import EXIT_BAD_ARGS, EXIT_FATAL, EXIT_OK, EXIT_PARTIAL
from jobs.sagemaker.session import LaunchError, make_session
from jobs.sagemaker.validation import add_security_arguments, key_values, security_from_args

MODEL_KINDS = ("segmenter", "recogniser")
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
CONTENT_CHOICES = ("auto", "application/pdf", "image/jpeg", "image/png", "image/tiff", "application/x-image")


# ---- arguments ---------------------------------------------------------------------------------


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", default=None, help="AWS region (default: boto3's chain)")
    p.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for the job to finish, streaming its logs (default: --wait)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the exact API requests as JSON; call nothing"
    )


def _add_role(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--role",
        default=os.environ.get("HTR_SAGEMAKER_ROLE"),
        help="execution role ARN (default: $HTR_SAGEMAKER_ROLE)",
    )


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-data", required=True, help="s3://.../model.tar.gz (htr package-model)")
    p.add_argument(
        "--image-uri",
        default=None,
        help="bring-your-own image (the Dockerfile) instead of the PyTorch framework image",
    )
    p.add_argument("--model-name", default=None)
    p.add_argument(
        "--model-server-workers",
        type=int,
        default=None,
        help="SAGEMAKER_MODEL_SERVER_WORKERS: model-server processes per instance "
        "(each holds the models in memory)",
    )
    _add_role(p)


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", choices=MODEL_KINDS)
    p.add_argument("--train", required=True, help="s3:// prefix of the training manifest + pages")
    p.add_argument("--test", default=None, help="s3:// prefix of the test set")
    p.add_argument(
        "--init",
        default=None,
        help="fine-tune from: s3://.../model.tar.gz or folder (an `init` channel), "
        "or 'default' (the shipped models, sent with the code)",
    )
    _add_role(p)
    p.add_argument("--instance-type", required=True)
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--hyperparameters", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--spot", action="store_true", help="managed spot training")
    p.add_argument("--max-wait", type=int, default=None, help="spot: seconds to wait + run")
    p.add_argument("--max-run", type=int, default=None, help="seconds (default 24h)")
    p.add_argument(
        "--checkpoint-s3-uri",
        default=None,
        help=f"synced with {CHECKPOINT_LOCAL_PATH}, so spot restarts resume",
    )
    p.add_argument("--output-path", default=None, help="s3:// prefix for model.tar.gz")
    p.add_argument("--code-location", default=None, help="s3:// prefix for the source upload")
    p.add_argument("--volume-size", type=int, default=30, help="GB")
    p.add_argument("--image-uri", default=None, help="bring-your-own training image")
    p.add_argument("--job-name", default=None)
    add_security_arguments(p)
    _add_common(p)


def _configure_transform(p: argparse.ArgumentParser) -> None:
    _add_model(p)
    p.add_argument("--input", required=True, help="s3:// prefix: one document per object")
    p.add_argument("--output", required=True, help="s3:// prefix: <key>.out JSON per document")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--instance-type", required=True)
    p.add_argument("--content-type", default="auto", choices=CONTENT_CHOICES)
    p.add_argument("--max-payload-mb", type=int, default=20, help="largest document, MB (<= 100)")
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=4,
        help="concurrent requests per instance (x max-payload-mb <= 100)",
    )
    p.add_argument("--invocation-timeout", type=int, default=3600, help="seconds per document (1..3600)")
    p.add_argument(
        "--no-payload-check",
        dest="payload_check",
        action="store_false",
        help="skip listing the input for objects over --max-payload-mb",
    )
    p.add_argument("--job-name", default=None)
    add_security_arguments(p)
    _add_common(p)


def _configure_deploy(p: argparse.ArgumentParser) -> None:
    _add_model(p)
    p.add_argument("--endpoint-name", default=None)
    p.add_argument("--instance-type", required=True)
    p.add_argument("--instance-count", type=int, default=1, help="instances at start")
    g = p.add_argument_group("autoscaling (Application Auto Scaling, target tracking)")
    g.add_argument("--autoscale-min", type=int, default=None)
    g.add_argument("--autoscale-max", type=int, default=None, help="enables autoscaling")
    g.add_argument(
        "--autoscale-target", type=float, default=10.0, help="invocations per instance per minute to keep"
    )
    add_security_arguments(p, output_kms=False)
    _add_common(p)


def _configure_invoke(p: argparse.ArgumentParser) -> None:
    p.add_argument("endpoint", help="endpoint name")
    p.add_argument("document", type=Path, help="a PDF or image file")
    p.add_argument("--content-type", default="auto", choices=CONTENT_CHOICES)
    p.add_argument("--region", default=None)
    p.add_argument("--dry-run", action="store_true", help="print the request; send nothing")


def _configure_process(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="s3:// prefix of documents (as for htr run)")
    p.add_argument("--output", required=True, help="s3:// output root (as for htr run)")
    _add_role(p)
    p.add_argument("--instance-type", required=True)
    p.add_argument("--instance-count", type=int, default=1, help="machines; one shard each")
    p.add_argument("--image-uri", default=None, help="our Dockerfile's image (htr installed)")
    p.add_argument("--htr-args", default="", help="more `htr run` options, quoted as one string")
    p.add_argument("--max-runtime", type=int, default=24 * 3600, help="seconds")
    p.add_argument("--volume-size", type=int, default=30, help="GB")
    p.add_argument("--code-location", default=None, help="s3:// prefix for the code upload")
    p.add_argument("--job-name", default=None)
    add_security_arguments(p)
    _add_common(p)


def _configure_collect(p: argparse.ArgumentParser) -> None:
    from batch import storage

    p.add_argument("transform_output", help="s3:// prefix or folder with the transform's .out files")
    p.add_argument("out", help="output root (s3:// or folder): documents/, words/, pages/, errors/")
    p.add_argument(
        "--input", default=None, help="the transform's --input prefix: restores each record's source_uri"
    )
    p.add_argument("--run-id", default=None, help="run id for the written rows (default: new)")
    from batch.exports import formats_arg

    p.add_argument(
        "--formats",
        type=formats_arg,
        default=(),
        metavar="LIST",
        help="as htr run --formats: also alto,page,hocr,pdf (pdf needs --input)",
    )
    storage.add_arguments(p)  # --sse / --sse-kms-key-id, as for htr run


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sagemaker_command", metavar="ACTION", required=True)
    _configure_train(sub.add_parser("train", help="train the segmenter or recogniser"))
    _configure_transform(sub.add_parser("transform", help="Batch Transform over an s3:// prefix"))
    _configure_deploy(sub.add_parser("deploy", help="a real-time endpoint for a packaged model"))
    _configure_invoke(sub.add_parser("invoke", help="send one document to an endpoint"))
    _configure_process(sub.add_parser("process", help="htr run as a Processing job on N machines"))
    _configure_collect(sub.add_parser("collect", help="turn .out files into the output tables"))


# ---- specs from arguments ----------------------------------------------------------------------


def _role(args: argparse.Namespace) -> str:
    if not args.role:
        raise LaunchError("--role is required (or set HTR_SAGEMAKER_ROLE)")
    return args.role


def _train_spec(args: argparse.Namespace):
    from jobs.sagemaker.training import TrainSpec

    return TrainSpec(
        model=args.model,
        train=args.train,
        test=args.test,
        role=_role(args),
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        hyperparameters=key_values(args.hyperparameters, "hyperparameter"),
        spot=args.spot,
        max_wait=args.max_wait,
        max_run=args.max_run,
        checkpoint_s3_uri=args.checkpoint_s3_uri,
        output_path=args.output_path,
        code_location=args.code_location,
        image_uri=args.image_uri,
        job_name=args.job_name,
        volume_size_gb=args.volume_size,
        init=args.init,
        security=security_from_args(args),
        wait=args.wait,
    )


def _transform_spec(args: argparse.Namespace):
    from jobs.sagemaker.transform import TransformSpec

    return TransformSpec(
        model_data=args.model_data,
        input=args.input,
        output=args.output,
        instance_type=args.instance_type,
        role=_role(args),
        instance_count=args.instance_count,
        content_type=args.content_type,
        max_payload_mb=args.max_payload_mb,
        max_concurrent=args.max_concurrent,
        invocation_timeout_s=args.invocation_timeout,
        image_uri=args.image_uri,
        model_name=args.model_name,
        job_name=args.job_name,
        server_workers=args.model_server_workers,
        check_payloads=args.payload_check,
        security=security_from_args(args),
        wait=args.wait,
    )


def _deploy_spec(args: argparse.Namespace):
    from jobs.sagemaker.deploy import Autoscaling, DeploySpec

    scaling = None
    if args.autoscale_max is not None:
        scaling = Autoscaling(
            args.autoscale_min or args.instance_count, args.autoscale_max, args.autoscale_target
        )
    elif args.autoscale_min is not None:
        raise LaunchError("--autoscale-min needs --autoscale-max")
    return DeploySpec(
        model_data=args.model_data,
        role=_role(args),
        instance_type=args.instance_type,
        endpoint_name=args.endpoint_name,
        instance_count=args.instance_count,
        image_uri=args.image_uri,
        model_name=args.model_name,
        server_workers=args.model_server_workers,
        autoscaling=scaling,
        security=security_from_args(args),
        wait=args.wait,
    )


def _process_spec(args: argparse.Namespace):
    from jobs.sagemaker.process import ProcessSpec, split_args

    return ProcessSpec(
        input=args.input,
        output=args.output,
        role=_role(args),
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        image_uri=args.image_uri,
        job_name=args.job_name,
        run_args=split_args(args.htr_args),
        max_runtime_s=args.max_runtime,
        volume_size_gb=args.volume_size,
        code_location=args.code_location,
        security=security_from_args(args),
        wait=args.wait,
    )


# ---- actions -----------------------------------------------------------------------------------


def _wait_for(wait: Callable[[], None]) -> int:
    """Block on the job; SDK progress goes to stderr so stdout stays one JSON document."""
    from sagemaker.exceptions import UnexpectedStatusException

    try:
        with contextlib.redirect_stdout(sys.stderr):
            wait()
    except UnexpectedStatusException as e:
        print(f"htr sagemaker: {e}", file=sys.stderr)
        return EXIT_FATAL
    return EXIT_OK


@dataclass
class Launch:
    """One launch command: its spec builder, the checks that need no AWS, and the launch itself,
    which returns how to wait for what it started."""

    spec: Callable[[argparse.Namespace], Any]
    check: Callable[[Any], None]
    start: Callable[[Any, Any, argparse.Namespace], Callable[[], None]]


def _start_training(spec, session, args) -> Callable[[], None]:
    from jobs.sagemaker.training import launch_training

    estimator = launch_training(spec, session)
    return lambda: estimator.latest_training_job.wait(logs="All")


def _start_transform(spec, session, args) -> Callable[[], None]:
    from jobs.sagemaker.transform import launch_transform

    transformer = launch_transform(spec, session, dry_run=args.dry_run)
    return lambda: transformer.wait(logs=True)


def _start_deploy(spec, session, args) -> Callable[[], None]:
    from jobs.sagemaker.deploy import deploy, wait_in_service

    name = deploy(spec, session)
    return lambda: wait_in_service(session.boto_session, name)


def _start_process(spec, session, args) -> Callable[[], None]:
    from jobs.sagemaker.process import launch_processing

    processor = launch_processing(spec, session)
    return lambda: processor.latest_job.wait(logs=True)


def _launches() -> dict[str, Launch]:
    from jobs.sagemaker.deploy import check_deploy
    from jobs.sagemaker.process import check_process
    from jobs.sagemaker.training import check_training
    from jobs.sagemaker.transform import check_transform_limits

    return {
        "train": Launch(_train_spec, check_training, _start_training),
        "transform": Launch(_transform_spec, check_transform_limits, _start_transform),
        "deploy": Launch(_deploy_spec, check_deploy, _start_deploy),
        "process": Launch(_process_spec, check_process, _start_process),
    }


def _launch(args: argparse.Namespace) -> int:
    launch = _launches()[args.sagemaker_command]
    spec = launch.spec(args)
    launch.check(spec)  # before the (slow) session: bad arguments fail at once
    session, recorder = make_session(args.region, args.dry_run)
    wait = launch.start(spec, session, args)
    print(json.dumps(recorder.report(), indent=1, sort_keys=True, default=str), flush=True)
    # deploy with autoscaling has already waited for the endpoint (to register its variant)
    waited = getattr(spec, "autoscaling", None) is not None
    if args.dry_run or not spec.wait or waited:
        return EXIT_OK
    return _wait_for(wait)


def _invoke_main(args: argparse.Namespace) -> int:
    from jobs.sagemaker.deploy import invoke

    session, recorder = make_session(args.region, args.dry_run)
    meta, body = invoke(session.boto_session, args.endpoint, args.document, args.content_type)
    if args.dry_run:
        print(json.dumps(recorder.report(), indent=1, sort_keys=True, default=str))
        return EXIT_OK
    sys.stdout.write(body.decode("utf-8", errors="replace").rstrip("\n") + "\n")
    try:
        failed = isinstance(json.loads(body), dict) and "error" in json.loads(body)
    except ValueError:
        failed = False
    return EXIT_PARTIAL if failed else EXIT_OK


def _collect_main(args: argparse.Namespace) -> int:
    from batch import storage
    from batch.core.errors import HtrError
    from batch.core.ids import new_run_id
    from jobs.sagemaker.collect import collect

    storage.configure_from_args(args)
    run_id = args.run_id or new_run_id()
    try:
        stats = collect(args.transform_output, args.out, run_id, args.input, args.formats)
    except HtrError as e:
        print(f"htr sagemaker collect: {e.stage}: {e}", file=sys.stderr)
        return EXIT_FATAL
    print(
        f"collected {stats.documents} documents, {stats.errors} error records, "
        f"{stats.missing} inputs without output -> {args.out} (run {run_id})"
    )
    return EXIT_PARTIAL if stats.errors or stats.missing else EXIT_OK


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = args.sagemaker_command
    if command == "collect":
        return _collect_main(args)
    try:
        return _invoke_main(args) if command == "invoke" else _launch(args)
    except (LaunchError, ValueError) as e:  # the SDK raises ValueError for bad combinations
        print(f"htr sagemaker {command}: {e}", file=sys.stderr)
        return EXIT_BAD_ARGS
    except Exception as e:  # botocore ClientError, missing credentials, ...
        from botocore.exceptions import BotoCoreError, ClientError

        if not isinstance(e, (BotoCoreError, ClientError)):
            raise
        print(f"htr sagemaker {command}: AWS said: {e}", file=sys.stderr)
        return EXIT_FATAL
