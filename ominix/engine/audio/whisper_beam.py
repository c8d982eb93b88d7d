"""Beam search for one Whisper window, with CTranslate2's rules (what faster-whisper runs), so
that our beams give faster-whisper's tokens:

- the first step expands only the prompt's one sequence; every later step scores each live beam's
  filtered log-probabilities (LogitRules, then log-softmax) plus its running score, and keeps the
  2 x beam_size best (beam, token) candidates over all beams;
- of the first beam_size candidates, one ending in <|endoftext|> (or any, at the last step) is a
  finished hypothesis, and its place goes to the next candidate beyond beam_size that does not end;
- the search stops once round(beam_size x patience) hypotheses are finished (or, with no length
  penalty, as soon as the best beam finishes), or at the length limit;
- hypotheses rank by score / length ** length_penalty (length without <|endoftext|>).

Each beam has its own self-attention cache; a beam that takes the place of another's child gets a
copy of its parent's cache. The beams' decoder steps are yielded as Rows, so they share forwards
with each other and with every other request of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ominix.engine.audio.whisper_batch import Row
from ominix.engine.audio.whisper_decode import DecodeResult, LogitRules, log_softmax, prefill
from ominix.engine.llm.cache import KVCache


@dataclass
class Beam:
    tokens: list[int]
    score: np.float32
    cache: list
    logprobs: list[float] = field(default_factory=list)


def fork(cache: list) -> list:
    """An independent copy of a decoder cache (the parent keeps appending to its own)."""
    out = []
    for c in cache:
        new = KVCache()
        if c.keys is not None:
            new.keys, new.values = c.keys[:], c.values[:]  # new arrays: writes do not alias
        new.offset = c.offset
        out.append(new)
    return out


def beam_steps(model, tok, cross_kv, initial: list[int], rules: LogitRules, *, beam_size: int,
               patience: float, length_penalty: float, max_new: int, make_cache, sot_index: int):
    """A step generator like decode_steps (whisper_decode.py): yields after the prompt, then a list
    of Rows (one per live beam) per step; returns the best hypothesis as a DecodeResult."""
    cache = make_cache()
    logits, no_speech_prob = prefill(model, tok, cross_kv, initial, cache, sot_index)
    yield
    beams = [Beam([], np.float32(0.0), cache)]
    step_logits = [logits]
    finished: list[tuple[list[int], float, list[float]]] = []
    max_finished = max(1, int(round(beam_size * patience)))
    n_candidates = 2 * beam_size
    eot = tok.eot
    for step in range(max_new):
        last = step + 1 == max_new
        scores, logprobs = [], []
        for beam, lg in zip(beams, step_logits):
            lp = log_softmax(rules.apply(lg, initial + beam.tokens)).astype(np.float32)
            logprobs.append(lp)
            scores.append(beam.score + lp)
        flat = np.concatenate(scores)
        vocab = len(step_logits[0])
        top = np.argpartition(-flat, n_candidates - 1)[:n_candidates]
        top = top[np.argsort(-flat[top], kind="stable")]
        cands = [(int(i) // vocab, int(i) % vocab, flat[i]) for i in top]
        chosen, spare = [], beam_size
        top_finished = False
        for k in range(beam_size):
            parent, token, score = cands[k]
            pick = k
            if token == eot or last:
                beam = beams[parent]
                ended = token == eot
                hyp = beam.tokens + ([] if ended else [token])
                lps = beam.logprobs + ([] if ended else [float(logprobs[parent][token])])
                finished.append((hyp, float(score), lps))
                top_finished = top_finished or k == 0
                for j in range(spare, n_candidates):  # the next candidate that does not end
                    if cands[j][1] != eot:
                        pick, spare = j, j + 1
                        break
            chosen.append(cands[pick])
        if last or len(finished) >= max_finished or (length_penalty == 0 and top_finished):
            break
        beams = _next_beams(beams, chosen, logprobs)
        step_logits = yield [Row(b.tokens[-1], cross_kv, b.cache) for b in beams]
    return _best(finished, length_penalty, no_speech_prob, tok)


def _next_beams(beams: list[Beam], chosen, logprobs) -> list[Beam]:
    taken: set[int] = set()
    out = []
    for parent, token, score in chosen:
        src = beams[parent]
        cache = src.cache if parent not in taken else fork(src.cache)
        taken.add(parent)
        out.append(Beam(src.tokens + [token], np.float32(score), cache,
                        src.logprobs + [float(logprobs[parent][token])]))
    return out


def _best(finished, length_penalty: float, no_speech_prob: float, tok) -> DecodeResult:
    def final(h):
        n = len(h[0])
        if n == 0:  # CTranslate2 divides by 0 ** penalty: an empty hypothesis ranks last
            return h[1] if length_penalty == 0 else -np.inf
        return h[1] / (n ** length_penalty)

    tokens, score, lps = sorted(finished, key=final, reverse=True)[0]
    return DecodeResult(tokens, score, no_speech_prob, 0.0, lps, tok.decode(tokens))
