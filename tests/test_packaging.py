"""`htr package-model`: the archive's layout, and its code/inference.py run from an unpacked copy.

The handlers are imported in a fresh interpreter (`python -I`: no PYTHONPATH, no current
folder on sys.path) from the unpacked archive, the way the PyTorch framework container loads
them, and must find the project's packages inside code/, not in this checkout.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from batch.cli import main as htr
from batch.errors import EXIT_FATAL, EXIT_OK
from batch.packaging import MODEL_FILES, container_requirements

REPO = Path(__file__).resolve().parents[1]

# Runs inside the unpacked archive: argv = model_dir, pdf path.
HANDLER_SCRIPT = r'''
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
    except inference.InvocationError as e:
        return {"status": e.status_code, **e.body}

out["corrupt"] = answer(data[:200], "application/pdf")
out["csv"] = answer(b"a,b\n", "text/csv")
service.settings = service.settings.__class__(batch=True)  # as under Batch Transform
out["corrupt_batch"] = answer(data[:200], "application/x-image")
print(json.dumps(out))
'''


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
    assert {"code/inference.py", "code/requirements.txt", "code/batch/serve.py",
            "code/batch/pipeline.py", "code/models/checkpoints.py", "code/transforms/rasterise.py",
            "code/jobs/train.py"} <= set(names)
    weights = [n for n in names if n.endswith(".safetensors")]
    assert sorted(weights) == ["recogniser.safetensors", "segmenter.safetensors"]  # once, at the root
    assert not [n for n in names if "__pycache__" in n or n.startswith("code/models/default")]
    assert requirements == container_requirements()
    assert "torch" not in {line.split("==")[0] for line in requirements.split()}


def test_handlers_run_from_the_unpacked_archive(archive: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "opt-ml-model"
    with tarfile.open(archive) as tar:
        tar.extractall(model_dir, filter="data")
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(_pdf())
    proc = subprocess.run([sys.executable, "-I", "-c", HANDLER_SCRIPT, str(model_dir), str(pdf)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HTR_DEVICE": "cpu"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])

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
