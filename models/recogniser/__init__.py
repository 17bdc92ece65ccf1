"""Recogniser: CNN + BiLSTM + CTC over word or text-line crops, one config per variant.

Models layer: imports models, transforms and batch.core only (tests/test_layers.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.charset import CHARSET

if TYPE_CHECKING:  # the network (torch) only when a model is built: lexicon/ctc need no torch
    from models.recogniser.crnn import CRNN

CONFIGS: dict[str, dict[str, Any]] = {
    # CPU default: ~0.6 M parameters, a few ms per word on one core.
    "crnn_small": dict(height=32, channels=[16, 32, 64, 128], lstm_hidden=128, lstm_layers=2, max_width=512),
    "crnn_medium": dict(
        height=32, channels=[32, 64, 128, 192], lstm_hidden=128, lstm_layers=2, max_width=512
    ),
    "crnn_base": dict(height=32, channels=[64, 128, 192, 256], lstm_hidden=192, lstm_layers=2, max_width=512),
    # Text lines (jobs/line_data.py): same body as crnn_small, long inputs.
    # "unit": "line" tells the pipeline to read whole lines and place words by CTC alignment.
    "crnn_line": dict(
        height=32, channels=[16, 32, 64, 128], lstm_hidden=128, lstm_layers=2, max_width=2048, unit="line"
    ),
    "crnn_line_medium": dict(
        height=32, channels=[32, 64, 128, 192], lstm_hidden=192, lstm_layers=2, max_width=2048, unit="line"
    ),
    "crnn_line_tiny": dict(
        height=32, channels=[8, 16, 16, 32], lstm_hidden=16, lstm_layers=1, max_width=1024, unit="line"
    ),
    "crnn_tiny": dict(height=32, channels=[8, 16, 16, 32], lstm_hidden=16, lstm_layers=1, max_width=256),
}


def build(arch: str, config: dict[str, Any] | None = None, charset: str = CHARSET) -> CRNN:
    from models.recogniser.crnn import CRNN

    cfg = dict(CONFIGS[arch]) if config is None else dict(config)
    cfg.pop("max_width", None)
    cfg.pop("unit", None)
    return CRNN(num_classes=len(charset) + 1, **cfg)


def __getattr__(name: str) -> Any:
    if name == "CRNN":  # models.recogniser.CRNN, imported on first use
        from models.recogniser.crnn import CRNN

        return CRNN
    raise AttributeError(name)
