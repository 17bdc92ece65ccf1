"""CPU inference with ONNX Runtime (models layer): the same checkpoint weights, exported to ONNX
and run by onnxruntime; OrtEngine is the models/engine.py interface over the two sessions.
Outputs match torch to ~1e-6; on the 2-core dev machine both models ran 2.5-3x faster than eager
PyTorch (BENCHMARKS.md, htr-ort).

Exporting costs ~2 s of CPU per model, so the exported graph is cached on disk, keyed by a hash of
the weights, the export shapes and the torch/onnxruntime versions: only the first run after a model
or library change pays it. Cache folder: $HTR_CACHE_DIR, else $XDG_CACHE_HOME/htr-batch, else
~/.cache/htr-batch; an unwritable cache only means exporting in memory every time.

On a cache hit nothing here imports torch (about 3 s of `htr run`'s start-up on 2 cores, #15): the
key is the checkpoint's bytes and the library versions from their package metadata, and the runners
take and return numpy arrays. Only an export (a miss) or a caller with torch tensors imports it."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.engine import CpuDevice

if TYPE_CHECKING:
    import torch

EXPORT_FORMAT = 1  # bump when the export call below changes, so old cached graphs are not reused


def _prob(net: torch.nn.Module) -> torch.nn.Module:
    """The segmenter's inference output only: the text probability map (a module to export)."""
    import torch

    class _Prob(torch.nn.Module):
        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x, with_threshold=False)["prob"]

    return _Prob(net)


_EXPORT_LOCK = threading.Lock()  # torch.onnx.export keeps global state: one export at a time


