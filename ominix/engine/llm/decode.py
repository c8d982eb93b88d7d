"""One sequence's decoding: sampled tokens in, text out. The only copy of this logic.

A `Decoder` owns what turns a stream of sampled token ids into client-facing text: the streaming
detokenizer, stop strings (which may span tokens), the tokenizer's end-of-turn ids and the token
limit. `ominix run` and `bench` (through `generate.stream_generate`) and the server (through
`jobs.Sequence`, one per batch row) all decode with it, so the same tokens give the same text and
the same finish reason everywhere.
"""

from __future__ import annotations

from ominix.engine.llm.tokenizer import StopMatcher


class Decoder:
    def __init__(self, tokenizer, max_tokens: int, stop: list[str] | None = None):
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        self.detokenizer = tokenizer.detokenizer()
        self.stopper = StopMatcher(stop)
        self.eos = tokenizer.eos_token_ids
        self.max_tokens = max_tokens
        self.count = 0
        self.finish: str | None = None  # None while running, then "stop" or "length"

    def add(self, token: int) -> str:
        """Take the next sampled token; return the text it releases. Sets `finish` at the end."""
        self.count += 1
        if token in self.eos:
            self.finish = "stop"
            return self._flush()[0]
        text, stopped = self.stopper.feed(self.detokenizer.add_token(token))
        if stopped:
            self.finish = "stop"
        elif self.count == self.max_tokens:
            tail, stopped = self._flush()
            text += tail
            self.finish = "stop" if stopped else "length"
        return text

    def is_eos(self, token: int) -> bool:
        return token in self.eos

    def _flush(self) -> tuple[str, bool]:
        # The end: release text held back by the detokenizer and the stop matcher.
        tail, stopped = self.stopper.feed(self.detokenizer.finalize())
        return (tail if stopped else tail + self.stopper.flush()), stopped
