"""CTC read-outs of the recogniser's B x T x C log-probabilities, in numpy: greedy best-path decoding,
a text line split into words with their frames, and the exact CTC likelihood of given texts.

No torch here: `htr run` on the ONNX Runtime backend gets numpy arrays from its sessions and never
imports torch (#15, ~3 s of start-up). Torch tensors are accepted too (jobs/train.py, tests): they
are converted on the way in.

Models layer: imports models, transforms and batch.core only (tests/test_layers.py). Used by the
recogniser runner (models/recogniser/runner.py) and training.
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
    best = lp.argmax(-1)  # B x T (ties: the first class, as torch)
    best_lp = np.take_along_axis(lp, best[..., None], -1)[..., 0].astype(np.float32)
    b, t = best.shape
    n = np.minimum(as_numpy(lengths).astype(np.int64), t) if lengths is not None else np.full(b, t)
    inside = np.arange(t)[None, :] < n[:, None]
    new = np.ones_like(best, dtype=bool)
    new[:, 1:] = best[:, 1:] != best[:, :-1]
    emits = (best != 0) & new & inside  # frames that start a character
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
            end = t + 1  # the character goes on
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


def ctc_log_likelihoods(
    log_probs: Any, targets: list[list[int]], rows: Any = None, lengths: Any = None
) -> np.ndarray:
    """log P(target | frames) under CTC (blank = class 0) for each target: what torch's ctc_loss
    computes (as -loss), all targets in one forward pass. A target the frames cannot hold scores -inf.

    log_probs: T x C (every target over all its frames), or B x T x C with rows (each target's
    sample) and lengths (each sample's frames; default T).

    The forward recursion runs on probabilities (float32, as torch's CPU ctc_loss) rescaled to a
    maximum of 1 at every frame, the log of the scales added back. Targets are taken longest sample
    first, so at frame t only those still running are computed (a prefix of the rows) and each is
    read out at its own last frame: a page's unknown words, each with its ~100 candidates, cost one
    short loop over frames, without padding (#15: 0.5 -> 0.2 s of CPU on 24 letters)."""
    k = len(targets)
    if k == 0:
        return np.zeros(0)
    lp = as_numpy(log_probs)
    if lp.ndim == 2:
        lp = lp[None]
    rows = np.zeros(k, np.int64) if rows is None else as_numpy(rows).astype(np.int64)
    lengths = (
        np.full(lp.shape[0], lp.shape[1])
        if lengths is None
        else np.minimum(as_numpy(lengths).astype(np.int64), lp.shape[1])
    )
    frames = lengths[rows]
    n = np.array([len(tg) for tg in targets])
    order = np.argsort(-frames, kind="stable")  # longest first: the running rows are a prefix
    frames, n, rows = frames[order], n[order], rows[order]
    s_len = 2 * int(n.max()) + 1
    ext = np.zeros((k, s_len), np.int64)  # blank, c1, blank, c2, ..., blank (then blanks)
    for row, j in enumerate(order):
        ext[row, 1 : 2 * len(targets[j]) : 2] = targets[j]
    # s-2 -> s is allowed onto a label unlike the one before it; nothing lies past a target's end
    skip = ((ext[:, 2:] != 0) & (ext[:, 2:] != ext[:, :-2])).astype(np.float32)
    valid = (np.arange(s_len)[None, :] <= 2 * n[:, None]).astype(np.float32)
    out = np.full(k, -np.inf)
    t_len = int(frames[0])
    if t_len > 0:
        probs = np.exp(lp[:, :t_len].astype(np.float32))  # B x T x C
        alpha = probs[rows, 0][np.arange(k)[:, None], ext] * valid
        alpha[:, 2:] = 0.0  # a path starts on the first blank or label
        log_scale = np.zeros(k)
        ends = 2 * n
        active = k
        with np.errstate(divide="ignore"):
            for t in range(t_len):
                if t > 0:
                    a = alpha[:active]
                    new = a.copy()
                    new[:, 1:] += a[:, :-1]
                    new[:, 2:] += skip[:active] * a[:, :-2]
                    new *= probs[rows[:active], t][np.arange(active)[:, None], ext[:active]]
                    new *= valid[:active]
                    top = new.max(1)
                    top[top == 0] = 1.0  # nothing reachable: stays 0 (-inf below)
                    new /= top[:, None]
                    log_scale[:active] += np.log(top)
                    alpha[:active] = new
                done = active  # rows whose last frame is t: read out
                while done > 0 and frames[done - 1] == t + 1:
                    done -= 1
                if done < active:
                    idx = np.arange(done, active)
                    end = alpha[idx, ends[idx]].astype(np.float64) + np.where(
                        n[idx] > 0, alpha[idx, np.maximum(ends[idx] - 1, 0)], 0.0
                    )
                    out[idx] = np.log(end) + log_scale[idx]
                    active = done
                if active == 0:
                    break
    else:
        out[n == 0] = 0.0
    result = np.empty(k)
    result[order] = out
    return result
