"""CTC read-outs of the recogniser's B x T x C log-probabilities, in numpy: greedy best-path decoding,
a text line split into words with their frames, and the exact CTC likelihood of given texts.

No torch here: `htr run` on the ONNX Runtime backend gets numpy arrays from its sessions and never
imports torch (#15, ~3 s of start-up). Torch tensors are accepted too (jobs/train.py, tests): they
are converted on the way in.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def as_numpy(x: Any) -> np.ndarray:
    """A numpy array of x; a torch tensor (any device, bf16 too) via the CPU, floats as float32."""
    if hasattr(x, "detach"):
        x = x.detach()
        if x.is_floating_point():
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def greedy_decode(log_probs: Any, lengths: Any = None) -> tuple[list[list[int]], list[float]]:
    """Best path per sample, and a confidence: the geometric mean of the per-frame
    maximum probabilities over the frames that emit a character (all frames if none).
    log_probs: B x T x C; lengths: frames per sample (None: all T)."""
    lp = as_numpy(log_probs)
    best = lp.argmax(-1)                                  # B x T (ties: the first class, as torch)
    best_lp = np.take_along_axis(lp, best[..., None], -1)[..., 0].astype(np.float32)
    b, t = best.shape
    n = np.minimum(as_numpy(lengths).astype(np.int64), t) if lengths is not None else np.full(b, t)
    inside = np.arange(t)[None, :] < n[:, None]
    new = np.ones_like(best, dtype=bool)
    new[:, 1:] = best[:, 1:] != best[:, :-1]
    emits = (best != 0) & new & inside                    # frames that start a character
    use = np.where(emits.any(1, keepdims=True), emits, inside)
    mean = (best_lp * use).sum(1, dtype=np.float32) / np.maximum(use.sum(1), 1).astype(np.float32)
    confs = np.where(use.any(1), np.exp(mean), np.float32(0)).tolist()
    rows = best.tolist()
    return [row[:k] for row, k in zip(rows, n.tolist())], confs


def word_spans(log_probs: Any, frames: int, space: int) -> list[tuple[list[int], int, int, float]]:
    """Greedy CTC reading of one text line (T x C), split into words at the space class.

    Returns (classes, first frame, end frame, confidence) per word; the frames say where the word
    lies along the line (frame stride = the CNN's width reduction), the confidence is the geometric
    mean of the probabilities of the frames that emit its characters (as greedy_decode does)."""
    lp = as_numpy(log_probs)[:frames]
    if lp.shape[0] == 0:
        return []
    best_i = lp.argmax(-1)
    best_lp = np.take_along_axis(lp, best_i[:, None], -1)[:, 0].astype(np.float32)
    best, best_lps = best_i.tolist(), best_lp.tolist()
    words: list[tuple[list[int], int, int, float]] = []
    chars: list[int] = []
    lps: list[float] = []
    start = end = 0
    prev = 0
    for t, k in enumerate(best):
        if k != 0 and k != space and k == prev and chars:
            end = t + 1                                    # the character goes on
        elif k != prev and k != 0 and k != space:
            if not chars:
                start = t
            chars.append(k)
            lps.append(best_lps[t])
            end = t + 1
        elif k == space and k != prev and chars:
            words.append((chars, start, end, math.exp(sum(lps) / len(lps))))
            chars, lps = [], []
        prev = k
    if chars:
        words.append((chars, start, end, math.exp(sum(lps) / len(lps))))
    return words


def ctc_log_likelihoods(log_probs: Any, targets: list[list[int]], rows: Any = None, lengths: Any = None
                        ) -> np.ndarray:
    """log P(target | frames) under CTC (blank = class 0) for each target: what torch's ctc_loss
    computes (as -loss), all targets in one forward pass. A target the frames cannot hold scores -inf.

    log_probs: T x C (every target over all its frames), or B x T x C with rows (each target's
    sample) and lengths (each sample's frames; default T). A shorter sample's missing frames are
    read as certain blanks, which leaves its likelihood as it is. The forward recursion runs on
    probabilities rescaled at every frame (the log of the scales added back at the end)."""
    k = len(targets)
    if k == 0:
        return np.zeros(0)
    lp = as_numpy(log_probs)
    if lp.ndim == 2:
        lp = lp[None]
    rows = np.zeros(k, np.int64) if rows is None else as_numpy(rows).astype(np.int64)
    lengths = (np.full(lp.shape[0], lp.shape[1]) if lengths is None
               else np.minimum(as_numpy(lengths).astype(np.int64), lp.shape[1]))
    frames = lengths[rows]                                # K
    t_len = int(frames.max())
    n = np.array([len(tg) for tg in targets])
    s_len = 2 * int(n.max()) + 1
    ext = np.zeros((k, s_len), np.int64)               # blank, c1, blank, c2, ..., blank (then blanks)
    for row, tg in enumerate(targets):
        ext[row, 1:2 * len(tg):2] = tg
    if t_len == 0:
        return np.where(n == 0, 0.0, -np.inf)
    skip = np.zeros((k, s_len))                         # 1 where s-2 -> s is allowed: a label unlike
    skip[:, 2:] = (ext[:, 2:] != 0) & (ext[:, 2:] != ext[:, :-2])   # the label before it
    emit = np.exp(lp[rows[:, None], :t_len, ext].astype(np.float64))   # K x S x T
    emit = np.ascontiguousarray(emit.transpose(2, 0, 1))               # T x K x S
    past = np.arange(t_len)[:, None] >= frames[None, :]                # T x K: beyond the sample
    if past.any():
        emit[past] = (ext == 0)[np.nonzero(past)[1]]
    alpha = np.zeros((k, s_len))
    alpha[:, :2] = emit[0, :, :2]
    skip = skip[:, 2:]
    hop = np.empty((k, s_len - 2))
    log_scale = np.zeros(k)
    with np.errstate(divide="ignore"):
        for t in range(1, t_len):
            new = alpha.copy()
            new[:, 1:] += alpha[:, :-1]
            np.multiply(skip, alpha[:, :-2], out=hop)
            new[:, 2:] += hop
            new *= emit[t]
            alpha = new
            if t % 8 == 0 or t == t_len - 1:   # rescale: a path's probability never underflows
                top = alpha.max(1)
                top[top == 0] = 1.0              # nothing reachable: stays 0 (-inf below)
                alpha /= top[:, None]
                log_scale += np.log(top)
        rows_k = np.arange(k)
        end = alpha[rows_k, 2 * n] + np.where(n > 0, alpha[rows_k, np.maximum(2 * n - 1, 0)], 0.0)
        return np.log(end) + log_scale
