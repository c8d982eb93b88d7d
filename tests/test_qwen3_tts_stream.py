"""The Qwen3-TTS codec decoder as a stream: chunk by chunk decoding equals the whole-sequence decode.

The decoder (qwen3_tts_codec.DecoderStream) carries each causal conv's last (k-1)*dilation inputs,
each transposed conv's overlap and each attention layer's last sliding_window - 1 keys/values, so
every chunk is computed once, with no recomputed left context. Tolerance: 5e-5 of the waveform's
peak (float32 round-off of differently shaped matmuls: ~1.5e-5 seen).
The whole-sequence decode itself is checked against qwen-tts in test_qwen3_tts_parity.py.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from ominix.engine.audio.qwen3_tts import load_qwen3_tts
from ominix.engine.audio.synth import SynthesisOptions
from ominix.models.qwen3_tts_codec import Decoder, DecoderArgs, DecoderStream
from tests.qwen3_tts_fixture import CODEBOOK, GROUPS, qwen3_tts_tiny_base  # noqa: F401  (fixture)

TOL = 5e-5


@pytest.fixture(scope="module")
def tts(qwen3_tts_tiny_base):
    return load_qwen3_tts(qwen3_tts_tiny_base)


def _codes(frames: int, seed: int) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, CODEBOOK, size=(1, GROUPS, frames)))


def _streamed(decoder, codes: mx.array, sizes, stream=None) -> np.ndarray:
    stream = stream or DecoderStream()
    out, at = [], 0
    for n in sizes:
        out.append(np.array(decoder(codes[..., at : at + n], stream)[0]))
        stream.evaluate()
        at += n
    assert at == codes.shape[-1]
    return np.concatenate(out)


@pytest.mark.parametrize("sizes", [[1] * 30, [3] * 10, [6, 6, 6, 6, 6], [7, 16, 7], [30]])
def test_chunks_concatenate_to_the_whole_decode(tts, sizes):
    decoder = tts.codec.decoder
    codes = _codes(30, 0)  # 30 frames: several sliding windows (8 in the tiny config)
    whole = np.array(decoder(codes)[0])
    streamed = _streamed(decoder, codes, sizes)
    assert streamed.shape == whole.shape == (30 * 1920,)
    np.testing.assert_allclose(streamed, whole, atol=TOL * np.abs(whole).max())


def test_no_left_context_would_differ(tts):
    """The carried state matters: chunks decoded independently are not the whole decode."""
    decoder = tts.codec.decoder
    codes = _codes(20, 1)
    whole = np.array(decoder(codes)[0])
    independent = np.concatenate([np.array(decoder(codes[..., i : i + 5])[0]) for i in range(0, 20, 5)])
    assert np.abs(independent - whole).max() > 100 * TOL * np.abs(whole).max()


def test_warm_equals_decoding_the_prefix_and_cutting_it(tts):
    """A cloned voice's reference codes as left context (qwen-tts decodes them with the new codes
    and cuts their audio): the transformer sees all of them, the vocoder its receptive field."""
    decoder = tts.codec.decoder
    ref, new = _codes(40, 2), _codes(12, 3)
    whole = np.array(decoder(mx.concatenate([ref, new], axis=-1))[0])[40 * 1920 :]
    stream = DecoderStream()
    decoder.warm(ref, stream)
    assert stream.position == 40
    streamed = _streamed(decoder, new, [5, 5, 2], stream)
    np.testing.assert_allclose(streamed, whole, atol=TOL * np.abs(whole).max())


def test_vocoder_receptive_field_at_real_widths():
    """Frames of left context the convolutions after the transformer need (real 12 Hz decoder):
    ConvNeXt 6/2 + 6/4, first conv 6/4, then per block one transposed-conv step and the
    residual units' 6+18+54 samples at 4, 32, 160 and 640 samples per frame, last conv 6/1920."""
    decoder = Decoder(DecoderArgs())
    reach = 6 / 2 + 6 / 4 + 6 / 4
    rate = 4
    for s in (8, 5, 4, 3):
        reach += 1 / rate
        rate *= s
        reach += 78 / rate
    reach += 6 / 1920
    assert decoder.vocoder_context() == int(np.ceil(reach)) == 10


def test_synthesis_steps_are_bounded_and_first_audio_comes_early(tts):
    """A decoded chunk is at most `decode_chunk_frames` frames, decoded in 5 worker steps (the
    transformer and first conv, then the vocoder blocks); the first audio comes once
    `first_chunk_frames` frames exist; the chunks are the whole utterance's decode."""
    options = SynthesisOptions(voice_embedding=np.zeros(128, np.float32), temperature=0, max_frames=13,
                               first_chunk_frames=3, chunk_frames=5, decode_chunk_frames=2)  # fmt: skip
    s = tts.synthesis("Hello world, how are you today?", options)
    chunks, frames_at_first, steps, generated = [], None, 0, 0
    while not s.done:
        before = len(s.frames)
        audio = s.step()
        generated += len(s.frames) - before
        steps += 1
        if audio is not None:
            assert 0 < len(audio) <= 2 * 1920
            frames_at_first = len(s.frames) if frames_at_first is None else frames_at_first
            chunks.append(audio)
    assert frames_at_first == 3 and len(s.frames) == generated == 12
    # chunks: frames 0-1, 2 (3 were due), then 3-4, 5-6, 7 (5 due), 8-9, 10-11 (the rest at the end)
    assert [len(c) // 1920 for c in chunks] == [2, 1, 2, 2, 1, 2, 2]
    # steps: the prefill, one per frame, the one that ends generation, and 5 per decoded chunk
    assert steps == 1 + 12 + 1 + 5 * len(chunks)
    whole = np.array(tts.codec.decoder(mx.array(s.codes().T[None]))[0])
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=TOL * np.abs(whole).max())
