"""CPU inference with ONNX Runtime: the same checkpoint weights, exported to ONNX in memory when the
Pipeline is built (a few seconds), run by onnxruntime. Outputs match torch to ~1e-6; on the 2-core dev
machine both models ran 2.5-3x faster than eager PyTorch (BENCHMARKS.md, htr-ort)."""
from __future__ import annotations

import io
import threading
import warnings

import torch


class _Prob(torch.nn.Module):
    """The segmenter's inference output only: the text probability map."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, with_threshold=False)["prob"]


_EXPORT_LOCK = threading.Lock()  # torch.onnx.export keeps global state: one export at a time


def _session(model: torch.nn.Module, example: torch.Tensor, dynamic: dict[int, str], threads: int):
    import onnxruntime as ort

    buf = io.BytesIO()
    with _EXPORT_LOCK, warnings.catch_warnings():  # LSTM batch-size warning: no h0/c0 inputs here
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), example, buf, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": dynamic, "y": {0: "b"}}, opset_version=17, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_cpu_mem_arena = False  # the arena keeps a buffer per input shape seen: RSS grew past 2 GiB
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


class OrtSegmenter:
    """Called like the DBNet at inference: (x, with_threshold=False) -> {"prob": tensor}."""

    def __init__(self, net: torch.nn.Module, threads: int):
        net = net.to(memory_format=torch.contiguous_format)
        self.session = _session(_Prob(net), torch.rand(1, 3, 256, 192), {0: "b", 2: "h", 3: "w"}, threads)

    def __call__(self, x: torch.Tensor, with_threshold: bool = False) -> dict[str, torch.Tensor]:
        return {"prob": torch.from_numpy(self.session.run(None, {"x": x.contiguous().numpy()})[0])}


class OrtRecogniser:
    """Called like the CRNN: B x 1 x H x W -> B x T x classes log-probabilities."""

    def __init__(self, net: torch.nn.Module, height: int, threads: int):
        self.session = _session(net, torch.rand(2, 1, height, 64), {0: "b", 3: "w"}, threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"x": x.contiguous().numpy()})[0])


def to_onnxruntime(segmenter: torch.nn.Module, recogniser: torch.nn.Module, crop_height: int,
                   threads: int) -> tuple[OrtSegmenter, OrtRecogniser]:
    return OrtSegmenter(segmenter, threads), OrtRecogniser(recogniser, crop_height, threads)
