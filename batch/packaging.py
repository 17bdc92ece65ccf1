"""`htr package-model`: build a SageMaker model.tar.gz, and stage the project's code.

Archive layout (what SageMaker unpacks into /opt/ml/model):

    segmenter.safetensors, segmenter.json, recogniser.*   weights + configs at the root
    code/inference.py                                     model_fn/input_fn/predict_fn/output_fn
    code/requirements.txt                                 what the framework container lacks
    code/batch/ code/jobs/ code/transforms/ code/models/  the project's code, no weights

The PyTorch framework container imports code/inference.py and runs `pip install -r
code/requirements.txt` from inside the unpacked archive, and the training toolkit does the same
with a job's source_dir: so requirements.txt is self-contained (the repo's `-r` includes are
inlined), or the container stops at start-up. A bring-your-own container (Dockerfile) only needs
the weights. `stage_code` is shared with the training launcher, which uploads the same code.

Each model may come from its own training job: `--segmenter` and `--recogniser` take a folder,
a model.tar.gz, or an s3://.../model.tar.gz (a training job's output) and override `--models`.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from batch.core.errors import EXIT_FATAL, EXIT_OK, CheckpointError

REPO_ROOT = Path(__file__).resolve().parents[1]
CODE_PACKAGES = ("batch", "jobs", "transforms", "models")
INFERENCE_SCRIPT = REPO_ROOT / "batch" / "sagemaker_code" / "inference.py"
# Weights travel once, at the archive root; never inside code/.
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".onnx")
# Already in the SageMaker PyTorch image, or only needed to launch/test from a workstation.
CONTAINER_EXCLUDES = {
    "torch",
    "torchvision",
    "pytest",
    "moto",
    "sagemaker",
    "sagemaker-inference",
    "duckdb",
    "duckdb-extension-httpfs",
    "duckdb-extensions",
    "cfn-lint",
}
MODEL_KINDS = ("segmenter", "recogniser")
MODEL_FILES = ("segmenter.safetensors", "segmenter.json", "recogniser.safetensors", "recogniser.json")


def _include(spec: str) -> str | None:
    """The file of a `-r FILE` / `--requirement FILE` line, else None."""
    for flag in ("-r", "--requirement"):
        if spec.startswith(flag) and spec[len(flag) :][:1] in (" ", "="):
            return spec[len(flag) + 1 :].strip()
    return None


def requirement_specs(requirements: Path, _seen: frozenset[Path] = frozenset()) -> Iterator[str]:
    """Each requirement line of a file, `-r` includes inlined (paths relative to the includer)."""
    path = requirements.resolve()
    if path in _seen:
        raise ValueError(f"{requirements}: circular -r include")
    for line in path.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if not spec:
            continue
        included = _include(spec)
        if included is None:
            yield spec
        else:
            yield from requirement_specs(path.parent / included, _seen | {path})


def requirement_name(spec: str) -> str:
    name = spec.split(";", 1)[0].split("[", 1)[0]
    for sep in ("==", ">=", "<=", "~=", "!=", ">", "<", " "):
        name = name.split(sep, 1)[0]
    return name.strip().lower().replace("_", "-")


def container_requirements(requirements: Path = REPO_ROOT / "requirements.txt") -> str:
    """The repo's pins, includes inlined, minus what the framework container already has (torch,
    the inference toolkit) or never needs (tests, launching from a workstation)."""
    keep = [s for s in requirement_specs(requirements) if requirement_name(s) not in CONTAINER_EXCLUDES]
    return "\n".join(keep) + "\n"


def _ignore(directory: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n in ("__pycache__", ".pytest_cache") or n.endswith(".pyc")}
    skip |= {n for n in names if n.endswith(WEIGHT_SUFFIXES)}
    if Path(directory).resolve() == (REPO_ROOT / "models").resolve():
        skip.add("default")  # shipped weights + configs: the archive root carries the model
    return skip


def stage_code(dest: Path, default_models: bool = False) -> Path:
    """Copy the project's packages (code only) and a container requirements.txt into dest.
    default_models: ship models/default too (a training job fine-tuning the shipped models)."""
    dest.mkdir(parents=True, exist_ok=True)
    for pkg in CODE_PACKAGES:
        shutil.copytree(REPO_ROOT / pkg, dest / pkg, ignore=_ignore, dirs_exist_ok=True)
    if default_models:
        from models.checkpoints import DEFAULT_DIR  # lazy: torch is slow to import

        shutil.copytree(DEFAULT_DIR, dest / "models" / "default", dirs_exist_ok=True)
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


def _model_tarball(source: str) -> bytes | None:
    """The bytes of a model.tar.gz source (local or s3://); None for a folder."""
    if source.startswith("s3://"):
        from batch import storage

        return storage.read_bytes(source)
    path = Path(source)
    return None if path.is_dir() else path.read_bytes()


def unpack_model(source: str | Path, kind: str, dest: Path) -> Path:
    """Copy <kind>.safetensors + <kind>.json from a folder, a model.tar.gz, or an
    s3://.../model.tar.gz (what a training job writes) into dest; returns dest."""
    names = (f"{kind}.safetensors", f"{kind}.json")
    dest.mkdir(parents=True, exist_ok=True)
    data = _model_tarball(str(source))
    if data is None:
        check_kind(Path(source), kind)
        for name in names:
            shutil.copy2(Path(source) / name, dest / name)
        return dest
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in names if n not in members]
            if missing:
                raise CheckpointError(f"{source} lacks {', '.join(missing)}")
            for name in names:
                member = tar.extractfile(members[name])
                assert member is not None  # a regular file (isfile above)
                (dest / name).write_bytes(member.read())
    except tarfile.TarError as e:
        raise CheckpointError(f"{source} is not a model.tar.gz: {e}") from e
    return dest


