"""FunASR's token -> text rules and CIF timestamps (numpy only; no MLX).

Paraformer's vocabulary mixes Chinese characters (joined without spaces), English words, and
English BPE pieces ending in "@@" (glued to the next piece); runs of single letters separated by
spaces become upper-case abbreviations. The rules and their quirks follow FunASR's
`sentence_postprocess` / `abbr_dispose` / `ts_prediction_lfr6_standard` so text and timestamps
match what FunASR prints for the same tokens.
"""

from __future__ import annotations

import numpy as np

_DROP = ("<s>", "</s>", "<unk>", "<OOV>")


def _chinese(s: str) -> bool:
    # FunASR compares whole strings, so digits and multi-character CJK tokens count too
    return "\u4e00" <= s <= "\u9fff" or "0" <= s <= "9" or s == "@"


def _clean(s: str) -> str:
    for junk in (" ",) + _DROP:
        s = s.replace(junk, "")
    return s


def _all_chinese(items) -> bool:
    items = [_clean(i) for i in items]
    return bool(items) and all(_chinese(i) for i in items)


def _all_alpha(items) -> bool:
    items = [_clean(i) for i in items]
    if not items:
        return False
    return all((i.isalpha() or i == "'") and not (i.isalpha() and _chinese(i)) for i in items)


def _ascii_letter(w: str) -> bool:
    return len(w) == 1 and w.encode("utf-8").isalpha()


def _abbreviations(words: list[str]) -> dict[int, int]:
    """Start index -> end index of each run "a", " ", "b", (" ", "c")... of single letters."""
    runs, i, n = {}, 0, len(words)
    while i < n:
        if _ascii_letter(words[i]) and i + 2 < n and words[i + 1] == " " and _ascii_letter(words[i + 2]):
            end = i + 2
            while end + 2 < n and words[end + 1] == " " and _ascii_letter(words[end + 2]):
                end += 2
            runs[i] = end
            i = end + 1
        else:
            i += 1
    return runs


def _merge_abbreviations(words: list[str], stamps: list | None):
    runs = _abbreviations(words)
    stamp_index, counter = [], 0  # which timestamp each word uses (spaces take none)
    for w in words:
        stamp_index.append(counter)
        counter += w != " "
    out, out_stamps, i = [], [], 0
    while i < len(words):
        if i in runs:
            end = runs[i]
            out.append("".join(w.upper() for w in words[i:end + 1] if w.encode("utf-8").isalpha()))
            if stamps is not None and stamp_index[end] < len(stamps):
                out_stamps.append([stamps[stamp_index[i]][0], stamps[stamp_index[end]][1]])
            i = end + 1
            continue
        out.append(words[i])
        if stamps is not None and words[i] != " " and stamp_index[i] < len(stamps):
            out_stamps.append(list(stamps[stamp_index[i]]))
        i += 1
    return out, out_stamps


def sentence(tokens: list[str], stamps: list | None = None):
    """(text, words, word_stamps) from tokens and optional per-token [start_ms, end_ms]."""
    middle = [t for t in tokens if t not in _DROP]
    words, word_stamps = [], []
    timed = stamps is not None
    if _all_chinese(middle):
        words = [t.replace(" ", "") for t in middle]
        word_stamps = list(stamps) if timed else []
    else:
        mixed = not _all_alpha(middle)
        piece, glued, begin, end, open_word = "", False, -1, -1, False
        for i, t in enumerate(middle):
            if timed and not open_word:
                begin, end = stamps[i]
            if mixed and _all_chinese(t):
                if glued:
                    words.pop()
                words.append(t)
                glued = False
                if timed:
                    open_word = False
                    word_stamps.append([begin, end])
            elif "@@" in t:
                piece += t.replace("@@", "")
                glued = False
                if timed:
                    open_word, end = True, stamps[i][1]
            elif not mixed or _all_alpha(t):
                words += [piece + t, " "]
                piece, glued = "", True
                if timed:
                    open_word, end = False, stamps[i][1]
                    word_stamps.append([begin, end])
            else:
                words.append(t)  # FunASR gives such tokens no timestamp
    words, merged_stamps = _merge_abbreviations(words, word_stamps if timed else None)
    real = [w for w in words if w != " "]
    return "".join(words).strip(), real, merged_stamps


def cif_peaks(alphas: np.ndarray, threshold: float) -> np.ndarray:
    """FunASR's cif_wo_hidden: running integral, minus the threshold at each fire."""
    out, acc = np.empty_like(alphas), np.float32(0)
    for t, a in enumerate(alphas):
        acc = np.float32(acc + a)
        out[t] = acc
        if acc >= threshold:
            acc = np.float32(acc - threshold)
    return out


def cif_timestamps(alphas: np.ndarray, peaks: np.ndarray, n_tokens: int, frame_seconds: float = 0.06,
                   upsample_rate: int = 1) -> list[list[int]]:
    """Per-token [start_ms, end_ms] as FunASR's ts_prediction_lfr6_standard(us_alphas, us_peaks): fire
    positions are where peaks reach 1; when they do not fire once per token plus one, they are
    re-derived from the alphas normalised to n_tokens + 1. (Plain Paraformer passes its CIF fires
    as the alphas and its alphas as the peaks, so the second path is the one it takes.)"""
    if n_tokens == 0:
        return []
    rate = frame_seconds / upsample_rate
    shift, edge, longest = -1.5, 5, 12
    peaks = np.asarray(peaks, dtype=np.float32)
    place = np.nonzero(peaks >= 1.0 - 1e-4)[0] + shift
    if len(place) != n_tokens + 1:
        weights = np.asarray(alphas, dtype=np.float32)
        weights = weights / (weights.sum(dtype=np.float32) / np.float32(n_tokens + 1))
        peaks = cif_peaks(weights.astype(np.float32), 1.0 - 1e-4)
        place = np.nonzero(peaks >= 1.0 - 1e-4)[0] + shift
    if len(place) == 0:
        return []
    frames = peaks.shape[0]
    spans, labels = [], []
    if place[0] > edge:
        spans.append([0.0, place[0] * rate])
        labels.append(False)
    for i in range(len(place) - 1):
        labels.append(True)
        if place[i + 1] - place[i] <= longest:
            spans.append([place[i] * rate, place[i + 1] * rate])
        else:  # a long gap: the token, then silence
            cut = place[i] + longest
            spans += [[place[i] * rate, cut * rate], [cut * rate, place[i + 1] * rate]]
            labels.append(False)
    if frames - place[-1] > edge:
        mid = (frames + place[-1]) * 0.5
        spans[-1][1] = mid * rate
        spans.append([mid * rate, frames * rate])
        labels.append(False)
    elif spans:
        spans[-1][1] = frames * rate
    return [[int(s * 1000), int(e * 1000)] for (s, e), keep in zip(spans, labels) if keep]
