"""`htr package-model`: the archive's layout, and its code/inference.py run from an unpacked copy.

The handlers are imported in a fresh interpreter (`python -I`: no PYTHONPATH, no current
folder on sys.path) from the unpacked archive, the way the PyTorch framework container loads
them, and must find the project's packages inside code/, not in this checkout. The same
archive is then served through the real sagemaker-inference toolkit's Transformer, and its
code/requirements.txt read by pip's own parser from inside the unpacked folder, as the
container does at start-up. The Dockerfile's COPY and `-r` sources are checked the same way.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from batch.cli import main as htr
from batch.core.errors import EXIT_FATAL, EXIT_OK
from batch.packaging import MODEL_FILES, container_requirements, requirement_specs
from tests.s3_server import s3_client

REPO = Path(__file__).resolve().parents[1]

# Runs inside the unpacked archive: argv = model_dir, pdf path.
HANDLER_SCRIPT = r"""
import importlib.util, json, os, sys
model_dir, pdf_path = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("inference", os.path.join(model_dir, "code", "inference.py"))
inference = importlib.util.module_from_spec(spec)
sys.modules["inference"] = inference
spec.loader.exec_module(inference)
import batch
out = {"batch_from": batch.__file__}

service = inference.model_fn(model_dir)
data = open(pdf_path, "rb").read()
document = inference.input_fn(bytearray(data), "application/pdf")
prediction = inference.predict_fn(document, service)
out["record"] = json.loads(inference.output_fn(prediction, "application/json"))

def answer(body, content_type):
    try:
        return inference.predict_fn(inference.input_fn(body, content_type), service)
    except Exception as e:  # InvocationError, or the toolkit's error where it is installed
        body = e.body if isinstance(e, inference.InvocationError) else json.loads(e.message)
        return {"status": e.status_code, **body}