def check_kind(models_dir: Path, kind: str) -> None:
    missing = [n for n in (f"{kind}.safetensors", f"{kind}.json") if not (models_dir / n).is_file()]
    if missing:
        raise CheckpointError(f"{models_dir} lacks {', '.join(missing)}")


def gather_models(
    dest: Path, models_dir: Path | None = None, sources: dict[str, str | None] | None = None
) -> Path:
    """Both models in dest: each kind from its own source when given, else from models_dir."""
    from models.checkpoints import DEFAULT_DIR  # lazy: torch is slow to import

    models_dir = Path(models_dir) if models_dir else DEFAULT_DIR
    for kind in MODEL_KINDS:
        unpack_model((sources or {}).get(kind) or models_dir, kind, dest)
    return dest


def build_model_archive(
    out: Path, models_dir: Path | None = None, sources: dict[str, str | None] | None = None
) -> Path:
    """Write model.tar.gz (weights at the root, code/ beside them); returns its path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="htr-package-") as tmp:
        weights = gather_models(Path(tmp) / "weights", models_dir, sources)
        check_models_dir(weights)
        code = stage_code(Path(tmp) / "code")
        shutil.copy2(INFERENCE_SCRIPT, code / "inference.py")
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            for name in sorted(p.name for p in weights.iterdir() if p.is_file()):
                tar.add(weights / name, arcname=name, filter=_normalise)
            _add_tree(tar, code, "code/")
        partial.replace(out)  # never leave a half-written archive under the final name
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="where to write model.tar.gz")
    parser.add_argument(
        "--models", type=Path, default=None, help="checkpoint folder (default: the shipped models/default)"
    )
    for kind in MODEL_KINDS:
        parser.add_argument(
            f"--{kind}",
            default=None,
            metavar="SRC",
            help=f"the {kind} from a folder, model.tar.gz or s3://.../model.tar.gz "
            "(a training job's output); overrides --models for it",
        )


def main(args: argparse.Namespace) -> int:
    from batch.core.errors import HtrError

    sources = {kind: getattr(args, kind) for kind in MODEL_KINDS}
    try:
        path = build_model_archive(args.out, args.models, sources)
    except (HtrError, OSError) as e:
        print(f"htr package-model: {e}", file=sys.stderr)
        return EXIT_FATAL
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.1f} MB); upload it and pass its s3:// URI as --model-data")
    return EXIT_OK