def cache_dir() -> Path:
    if os.environ.get("HTR_CACHE_DIR"):
        return Path(os.environ["HTR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "htr-batch"


_VERSIONS: list[str] = []


def _versions() -> str:
    """Export format and the exporting/running libraries' versions, from their package metadata
    (importing torch to read torch.__version__ would cost the start-up the cache saves)."""
    if not _VERSIONS:
        from importlib.metadata import PackageNotFoundError, version

        def v(dist: str) -> str:
            try:
                return version(dist)
            except PackageNotFoundError:
                return "-"

        _VERSIONS.append(f"{EXPORT_FORMAT}|{v('torch')}|{v('onnxruntime')}")
    return _VERSIONS[0]


def default_threads() -> int:
    """Intra-op threads for the models: torch's own count where torch is loaded already (a caller
    may have set it), else what torch would pick: OMP_NUM_THREADS / MKL_NUM_THREADS, or the
    physical cores this process may run on."""
    if "torch" in sys.modules:
        return sys.modules["torch"].get_num_threads()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:
        return os.cpu_count() or 1
    cores = set()
    for c in cpus:
        try:
            cores.add(
                Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read_text().strip()
            )
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def graph_key(model: torch.nn.Module, example: torch.Tensor, dynamic: dict[int, str]) -> str:
    """A module's graph: its weights (and buffers), architecture and example shape."""
    h = hashlib.sha256(
        f"{_versions()}|{type(model).__name__}|{tuple(example.shape)}|{sorted(dynamic.items())}".encode()
    )
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    h.update(repr(model).encode())  # layer hyper-parameters that the weights alone do not show
    return h.hexdigest()[:24]


def checkpoint_key(model_dir: Path, kind: str, shape: tuple[int, ...], dynamic: dict[int, str]) -> str:
    """A checkpoint's graph, from its files' bytes: no network is built to look it up, and replaced
    weights never hit an old graph (they miss, are loaded and so are checked)."""
    h = hashlib.sha256(f"{_versions()}|{kind}|{tuple(shape)}|{sorted(dynamic.items())}".encode())
    for suffix in (".json", ".safetensors"):
        h.update((model_dir / f"{kind}{suffix}").read_bytes())
    return h.hexdigest()[:24]


def _export(model: torch.nn.Module, example: torch.Tensor, dynamic: dict[int, str]) -> bytes:
    import torch

    buf = io.BytesIO()
    with _EXPORT_LOCK, warnings.catch_warnings():  # LSTM batch-size warning: no h0/c0 inputs here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            buf,  # type: ignore[arg-type]  # a file-like object works; the stub names paths only
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": dynamic, "y": {0: "b"}},
            opset_version=17,
            dynamo=False,
        )
    return buf.getvalue()


def _cached(key: str, make: Callable[[], bytes]) -> bytes:
    path = cache_dir() / "onnx" / f"{key}.onnx"
    try:
        return path.read_bytes()
    except OSError:
        pass
    graph = make()
    try:  # write-then-rename: a concurrent run or a kill never leaves a half graph under the name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(graph)
        os.replace(tmp, path)
    except OSError:
        pass
    return graph


def exported_graph(model: torch.nn.Module, example: torch.Tensor, dynamic: dict[int, str]) -> bytes:
    """The ONNX bytes for `model`, from the cache when an identical export is there."""
    return _cached(graph_key(model, example, dynamic), lambda: _export(model, example, dynamic))


def _session(graph: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_cpu_mem_arena = False  # the arena keeps a buffer per input shape seen: RSS grew past 2 GiB
    # Idle intra-op threads sleep instead of spinning: between model calls `htr run`'s main thread
    # runs Python (lexicon, lines: half its time) and the decode/output threads need the other
    # core; spinning burned it (a 24-page run: 32.7 -> 26.7 CPU s, the same words; #15).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


# Example input shapes of the two exports (only the shapes and the dynamic axes matter).
def _segmenter_input() -> tuple[tuple[int, ...], dict[int, str]]:
    return (1, 3, 256, 192), {0: "b", 2: "h", 3: "w"}


def _recogniser_input(height: int) -> tuple[tuple[int, ...], dict[int, str]]:
    return (2, 1, height, 64), {0: "b", 3: "w"}


def _example(shape: tuple[int, ...]) -> torch.Tensor:
    import torch

    return torch.rand(*shape)


def _run(session: Any, x: Any) -> Any:
    """One forward: numpy in, numpy out; a (CPU) torch tensor in, a torch tensor out."""
    if isinstance(x, np.ndarray):
        return session.run(None, {"x": np.ascontiguousarray(x, np.float32)})[0]
    import torch

    return torch.from_numpy(session.run(None, {"x": x.contiguous().numpy()})[0])


class OrtSegmenter:
    """Called like the DBNet at inference: (x, with_threshold=False) -> {"prob": array}."""

    def __init__(self, graph: bytes, threads: int):
        self.session = _session(graph, threads)

    @classmethod
    def from_module(cls, net: torch.nn.Module, threads: int) -> OrtSegmenter:
        import torch

        net = net.to(memory_format=torch.contiguous_format)
        shape, dynamic = _segmenter_input()
        return cls(exported_graph(_prob(net), _example(shape), dynamic), threads)

    def __call__(self, x: Any, with_threshold: bool = False) -> dict[str, Any]:
        return {"prob": _run(self.session, x)}


class OrtRecogniser:
    """Called like the CRNN: B x 1 x H x W -> B x T x classes log-probabilities."""

    def __init__(self, graph: bytes, threads: int):
        self.session = _session(graph, threads)

    @classmethod
    def from_module(cls, net: torch.nn.Module, height: int, threads: int) -> OrtRecogniser:
        shape, dynamic = _recogniser_input(height)
        return cls(exported_graph(net, _example(shape), dynamic), threads)

    def __call__(self, x: Any) -> Any:
        return _run(self.session, x)


def to_onnxruntime(
    segmenter: torch.nn.Module, recogniser: torch.nn.Module, crop_height: int, threads: int
) -> tuple[OrtSegmenter, OrtRecogniser]:
    return OrtSegmenter.from_module(segmenter, threads), OrtRecogniser.from_module(
        recogniser, crop_height, threads
    )


def from_checkpoints(
    model_dir: str | Path, crop_height: int, threads: int
) -> tuple[OrtSegmenter, OrtRecogniser]:
    """Both runners straight from a checkpoint folder. On a cache hit no network is built and
    neither torch nor torchvision is imported: start-up is reading two files."""
    model_dir = Path(model_dir)

    def graph(kind: str, shape: tuple[int, ...], dynamic: dict[int, str]) -> bytes:
        def export() -> bytes:
            from models import checkpoints

            net = checkpoints.load(model_dir, kind)[0]
            return _export(_prob(net) if kind == "segmenter" else net, _example(shape), dynamic)

        try:
            key = checkpoint_key(model_dir, kind, shape, dynamic)
        except OSError:  # a missing file: loading names it (CheckpointError)
            return export()
        return _cached(key, export)

    return (
        OrtSegmenter(graph("segmenter", *_segmenter_input()), threads),
        OrtRecogniser(graph("recogniser", *_recogniser_input(crop_height)), threads),
    )


class OrtEngine:
    """The ONNX Runtime engine (models/engine.py's interface): CPU, fp32, numpy in and out."""

    name = "onnxruntime"
    bf16_cpu = False

    def __init__(self, segmenter: Any, recogniser: Any, device: Any = None):
        """segmenter, recogniser: OrtSegmenter / OrtRecogniser (or anything called like them)."""
        self.segmenter, self.recogniser = segmenter, recogniser
        self.device = device if device is not None else CpuDevice()

    def segment(self, pages: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pages.transpose(0, 3, 1, 2), dtype=np.float32)
        x /= 255
        return np.asarray(self.segmenter(x, with_threshold=False)["prob"])

    def recognise(self, crops: np.ndarray) -> np.ndarray:
        return np.asarray(self.recogniser(crops))
