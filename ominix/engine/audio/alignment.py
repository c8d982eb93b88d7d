"""Word timestamps from cross-attention, the way openai-whisper finds them: the alignment heads'
attention over audio frames, normalised per frame, median-filtered, then a monotonic path through
it (dynamic time warping) from each token to the frames it was read from."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ominix.engine.audio.types import Word

TOKENS_PER_SECOND = 50  # audio positions per second (1500 per 30 s)
MEDIAN_WIDTH = 7
PREPEND = "\"'“¿([{-"
APPEND = "\"'.。,，!！?？:：”)]}、"


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over the last axis with reflect padding (odd width)."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.median(windows, axis=-1)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest monotonic path through cost [N, M] from (0, 0) to (N-1, M-1); vectorised over
    anti-diagonals (each cell needs only the two previous diagonals). Ties prefer the diagonal,
    then the vertical step, as openai-whisper's `dtw_cpu` does."""
    N, M = cost.shape
    acc = np.full((N + 1, M + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.full((N + 1, M + 1), -1, dtype=np.int8)
    for d in range(2, N + M + 1):  # i + j == d, 1 <= i <= N, 1 <= j <= M
        i = np.arange(max(1, d - M), min(N, d - 1) + 1)
        j = d - i
        c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        t = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        acc[i, j] = cost[i - 1, j - 1] + np.choose(t, [c0, c1, c2])
        trace[i, j] = t
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j, path = N, M, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    path = np.array(path[::-1])
    return path[:, 0], path[:, 1]


def find_words(model, tok, sot_sequence: list[int], text_tokens: list[int], cross_kv,
               num_frames: int, language: str | None, offset: float) -> list[tuple[Word, int]]:
    """Words of `text_tokens` with global times; each paired with the index of its first token."""
    if not text_tokens:
        return []
    tokens = [*sot_sequence, tok.no_timestamps, *text_tokens, tok.eot]
    inp = mx.array([tokens])
    logits = model.decode(inp, cross_kv)[0, len(sot_sequence):, :tok.eot].astype(mx.float32)
    probs = np.array(mx.softmax(logits, axis=-1))
    text_probs = probs[np.arange(len(text_tokens)), text_tokens]
    qk = np.array(model.alignment_qk(inp, cross_kv)[:, 0].astype(mx.float32))  # [heads, L, frames]
    qk = qk[:, :, : max(1, num_frames // 2)]
    w = np.exp(qk - qk.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    w = (w - w.mean(axis=-2, keepdims=True)) / (w.std(axis=-2, keepdims=True) + 1e-10)
    w = median_filter(w, MEDIAN_WIDTH)
    matrix = w.mean(axis=0)[len(sot_sequence):-1]
    text_idx, time_idx = dtw(-matrix)

    words, word_tokens = tok.split_words(text_tokens + [tok.eot], language)
    if len(word_tokens) <= 1:
        return []
    bounds = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    jump_times = time_idx[jumps] / TOKENS_PER_SECOND
    starts, ends = jump_times[bounds[:-1]], jump_times[bounds[1:]]
    out = []
    for k, (word, s, e) in enumerate(zip(words[:-1], starts, ends)):
        p = float(np.mean(text_probs[bounds[k]:bounds[k + 1]]))
        out.append((Word(round(offset + float(s), 3), round(offset + float(e), 3), word, p), int(bounds[k])))
    return merge_punctuation(out)


def merge_punctuation(words: list[tuple[Word, int]]) -> list[tuple[Word, int]]:
    """Attach opening marks to the next word and closing marks to the previous one."""
    out: list[tuple[Word, int]] = []
    carry: tuple[Word, int] | None = None
    for w, idx in words:
        if carry is not None:
            w = Word(w.start, w.end, carry[0].word + w.word, w.probability)
            idx, carry = carry[1], None
        stripped = w.word.strip()
        if stripped and all(c in PREPEND for c in stripped) and w.word.startswith(" "):
            carry = (w, idx)
            continue
        if out and stripped and all(c in APPEND for c in stripped) and not w.word.startswith(" "):
            prev, pidx = out[-1]
            out[-1] = (Word(prev.start, prev.end, prev.word + w.word, prev.probability), pidx)
            continue
        out.append((w, idx))
    if carry is not None:
        out.append(carry)
    return out
