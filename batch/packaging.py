"""`htr package-model`: build a SageMaker model.tar.gz, and stage the project's code.

Archive layout (what SageMaker unpacks into /opt/ml/model):

    segmenter.safetensors, segmenter.json, recogniser.*   weights + configs at the root
    code/inference.py                                     model_fn/input_fn/predict_fn/output_fn
    code/requirements.txt                                 what the framework container lacks
    code/batch/ code/jobs/ code/transforms/ code/models/  the project's code, no weights

The PyTorch framework container imports code/inference.py and pip-installs
code/requirements.txt; a bring-your-own container (Dockerfile) only needs the weights.
`stage_code` is shared with the training launcher, which uploads the same code as source_dir.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from batch.errors import EXIT_FATAL, EXIT_OK, CheckpointError

REPO_ROOT = Path(__file__).resolve().parents[1]
CODE_PACKAGES = ("batch", "jobs", "transforms", "models")
INFERENCE_SCRIPT = REPO_ROOT / "batch" / "sagemaker_code" / "inference.py"
# Weights travel once, at the archive root; never inside code/.
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".onnx")
# Already in the SageMaker PyTorch image, or only needed to launch/test from a workstation.
CONTAINER_EXCLUDES = {"torch", "torchvision", "pytest", "moto", "sagemaker",
                      "duckdb", "duckdb-extension-httpfs", "duckdb-extensions"}
MODEL_FILES = ("segmenter.safetensors", "segmenter.json", "recogniser.safetensors",
               "recogniser.json")


def container_requirements(requirements: Path = REPO_ROOT / "requirements.txt") -> str:
    """The repo's pins minus what the framework container already has (torch) or never needs."""
    keep = []
    for line in requirements.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if not spec:
            continue
        name = spec.split("[", 1)[0]
        for sep in ("==", ">=", "<=", "~=", "!=", ">", "<"):
            name = name.split(sep, 1)[0]
        if name.strip().lower() not in CONTAINER_EXCLUDES:
            keep.append(spec)
    return "\n".join(keep) + "\n"


def _ignore(directory: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n in ("__pycache__", ".pytest_cache") or n.endswith(".pyc")}
    skip |= {n for n in names if n.endswith(WEIGHT_SUFFIXES)}
    if Path(directory).resolve() == (REPO_ROOT / "models").resolve():
        skip.add("default")  # shipped weights + configs: the archive root carries the model
    return skip


def stage_code(dest: Path) -> Path:
    """Copy the project's packages (code only) and a container requirements.txt into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    for pkg in CODE_PACKAGES:
        shutil.copytree(REPO_ROOT / pkg, dest / pkg, ignore=_ignore, dirs_exist_ok=True)
    (dest / "requirements.txt").write_text(container_requirements())
    return dest


def check_models_dir(models_dir: Path) -> None:
    missing = [n for n in MODEL_FILES if not (models_dir / n).is_file()]
    if missing:
        raise CheckpointError(f"{models_dir} lacks {', '.join(missing)}")


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Same bytes in -> same archive out: no owner names or build-machine ids."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def _add_tree(tar: tarfile.TarFile, root: Path, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            arcname = f"{prefix}{path.relative_to(root).as_posix()}"
            tar.add(path, arcname=arcname, recursive=False, filter=_normalise)


def build_model_archive(out: Path, models_dir: Path | None = None) -> Path:
    """Write model.tar.gz (weights at the root, code/ beside them); returns its path."""
    from models.checkpoints import DEFAULT_DIR  # lazy: torch is slow to import

    models_dir = Path(models_dir) if models_dir else DEFAULT_DIR
    check_models_dir(models_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="htr-package-") as tmp:
        code = stage_code(Path(tmp) / "code")
        shutil.copy2(INFERENCE_SCRIPT, code / "inference.py")
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            for name in sorted(p.name for p in models_dir.iterdir() if p.is_file()):
                tar.add(models_dir / name, arcname=name, filter=_normalise)
            _add_tree(tar, code, "code/")
        partial.replace(out)  # never leave a half-written archive under the final name
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="where to write model.tar.gz")
    parser.add_argument("--models", type=Path, default=None,
                        help="checkpoint folder (default: the shipped models/default)")


def main(args: argparse.Namespace) -> int:
    try:
        path = build_model_archive(args.out, args.models)
    except (CheckpointError, OSError) as e:
        print(f"htr package-model: {e}", file=sys.stderr)
        return EXIT_FATAL
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.1f} MB); upload it and pass its s3:// URI as --model-data")
    return EXIT_OK
