"""The import rule: dependencies run one way, from the apps down to the shared vocabulary.

    4  apps and jobs       batch.cli, batch.worker, batch.serve, batch.query, batch.exports.cli,
                           batch.sagemaker_code, jobs.*
    3  pipeline + outputs  the rest of batch: pipeline, lines, outputs, exports, ledger, storage,
                           athena, packaging
    2  models, transforms  the networks and their checkpoints; decoding, geometry, synthetic data
    1  core                batch.core: errors (stage, exit codes), the records, ids, manifests

A module may import from its own layer or any layer below it, never from one above. Every
import counts: top-level, inside functions (the lazy ones), relative, and
importlib.import_module("...") with a literal name. tests/ sits above everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("batch", "jobs", "models", "transforms")

# Longest matching prefix wins; the number is the layer (higher may import lower).
LAYER_MAP: dict[str, int] = {
    "batch.core": 1,
    "models": 2,
    "transforms": 2,
    "batch": 3,
    "batch.cli": 4,
    "batch.worker": 4,
    "batch.serve": 4,
    "batch.query": 4,
    "batch.exports.cli": 4,
    "batch.sagemaker_code": 4,
    "jobs": 4,
    "tests": 5,
}
LAYER_NAMES = {1: "core", 2: "models/transforms", 3: "pipeline/outputs", 4: "apps/jobs", 5: "tests"}


def layer_of(module: str) -> int | None:
    """The layer of a project module (None for the standard library and third-party packages)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        layer = LAYER_MAP.get(".".join(parts[:n]))
        if layer is not None:
            return layer
    return None


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(
    source: str, module: str, is_package: bool = False, known: frozenset[str] = frozenset()
) -> list[tuple[int, str]]:
    """(line, module) for every import in `source`, relative ones resolved against `module`.
    `from pkg import name` counts as pkg.name where that is a module (in `known`), else pkg."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in known else target))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
            )
        ):
            found.append((node.lineno, node.args[0].value))
    return sorted(set(found))


def violations(
    source: str, module: str, is_package: bool = False, known: frozenset[str] = frozenset()
) -> list[str]:
    """Each import of `module` that reaches a layer above its own, as 'module:line -> target'."""
    own = layer_of(module)
    if own is None:
        return []
    out = []
    for line, target in imported_modules(source, module, is_package, known):
        layer = layer_of(target)
        if layer is not None and layer > own:
            out.append(f"{module}:{line} ({LAYER_NAMES[own]}) imports {target} ({LAYER_NAMES[layer]})")
    return out


def project_modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for pkg in PACKAGES
        for p in sorted((REPO / pkg).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def test_no_module_imports_from_a_layer_above():
    modules = project_modules()
    assert len(modules) > 50 and "batch.core.errors" in modules and "transforms.synth" in modules
    known = frozenset(modules)
    found = [
        v
        for name, path in modules.items()
        for v in violations(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known)
    ]
    assert not found, "imports against the layer order:\n" + "\n".join(found)


def test_every_project_module_has_a_layer():
    assert not [m for m in project_modules() if layer_of(m) is None]


@pytest.mark.parametrize("package", ["batch", "batch.core"])
def test_package_inits_import_nothing(package):
    """Importing batch.core from models/ or transforms/ runs these two files: they must pull
    in nothing else."""
    path = REPO / Path(*package.split(".")) / "__init__.py"
    assert imported_modules(path.read_text(encoding="utf-8"), package, is_package=True) == []


# ---- the checker itself can fail ---------------------------------------------------------------

KNOWN = frozenset(
    {
        "batch",
        "batch.storage",
        "batch.pipeline",
        "batch.core",
        "batch.core.errors",
        "jobs",
        "jobs.manifests",
        "models",
        "models.charset",
        "transforms",
        "transforms.rasterise",
    }
)


def test_checker_flags_a_fabricated_upward_import():
    source = (
        "import numpy as np\n"
        "from batch.core.errors import HtrError\n"  # down to core: fine
        "from models.charset import CHARSET\n"  # same layer: fine
        "from batch import storage\n"  # up: pipeline/outputs
        "def write_pages():\n"
        "    from jobs.manifests import Sample\n"  # up, inside a function (the old synth)
        "    import batch.pipeline\n"  # up
        "    importlib.import_module('jobs.train')\n"  # up, by name
    )
    found = violations(source, "transforms.synth", known=KNOWN)
    assert found == [
        "transforms.synth:4 (models/transforms) imports batch.storage (pipeline/outputs)",
        "transforms.synth:6 (models/transforms) imports jobs.manifests (apps/jobs)",
        "transforms.synth:7 (models/transforms) imports batch.pipeline (pipeline/outputs)",
        "transforms.synth:8 (models/transforms) imports jobs.train (apps/jobs)",
    ]


def test_checker_resolves_relative_imports():
    # models/checkpoints.py writing `from ..batch import storage` is still an upward import
    assert violations("from ..batch import storage\n", "models.checkpoints", known=KNOWN) == [
        "models.checkpoints:1 (models/transforms) imports batch.storage (pipeline/outputs)"
    ]
    # and from a package's __init__, one dot is the package itself
    assert violations("from . import charset\n", "models", is_package=True, known=KNOWN) == []


def test_checker_allows_downward_and_same_layer_imports():
    source = (
        "from batch.core.schema import Page\nfrom transforms.rasterise import sniff\nimport batch.storage\n"
    )
    assert violations(source, "batch.pipeline", known=KNOWN) == []
    assert violations("from batch.worker import Run\n", "jobs.bench_gpu", known=KNOWN) == []
    assert violations("from batch.pipeline import Pipeline\n", "tests.test_x", known=KNOWN) == []


def test_layer_map_is_ordered_as_documented():
    assert layer_of("batch.core.schema") < layer_of("models.checkpoints") == layer_of("transforms.synth")
    assert layer_of("transforms.synth") < layer_of("batch.pipeline") == layer_of("batch.storage")
    assert layer_of("batch.storage") < layer_of("batch.worker") == layer_of("jobs.train")
    assert layer_of("numpy") is None and layer_of("batchy") is None
