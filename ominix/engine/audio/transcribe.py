"""TranscribeJob: speech to text over any `SpeechRecognizer`, one bounded unit per worker step (a
window; with a stepped recognizer such as Whisper, the encoder or one decoder pass).

Audio is decoded lazily (engine/audio/decode.py), so an hour-long file holds about one window in
memory. Timestamps are global: each window's offset is added by the recognizer. A recognizer may
return how many seconds of its window it consumed (Whisper stops at its last complete segment, and
the next window starts there); one that does not is given windows cut at the quietest moment near
their end, so no word is split between two windows.

Events sent with `ticket.emit`: `SegmentEvent` for each recognised segment, `ProgressEvent` after
each window, and with `early_text=True` a `TextEvent` for each piece of text as soon as it is
decoded (a stepped recognizer reports each segment when its closing timestamp is decoded, before
its window ends; their concatenation is the transcript, unless a window's first attempt falls back
to a higher temperature after it streamed: the replacement's text then follows, and the
transcript is the replacement's). The result is a `Transcript`.

Recognizers that condition on earlier text (Whisper: `encode_prompt`) get the tokens of the
segments so far (and the prompt), as openai-whisper and faster-whisper pass them; the history is
dropped after a window decoded hotter than PROMPT_RESET_TEMPERATURE (its text is unreliable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ominix.engine.audio.decode import SILENCE_PEAK, AudioStream, SilentAudioError, open_audio
from ominix.engine.audio.types import SAMPLE_RATE, Segment, Transcript
from ominix.engine.job import StepJob

CUT_SEARCH = 0.2  # fraction of a window's end searched for the quietest cut point
CUT_FRAME = int(0.025 * SAMPLE_RATE)
PROMPT_RESET_TEMPERATURE = 0.5  # faster-whisper's prompt_reset_on_temperature


@dataclass
class SegmentEvent:
    segment: Segment
    index: int  # 0, 1, 2 ... over the whole transcript


@dataclass
class TextEvent:
    """Text as soon as it is known: `tokens`/`logprobs` are its text tokens and their choices."""

    text: str
    tokens: list[int]
    logprobs: list[float]


@dataclass
class ProgressEvent:
    seconds_done: float
    seconds_total: float | None


def quietest_cut(audio: np.ndarray, search: float = CUT_SEARCH) -> int:
    """Sample index in the last `search` of `audio` where 25 ms of it is quietest."""
    start = int(len(audio) * (1 - search))
    tail = audio[start:]
    n = len(tail) // CUT_FRAME
    if n < 2:
        return len(audio)
    energy = (tail[: n * CUT_FRAME].reshape(n, CUT_FRAME) ** 2).mean(axis=1)
    return start + int(np.argmin(energy)) * CUT_FRAME + CUT_FRAME // 2


class TranscribeJob(StepJob):
    """source: a path, bytes, a binary file, or an already opened AudioStream (which the job then
    owns and closes)."""

    kind = "asr"

    def __init__(self, source, *, language: str | None = None, prompt: str | None = None,
                 task: str = "transcribe", temperature: float = 0.0, word_timestamps: bool = False,
                 limits: dict | None = None, beam_size: int = 1, patience: float = 1.0,
                 length_penalty: float = 1.0, condition_on_previous_text: bool = True,
                 early_text: bool = False):
        self.source = source
        self.language = language
        self.prompt = prompt
        self.task = task
        self.temperature = temperature
        self.word_timestamps = word_timestamps
        self.limits = limits or {}
        if beam_size < 1 or patience <= 0:
            raise ValueError("beam_size must be >= 1 and patience > 0")
        self.decoding = dict(beam_size=int(beam_size), patience=float(patience),
                             length_penalty=float(length_penalty))
        self.condition = condition_on_previous_text
        self.early_text = early_text
        self.history: list[int] | None = None  # conditioning tokens (recognizers that take them)
        self.reset_since = 0
        self._early: list[str] = []  # texts sent early in the current window
        self.stream: AudioStream | None = source if isinstance(source, AudioStream) else None
        self.segments: list[Segment] = []
        self.detected: str | None = None
        self.seek = 0  # samples consumed so far
        self.windows = 0
        self._steps = None  # the current window's step generator (stepped recognizers)
        self._wait = None  # what the window's generator waits for from the recognizer's batcher
        self._window_len = 0

    def begin(self, resident, ticket) -> None:
        # A pool Resident holds the recognizer in `.model`; tests and the CLI pass it directly.
        self.recognizer = resident if hasattr(resident, "transcribe_window") else resident.model
        self.ticket = ticket
        if self.stream is None:
            self.stream = open_audio(self.source, **self.limits)
        self.window = int(self.recognizer.window_seconds * SAMPLE_RATE)
        if hasattr(self.recognizer, "encode_prompt"):
            self.history = list(self.recognizer.encode_prompt(self.prompt))

    def step(self) -> bool:
        if self._steps is None:
            return self._start_window()
        send = None
        if self._wait is not None:  # requests (an encoder window, decoder rows) wait for values
            from ominix.engine.audio.whisper_batch import answer, requests

            if not all(r.done for r in requests(self._wait)):
                self.recognizer.batcher.flush()  # runs every waiting request of the model at once
            send, self._wait = answer(self._wait), None
        try:
            value = self._steps.send(send)
        except StopIteration as done:
            self._steps = None
            return self._end_window(done.value)
        if value is not None:  # requests: submit them; the next step (ours or another's) runs them
            self._wait = value
            self.recognizer.batcher.submit(value)
        return False

    def _start_window(self) -> bool:
        """Read the next window; a stepped recognizer starts on it, any other runs it now."""
        stream = self.stream
        audio = stream.read(self.seek, self.window)
        if len(audio) == 0:
            return self._finish()
        last = stream.at_end(self.seek + len(audio))
        if not last and not getattr(self.recognizer, "reports_consumed", False):
            audio = audio[:quietest_cut(audio)]
        self._window_len = len(audio)
        if float(np.abs(audio).max()) < SILENCE_PEAK:
            # Digital silence: nothing to hear, and models hallucinate on it.
            return self._end_window(([], None))
        options = dict(offset=self.seek / SAMPLE_RATE, language=self.language or self.detected,
                       prompt=self.prompt, task=self.task, temperature=self.temperature,
                       word_timestamps=self.word_timestamps)
        if hasattr(self.recognizer, "window_steps"):  # optional: one bounded unit per step
            if self.history is not None:
                options["previous"] = self.history[self.reset_since:]
            if self.early_text:
                options["on_segment"] = self._on_segment
            self._early = []
            self._steps = self.recognizer.window_steps(audio, **options, **self.decoding)
            self._wait = None
            return self.step()
        return self._end_window(self.recognizer.transcribe_window(audio, **options))

    def _end_window(self, out) -> bool:
        segments, language = out[0], out[1]
        consumed = out[2] if len(out) > 2 else self._window_len / SAMPLE_RATE
        self.detected = self.detected or language  # later windows keep the first window's language
        if self.early_text:
            self._late_text(segments)
        for seg in segments:
            self.ticket.emit(SegmentEvent(seg, len(self.segments)))
            self.segments.append(seg)
        if self.history is not None and segments:
            for seg in segments:
                self.history.extend(seg.tokens)
            if not self.condition or (segments[0].temperature or 0.0) > PROMPT_RESET_TEMPERATURE:
                self.reset_since = len(self.history)
        # Always move forward, whatever the recognizer says (a zero-length segment cannot stall).
        advance = min(int(round(consumed * SAMPLE_RATE)), self._window_len)
        self.seek += advance if advance > 0 else self._window_len
        self.windows += 1
        self.ticket.emit(ProgressEvent(self.seek / SAMPLE_RATE, self.stream.duration))
        if self.stream.at_end(self.seek):
            return self._finish()
        return False

    def _on_segment(self, text: str, tokens: list[int], logprobs: list[float]) -> None:
        self._early.append(text)
        self.ticket.emit(TextEvent(text, tokens, logprobs))

    def _late_text(self, segments: list[Segment]) -> None:
        """The window's text not sent early: segments that closed with the window, or all of a
        fallback's (whose first attempt's text was sent already and cannot be taken back)."""
        sent = len(self._early) if [s.text for s in segments[:len(self._early)]] == self._early else 0
        eot = getattr(getattr(self.recognizer, "tok", None), "eot", None)  # Whisper: text ids < eot
        for seg in segments[sent:]:
            text_tokens = [t for t in seg.tokens if eot is None or t < eot]
            self.ticket.emit(TextEvent(seg.text, text_tokens, list(seg.token_logprobs)))
        self._early = []

    def _finish(self) -> bool:
        if not self.segments and self.stream.peak < SILENCE_PEAK:
            raise SilentAudioError("the audio is silent (no sample above -80 dBFS)")
        return True

    def result(self) -> Transcript:
        text = "".join(seg.text for seg in self.segments).strip()
        return Transcript(text=text, language=self.language or self.detected,
                          duration=self.stream.duration or self.seek / SAMPLE_RATE,
                          segments=self.segments)

    def close(self) -> None:
        if self._wait is not None:
            self.recognizer.batcher.withdraw(self._wait)
        if self._steps is not None:
            self._steps.close()
        if self.stream is not None:
            self.stream.close()


class _Collect:
    """A ticket that keeps events (for running a job directly, as the CLI and tests do)."""

    def __init__(self, on_event=None):
        self.events = []
        self.on_event = on_event

    def emit(self, event) -> None:
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)


def run_job(job: StepJob, resident, on_event=None):
    """Drive a StepJob to completion on this thread (no worker): begin, step until done, result."""
    ticket = _Collect(on_event)
    try:
        job.begin(resident, ticket)
        while not job.step():
            pass
        return job.result()
    finally:
        job.close()