out["corrupt"] = answer(data[:200], "application/pdf")
out["csv"] = answer(b"a,b\n", "text/csv")
service.settings = service.settings.__class__(batch=True)  # as under Batch Transform
out["corrupt_batch"] = answer(data[:200], "application/x-image")
print(json.dumps(out))
"""


def _pdf() -> bytes:
    im = Image.new("RGB", (200, 120), "white")
    ImageDraw.Draw(im).text((10, 10), "inference", fill="black")
    buf = io.BytesIO()
    im.save(buf, "PDF")
    return buf.getvalue()


@pytest.fixture(scope="module")
def archive(tiny_models: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("package") / "model.tar.gz"
    assert htr(["package-model", "--out", str(out), "--models", str(tiny_models)]) == EXIT_OK
    return out


def test_archive_layout(archive: Path) -> None:
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        requirements = tar.extractfile("code/requirements.txt").read().decode()
    assert set(MODEL_FILES) <= {n for n in names if "/" not in n}
    assert {
        "code/inference.py",
        "code/requirements.txt",
        "code/batch/serve.py",
        "code/batch/pipeline.py",
        "code/models/checkpoints.py",
        "code/transforms/rasterise.py",
        "code/jobs/train.py",
    } <= set(names)
    weights = [n for n in names if n.endswith(".safetensors")]
    assert sorted(weights) == ["recogniser.safetensors", "segmenter.safetensors"]  # once, at the root
    assert not [n for n in names if "__pycache__" in n or n.startswith("code/models/default")]
    assert requirements == container_requirements()
    pins = {line.split("==")[0] for line in requirements.split()}
    assert not pins & {"torch", "pytest", "moto", "sagemaker-inference"}
    assert {"pypdfium2", "fontpkg-caveat"} <= pins  # the fonts' -r include, inlined
    assert not [line for line in requirements.splitlines() if line.startswith("-")]


def test_handlers_run_from_the_unpacked_archive(archive: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "opt-ml-model"
    with tarfile.open(archive) as tar:
        tar.extractall(model_dir, filter="data")
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(_pdf())
    proc = subprocess.run(
        [sys.executable, "-I", "-c", HANDLER_SCRIPT + TOOLKIT_SCRIPT, str(model_dir), str(pdf)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HTR_DEVICE": "cpu", "SAGEMAKER_PROGRAM": "inference.py"},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-2])
    _check_toolkit_answers(json.loads(proc.stdout.splitlines()[-1]), proc.stderr)

    assert out["batch_from"].startswith(str(model_dir / "code"))  # not this checkout
    record = out["record"]
    assert record["content_type"] == "application/pdf" and record["page_count"] == 1
    assert record["pages"][0]["width"] == round(200 * 200 / 72)
    assert out["corrupt"]["status"] == 400 and out["corrupt"]["error"]["type"] == "CorruptDocument"
    assert out["csv"]["status"] == 415
    assert "status" not in out["corrupt_batch"]  # answered 200 with the error body
    assert out["corrupt_batch"]["error"]["type"] == "CorruptDocument"


def test_missing_checkpoints_are_a_clear_error(tmp_path: Path, capsys) -> None:
    code = htr(["package-model", "--out", str(tmp_path / "m.tar.gz"), "--models", str(tmp_path)])
    assert code == EXIT_FATAL
    assert "segmenter.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "m.tar.gz").exists()


# Runs with cwd = the unpacked archive, as `pip install -r code/requirements.txt` does in the container.
PIP_PARSE = r"""
import json
from pip._internal.network.session import PipSession
from pip._internal.req.req_file import parse_requirements
print(json.dumps([r.requirement for r in parse_requirements("code/requirements.txt", session=PipSession())]))
"""


def _unpack(archive: Path, dest: Path) -> Path:
    dest.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


def pip_dry_run(folder: Path, requirements: str) -> str:
    """`pip install -r REQUIREMENTS` run in `folder` as a container's start-up runs it, but as a
    dry run with no index: every `-r` include must open from inside the folder, and every pin
    (and what it depends on) must resolve, here against this environment's installed versions
    (the same pins; nothing is downloaded). Returns pip's output; fails the test on any error."""
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-index",
            "--disable-pip-version-check",
        ]
        + ["-r", requirements],
        cwd=folder,
        env={"PATH": os.environ["PATH"], "HOME": str(folder), "PIP_CONFIG_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"pip install -r {requirements} in {folder}:\n{proc.stderr[-3000:]}"
    assert "Would install" not in proc.stdout, proc.stdout  # every pin is the installed version
    return proc.stdout


def test_requirements_resolve_inside_the_unpacked_archive(archive: Path, tmp_path: Path) -> None:
    """Every `-r` is resolvable from the archive alone (pip's own parser, in an empty folder),
    and pip resolves the whole file there (a dry run, as the serving container's start-up)."""
    model_dir = _unpack(archive, tmp_path / "model")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", PIP_PARSE], cwd=model_dir, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    parsed = json.loads(proc.stdout)
    assert parsed == list(requirement_specs(model_dir / "code" / "requirements.txt"))
    assert "pypdfium2==5.15.2" in parsed and len(parsed) > 20
    out = pip_dry_run(model_dir, "code/requirements.txt")
    assert "Requirement already satisfied: pypdfium2==5.15.2" in out
    assert "Requirement already satisfied: fontpkg-caveat==" in out  # the fonts' include, inlined


def test_a_dangling_include_fails_the_dry_run(tmp_path: Path) -> None:
    """The check above can fail: the archive's old requirements.txt (an -r to a file it lacks)."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "requirements.txt").write_text("numpy\n-r requirements-fonts.txt\n")
    with pytest.raises(AssertionError, match="requirements-fonts.txt"):
        pip_dry_run(tmp_path, "code/requirements.txt")


# Then the sagemaker-inference toolkit's Transformer, as the framework container's model server runs it.
# Context: the parts of the model server's request context it uses.
TOOLKIT_SCRIPT = r"""
sys.path.insert(0, os.path.join(model_dir, "code"))  # the container: SAGEMAKER_SUBMIT_DIRECTORY
from sagemaker_inference.transformer import Transformer

class Request:
    def __init__(self, content_type):
        self.content_type = content_type
    def get_request_properties(self):
        return {"Content-Type": self.content_type, "Accept": "application/json"}

class Context:
    def __init__(self, content_type):
        self.system_properties = {"model_dir": model_dir}
        self.request_processor = [Request(content_type)]
        self.status, self.phrase = 200, "OK"
    def set_response_status(self, code, phrase, idx=0):
        self.status, self.phrase = code, phrase
    def set_response_content_type(self, idx, content_type):
        pass

transformer = Transformer()
def call(body, content_type):
    context = Context(content_type)
    answer = transformer.transform([{"body": body}], context)[0]
    return {"status": context.status, "phrase": context.phrase, "body": json.loads(answer)}

data = open(pdf_path, "rb").read()
print(json.dumps({"ok": call(data, "application/pdf"), "corrupt": call(data[:200], "application/pdf"),
                  "csv": call(b"a,b\n", "text/csv")}))
"""


def _check_toolkit_answers(out: dict, log: str) -> None:
    """Outside batch mode the toolkit would append a traceback to the body: it must stay JSON."""
    assert out["ok"]["status"] == 200 and out["ok"]["body"]["page_count"] == 1
    corrupt = out["corrupt"]
    assert corrupt["status"] == 400 and corrupt["phrase"] == "Bad Request"
    assert corrupt["body"]["error"]["type"] == "CorruptDocument"
    assert out["csv"]["status"] == 415 and out["csv"]["body"]["error"]["stage"] == "request"
    assert "Traceback" in log  # logged, not sent


def _dockerfile_image(dockerfile: Path) -> dict[str, Path]:
    """Files of the image's build steps that come from the repo: COPY sources, and files a RUN
    derives from one (`grep ... SRC > DEST`), by their path in the image."""
    workdir, files = "/", {}
    text = dockerfile.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "WORKDIR":
            workdir = words[1]
        elif words[0] == "COPY":
            *sources, dest = words[1:]
            for src in sources:
                assert (REPO / src).exists(), f"Dockerfile: COPY {src}: not in the repo"
                target = (
                    dest
                    if not dest.endswith("/") and len(sources) == 1 and dest != "./"
                    else str(Path(workdir, dest, Path(src).name))
                )
                files[str(Path(workdir, target))] = REPO / src
        elif words[0] == "RUN":
            for derived in re.finditer(r"(\S+)\s*>\s*(\S+)", line):
                derived_src = files.get(str(Path(workdir, derived.group(1))))
                if derived_src:
                    files[str(Path(workdir, derived.group(2)))] = derived_src
            for req in re.findall(r"-r\s+(\S+)", line):
                _check_includes(Path(workdir, req), files)
    return files


def _check_includes(path: Path, files: dict[str, Path]) -> None:
    """`path` exists in the image, and so does every file it includes with -r, recursively."""
    assert str(path) in files, f"Dockerfile: pip install -r {path}: never copied into the image"
    for line in files[str(path)].read_text().splitlines():
        m = re.match(r"\s*(?:-r|--requirement)[\s=]+(\S+)", line)
        if m:
            _check_includes(path.parent / m.group(1), files)


def test_dockerfile_copies_every_file_it_uses() -> None:
    files = _dockerfile_image(REPO / "Dockerfile")
    assert "/opt/program/requirements-runtime.txt" in files  # the filtered copy, beside the fonts
    assert "/opt/program/requirements-fonts.txt" in files


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (relative to the context) out of the build context:
    a pattern matches it or one of its parent folders (`**/` at any depth). No `!` exceptions."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


def test_dockerignore_keeps_what_copy_needs_and_drops_the_bulk() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")]  # _dockerignored does not handle them
    sources = {src for src in _dockerfile_image(REPO / "Dockerfile").values()}
    tracked = subprocess.run(
        ["git", "ls-files", "--", *(str(s.relative_to(REPO)) for s in sources)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "models/default/recogniser.safetensors" in tracked  # the image ships the default models
    assert not [f for f in tracked if _dockerignored(f, patterns)]
    for bulk in (".venv/bin/python", "runs/x/state.pt", ".git/HEAD", "batch/__pycache__/cli.pyc"):
        assert _dockerignored(bulk, patterns), bulk


def _dockerfile_steps(dockerfile: Path) -> list[tuple[str, str, str]]:
    """(instruction, its text, WORKDIR at that point) for each step, continuation lines joined."""
    workdir, steps = "/", []
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        words = line.split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "WORKDIR":
            workdir = words[1].strip()
        steps.append((words[0], words[1] if len(words) > 1 else "", workdir))
    return steps


def test_dockerfile_pip_steps_resolve(tmp_path: Path) -> None:
    """No Docker daemon in the tests: the image's requirement steps run for real in a folder laid
    out as the image (the COPY steps' files at their paths), their own shell text through bash,
    with `pip` a dry run against this environment (same Python minor as the base image)."""
    steps = _dockerfile_steps(REPO / "Dockerfile")
    base = next(text for op, text, _ in steps if op == "FROM")
    assert base.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}-")
    root = tmp_path / "image"
    for op, text, workdir in steps:
        if op != "COPY" or "--from" in text:
            continue
        *sources, dest = text.split()
        target = Path(workdir, dest)  # an absolute dest stands alone
        for src in sources:
            out = root / str(target).lstrip("/")
            if dest.endswith("/") or dest in (".", "./") or len(sources) > 1:
                out = out / Path(src).name
            out.parent.mkdir(parents=True, exist_ok=True)
            if (REPO / src).is_file():
                out.write_bytes((REPO / src).read_bytes())
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "pip").write_text(
        f'#!/bin/sh\nexec {sys.executable} -I -m pip "$@" --dry-run --no-index --disable-pip-version-check\n'
    )
    (shim / "pip").chmod(0o755)
    pip_steps = [(text, workdir) for op, text, workdir in steps if op == "RUN" and "pip install -r" in text]
    assert pip_steps, "Dockerfile: no `pip install -r` step found"
    for text, workdir in pip_steps:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", text],
            cwd=root / workdir.lstrip("/"),
            env={"PATH": f"{shim}:/usr/bin:/bin", "HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"Dockerfile: RUN {text}\n{proc.stderr[-3000:]}"
        assert "Would install" not in proc.stdout
        assert "Requirement already satisfied: torch==" in proc.stdout  # the runtime pins, torch too
        assert "fontpkg-caveat==" in proc.stdout and "pytest" not in proc.stdout


def _training_output(src: Path, kind: str, dest: Path) -> bytes:
    """A training job's model.tar.gz: SM_MODEL_DIR's files at the archive root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for suffix in (".safetensors", ".json"):
            tar.add(src / f"{kind}{suffix}", arcname=f"{kind}{suffix}")
    dest.write_bytes(buf.getvalue())
    return (src / f"{kind}.safetensors").read_bytes()


def test_package_joins_two_training_outputs(
    tiny_models: Path, tiny_line_models: Path, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    """Segmenter from one job's s3://.../model.tar.gz, recogniser from another's local copy."""
    seg_weights = _training_output(tiny_models, "segmenter", tmp_path / "seg.tar.gz")
    s3_client(s3_endpoint).upload_file(str(tmp_path / "seg.tar.gz"), s3_bucket, "seg/output/model.tar.gz")
    rec_weights = _training_output(tiny_line_models, "recogniser", tmp_path / "rec.tar.gz")
    out = tmp_path / "joined.tar.gz"
    assert (
        htr(
            [
                "package-model",
                "--out",
                str(out),
                "--models",
                str(tmp_path / "nowhere"),
                "--segmenter",
                f"s3://{s3_bucket}/seg/output/model.tar.gz",
                "--recogniser",
                str(tmp_path / "rec.tar.gz"),
            ]
        )
        == EXIT_OK
    )
    with tarfile.open(out) as tar:
        assert tar.extractfile("segmenter.safetensors").read() == seg_weights
        assert tar.extractfile("recogniser.safetensors").read() == rec_weights
        assert json.loads(tar.extractfile("recogniser.json").read()) == json.loads(
            (tiny_line_models / "recogniser.json").read_text()
        )


def test_package_refuses_an_output_without_the_model(tiny_models: Path, tmp_path: Path, capsys) -> None:
    _training_output(tiny_models, "segmenter", tmp_path / "seg.tar.gz")
    code = htr(
        [
            "package-model",
            "--out",
            str(tmp_path / "m.tar.gz"),
            "--models",
            str(tiny_models),
            "--recogniser",
            str(tmp_path / "seg.tar.gz"),
        ]
    )
    assert code == EXIT_FATAL and "lacks recogniser.safetensors" in capsys.readouterr().err
