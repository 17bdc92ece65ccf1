"""The PyTorch engine (models layer; see models/engine.py for the interface): eager PyTorch on the
CPU (fp32, or bf16 autocast where oneDNN runs it natively) or a GPU (fp16/bf16 autocast).

Imported only where torch runs the models: `htr run` on the ONNX path never loads this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from models.fuse import fuse_batchnorm
from models.recogniser.ctc import as_numpy


class TorchEngine:
    """Both networks on one torch device. BatchNorm folded into the convolutions; on the CPU the
    weights and inputs are channels-last (oneDNN's convolutions and pooling are fastest on NHWC:
    2x for the recogniser in bf16)."""

    name = "torch"

    def __init__(
        self,
        segmenter: torch.nn.Module,
        recogniser: torch.nn.Module,
        device: Any,
        precision: str = "auto",
        bf16_cpu: bool = False,
    ):
        self.device = torch.device(str(device))
        self.precision, self.bf16_cpu = precision, bf16_cpu
        fuse_batchnorm(segmenter)
        fuse_batchnorm(recogniser)
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            segmenter = segmenter.to(memory_format=torch.channels_last)
            recogniser = recogniser.to(memory_format=torch.channels_last)
        self.segmenter, self.recogniser = segmenter, recogniser

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda" and self.precision != "fp32":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        if self.bf16_cpu:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        with torch.inference_mode(), self._autocast():
            yield

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def segment(self, pages: np.ndarray) -> np.ndarray:
        # converted on the device: a quarter of the bytes to move
        x = self._layout(torch.from_numpy(pages).to(self.device).permute(0, 3, 1, 2).float().div_(255))
        with self._inference():
            return as_numpy(self.segmenter(x, with_threshold=False)["prob"])

    def recognise(self, crops: np.ndarray) -> np.ndarray:
        x = self._layout(torch.from_numpy(crops).to(self.device))
        with self._inference():
            return as_numpy(self.recogniser(x))
