"""The real `htr` executable's exit status is the command's, never a random abort at
interpreter exit (native thread pools of pyarrow / boto3 / duckdb / torch still alive), and
what it printed is all there: batch.cli.exit_now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from batch.core.errors import EXIT_BAD_ARGS, EXIT_FATAL
from tests.worker_helpers import child_env
from tests.writer_child import write_phase

HTR = Path(sys.executable).with_name("htr")


def htr(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(HTR), *map(str, argv)], env=child_env(), capture_output=True, text=True, timeout=300
    )


@pytest.mark.skipif(not HTR.exists(), reason="htr is not installed in this environment")
def test_real_command_exit_status_is_the_commands_own(s3_bucket, tmp_path, fresh_storage):
    out = f"s3://{s3_bucket}/out/"
    write_phase(out, "base", "r1")  # Parquet parts on moto: boto3 + pyarrow + duckdb all busy
    for _ in range(2):  # the abort was intermittent: the same command, twice
        proc = htr("query", out, "SELECT count(*) AS n FROM pages", "--format", "csv")
        assert (proc.returncode, proc.stdout) == (0, "n\n6\n"), proc.stderr[-2000:]  # the 6 good sources
    proc = htr("query", out, "SELECT nope FROM pages")
    assert proc.returncode == EXIT_BAD_ARGS and "htr query: error:" in proc.stderr
    proc = htr("run", tmp_path, tmp_path / "out", "--models", tmp_path / "no-models", "--no-progress")
    assert proc.returncode == EXIT_FATAL and "cannot load models" in proc.stderr
    assert htr("no-such-command").returncode == EXIT_BAD_ARGS


def test_an_unexpected_error_is_a_traceback_and_exit_4(tmp_path):
    """A bug (an exception no command catches) in the real entry point: its traceback on
    stderr and exit 4, not 1 or an abort at interpreter exit."""
    code = (
        "import sys, batch.query\n"
        "def boom(*a, **k): raise RuntimeError('a bug in a command')\n"
        "batch.query.query = boom\n"
        f"sys.argv = ['htr', 'query', {str(tmp_path)!r}, 'SELECT 1']\n"
        "from batch.cli import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == EXIT_FATAL, proc.stderr[-2000:]
    assert "Traceback" in proc.stderr and "RuntimeError: a bug in a command" in proc.stderr
