"""htr-batch: handwritten PDFs and images -> words, lines, Parquet + JSON. The one entry point, `htr`.

Each sub-command lives in the module that owns its work; that module exposes
`configure(parser)` (add its arguments) and `main(args) -> int` (the exit code).
Modules are imported lazily so `htr --help` stays fast and a missing optional
dependency only breaks the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from typing import NoReturn

from batch.core.errors import EXIT_BAD_ARGS, EXIT_FATAL, scrub

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("batch.worker", "run the pipeline over a folder or s3:// prefix, write Parquet + JSON"),
    "synth": ("transforms.synth", "generate synthetic handwritten pages + manifest"),
    "visualise": ("jobs.visualise", "draw polygons and text of a manifest or output over pages"),
    "train": ("jobs.train", "train the segmenter or the recogniser"),
    "eval": ("jobs.evaluate", "evaluate the pipeline on a labelled manifest"),
    "serve": ("batch.serve", "SageMaker inference container: /ping, /invocations"),
    "package-model": ("batch.packaging", "build a SageMaker model.tar.gz"),
    "athena-ddl": ("batch.athena", "print CREATE EXTERNAL TABLE statements for an output"),
    "query": ("batch.query", "run SQL over an output with DuckDB"),
    "export": ("batch.exports.cli", "write ALTO, PAGE XML, hOCR or searchable PDF for an output"),
    "sagemaker": ("jobs.sagemaker_launch", "launch SageMaker training / transform jobs, collect outputs"),
    "bench": ("jobs.bench", "benchmark against Tesseract and RapidOCR"),
    "deploy-template": ("jobs.infra", "print the CloudFormation template of the whole service (infra/)"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="htr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only import the module that will run
            importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code. Called without arguments (the `htr`
    executable, `python -m batch.cli`) it ends the process itself: see exit_now."""
    if argv is None:
        try:
            code = _run(sys.argv[1:])
        except Exception:  # a bug: its traceback, and still one of the documented statuses
            print(scrub(traceback.format_exc()), file=sys.stderr, end="")
            code = EXIT_FATAL
        exit_now(code)
    return _run(list(argv))


def exit_now(code: int) -> NoReturn:
    """Flush what we wrote, then end the process with exactly `code`.

    A normal interpreter exit finalises modules while native thread pools (pyarrow's,
    onnxruntime's, torch's, boto3's transfer threads) may still be alive, and now and then
    one aborts ("terminate called without an active exception", SIGABRT, rc 134): an exit
    status a cron job, SageMaker or a shell `&&` would then misread. Every command has
    committed, written and closed what it owns before it returns its code, so nothing
    after this point needs the interpreter's teardown."""
    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - a closed pipe must not change the exit code
        pass
    os._exit(code)


def _run(argv: list[str]) -> int:
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad arguments; keep our code
        return 0 if e.code == 0 else EXIT_BAD_ARGS
    if not args.command:
        parser.print_help()
        return EXIT_BAD_ARGS
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.main(args) or 0)


if __name__ == "__main__":
    main()
