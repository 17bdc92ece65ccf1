"""The engine interface: what runs the two networks, PyTorch or ONNX Runtime (models layer).

The runners (models/segmenter/runner.py, models/recogniser/runner.py) pre-process on numpy, hand
the batch to an Engine and post-process its numpy output; they never ask which engine it is. Two
implement it: models.torch_engine.TorchEngine (eager PyTorch: CPU fp32/bf16 autocast, CUDA fp16/
bf16) and models.onnx_backend.OrtEngine (ONNX Runtime on the CPU, fp32). make_engine picks one.

This module imports neither torch nor onnxruntime: choosing the ONNX path with cached graphs
(the CPU default) must not cost torch's ~3 s import (#15, tests/test_startup.py).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch


class Engine(Protocol):
    """Runs the segmenter and the recogniser on numpy batches, returns numpy arrays."""

    name: str  # "torch" | "onnxruntime"
    device: Any  # .type: "cpu" | "cuda"
    bf16_cpu: bool  # bf16 autocast on the CPU (torch only)

    def segment(self, pages: np.ndarray) -> np.ndarray:
        """N x H x W x 3 uint8 pages (H, W multiples of 32) -> N x C x H x W float32 probability
        maps (channel 0: words; 1: lines, for a segmenter with a line head)."""
        ...

    def recognise(self, crops: np.ndarray) -> np.ndarray:
        """B x 1 x H x W float32 ink maps -> B x T x classes float32 CTC log-probabilities."""
        ...


@dataclass(frozen=True)
class CpuDevice:
    """The CPU, as far as the pipeline asks (`.type`), without importing torch for a torch.device."""

    type: str = "cpu"
    index: None = None

    def __str__(self) -> str:
        return "cpu"


def _cuda_possible() -> bool:
    """False where torch cannot see a GPU: no NVIDIA driver library to load, no AMD GPU driver.
    Spares a CPU machine importing torch only to hear torch.cuda.is_available() say no."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            pass
    return os.path.exists("/dev/kfd")  # ROCm builds of torch answer torch.cuda too


def pick_device(device: str = "auto") -> torch.device | CpuDevice:
    if device == "cpu" or (device == "auto" and not _cuda_possible()):
        return CpuDevice()
    import torch

    if device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else CpuDevice()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


def is_torch_module(obj: Any) -> bool:
    return "torch" in sys.modules and isinstance(obj, sys.modules["torch"].nn.Module)


def _cpu_flags() -> set[str] | None:
    """The x86 CPU's feature flags (Linux), None where they cannot be read."""
    import platform

    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def native_cpu_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX512-BF16 / AMX, AVX-NE-CONVERT): torch's answer,
    asked only where the CPU's flags leave it possible (torch costs ~3 s to import)."""
    flags = _cpu_flags()
    if flags is not None and not any(f.startswith(("avx512", "amx", "avx_ne_convert")) for f in flags):
        return False
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_bf16(precision: str) -> bool:
    """bf16 on the CPU only where oneDNN runs it natively (AVX512-BF16 / AMX): there it is
    ~1.7x faster than fp32 for our convolutions; elsewhere it would be emulated and slower."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    if precision == "fp32":
        return False
    native = native_cpu_bf16()
    if precision == "bf16" and not native:
        raise ValueError("--precision bf16 asked for, but this CPU has no native bf16 (AVX512-BF16/AMX)")
    return precision != "fp32" and native


def pick_backend(wanted: str, device: Any, bf16_cpu: bool = False) -> str:
    """CPU: PyTorch with bf16 autocast where the CPU has native bf16 (fastest, BENCHMARKS.md),
    otherwise ONNX Runtime in fp32 (faster than eager fp32 PyTorch). GPUs stay on PyTorch."""
    if device.type != "cpu" or wanted == "torch" or (wanted == "auto" and bf16_cpu):
        return "torch"
    import importlib.util

    try:
        import onnxruntime  # noqa: F401

        if importlib.util.find_spec("onnx") is None:  # the exporter needs it (found, not imported:
            raise ImportError("No module named 'onnx'")  # a cached graph never loads it)
    except ImportError:
        if wanted == "onnxruntime":
            raise
        return "torch"
    return "onnxruntime"


def make_engine(
    segmenter: Any,
    recogniser: Any,
    device: Any,
    backend: str = "auto",
    precision: str = "auto",
    crop_height: int = 32,
) -> Engine:
    """The engine for two networks: torch modules (exported to ONNX Runtime when that is the
    backend picked) or ONNX Runtime runners already made from a checkpoint (onnx_backend).
    device: a torch.device, CpuDevice, or a name ("cpu", "cuda", "auto")."""
    if isinstance(device, str):
        device = CpuDevice() if device == "cpu" else pick_device(device)
    if is_torch_module(segmenter) or is_torch_module(recogniser):
        import torch

        device = torch.device(str(device))
        segmenter = segmenter.to(device).eval() if is_torch_module(segmenter) else segmenter
        recogniser = recogniser.to(device).eval() if is_torch_module(recogniser) else recogniser
    bf16 = device.type == "cpu" and cpu_bf16(precision)
    if pick_backend(backend, device, bf16) == "onnxruntime":
        from models.onnx_backend import OrtEngine, default_threads, to_onnxruntime

        if is_torch_module(segmenter):
            segmenter, recogniser = to_onnxruntime(segmenter, recogniser, crop_height, default_threads())
        return OrtEngine(segmenter, recogniser, device)
    from models.torch_engine import TorchEngine

    return TorchEngine(segmenter, recogniser, device, precision, bf16)
