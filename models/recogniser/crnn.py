"""CRNN: a small VGG-style CNN turns a word image into a sequence of column features,
a BiLSTM reads it, a linear layer scores characters per column; CTC aligns them to text.

Input: Bx1x32xW, ink bright (1) on dark paper (0), so zero padding reads as blank paper.
Output: B x T x C log-probabilities with T = W / 4.

Models layer: imports models, transforms and batch.core only (tests/test_layers.py). Run by an
engine (models/engine.py) for the recogniser runner.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# the CTC read-outs live in models.recogniser.ctc (numpy, no torch); importable from here too
from models.recogniser.ctc import greedy_decode, word_spans  # noqa: F401


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Pool(nn.Module):
    """Non-overlapping max pooling (kernel = stride = (kh, kw), floor mode) as the maximum of strided
    views. Same result as nn.MaxPool2d; on the CPU in channels-last bf16 it is 3x faster (8 vs 26 ms
    for the first pooling of a 256-crop batch), and pooling was a fifth of the CNN's time."""

    def __init__(self, kh: int, kw: int):
        super().__init__()
        self.kh, self.kw = kh, kw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // self.kh * self.kh, x.shape[-1] // self.kw * self.kw
        views = [x[..., i : h : self.kh, j : w : self.kw] for i in range(self.kh) for j in range(self.kw)]
        out = views[0]
        for v in views[1:]:
            out = torch.maximum(out, v)
        return out


class CRNN(nn.Module):
    def __init__(
        self,
        num_classes: int,
        height: int = 32,
        channels: Sequence[int] = (32, 64, 128, 192),
        lstm_hidden: int = 128,
        lstm_layers: int = 2,
    ):
        super().__init__()
        c0, c1, c2, c3 = channels
        self.height = height
        self.cnn = nn.Sequential(
            *_conv(1, c0),
            Pool(2, 2),  # H/2, W/2
            *_conv(c0, c1),
            Pool(2, 2),  # H/4, W/4
            *_conv(c1, c2),
            *_conv(c2, c2),
            Pool(2, 1),  # H/8: keep width for CTC
            *_conv(c2, c3),
            *_conv(c3, c3),
            Pool(2, 1),  # H/16
        )
        feat_h = height // 16
        self.proj = nn.Linear(c3 * feat_h, lstm_hidden)
        self.rnn = nn.LSTM(
            lstm_hidden,
            lstm_hidden,
            num_layers=lstm_layers,
            bidirectional=True,
            batch_first=True,
            dropout=0.1 if lstm_layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(2 * lstm_hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.cnn(x)  # B x C x h x T
        b, c, h, t = f.shape
        f = f.permute(0, 3, 1, 2).reshape(b, t, c * h)  # B x T x (C*h)
        f, _ = self.rnn(torch.relu(self.proj(f)))
        # Scores in fp32 even under bf16/fp16 autocast: a bf16 log-softmax has steps of 0.06 nats
        # near the top, which would quantise the confidences and the lexicon's CTC scores.
        with torch.autocast(f.device.type, enabled=False):
            return self.classifier(f.float()).log_softmax(-1)
