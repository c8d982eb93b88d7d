"""Qwen3-TTS 12Hz against qwen-tts 0.1.1 on tiny random checkpoints in the published layout.

The reference runs in its own venv (tests/refvenv.py; built once, ~1.5 min) from the same files we
load. Per case: talker logits at every step, code predictor logits, greedy codes and the decoded
waveform; plus a standalone speech-tokenizer decode and the Base model's speaker embedding (the
x-vector that voice cloning uses). Tolerances are float32 round-off at these widths (waveforms: relative to their peak).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from ominix.engine.audio.qwen3_tts import load_qwen3_tts
from ominix.engine.audio.synth import SynthesisOptions
from tests import qwen3_tts_fixture as fx

ATOL_LOGITS = 2e-4
WAV_TOL = 3e-4  # of the peak: the vocoder is ~40 convolutions and SnakeBeta sines deep


@pytest.fixture(scope="module", params=["custom_voice", "base"])
def run(request, tmp_path_factory):
    ckpt, ref = fx.reference_run(tmp_path_factory.mktemp(f"qwen3tts-{request.param}"), request.param)
    return request.param, ckpt, ref


def _options(tts, case: dict) -> SynthesisOptions:
    o = SynthesisOptions(
        voice=case.get("speaker"), language=case.get("language"), instructions=case.get("instruct"),
        temperature=0, max_frames=fx.MAX_NEW_TOKENS, first_chunk_frames=300, chunk_frames=300,
        non_streaming_text=case.get("non_streaming_mode", case["kind"] == "custom"),
    )  # fmt: skip
    if case["kind"] == "clone":
        o.voice_embedding = tts.speaker_embedding(fx.ref_audio())
    if case["kind"] == "icl":
        clip = fx.ref_audio()[: case["ref_samples"]]
        o.voice_embedding = tts.speaker_embedding(clip)
        o.voice_codes = tts.reference_codes(clip)
        o.voice_text = case["ref_text"]
    return o


def _reference_wav(ref: np.ndarray, case: dict, options: SynthesisOptions, frames: int) -> np.ndarray:
    """The reference's audio aligned to ours: for in-context cloning qwen-tts decodes the clip's
    codes and the new ones together and cuts at int(ref / total * samples), which float round-off
    can put one sample early; we emit exactly the new frames' samples."""
    if options.voice_codes is None:
        return ref
    n_ref, total = len(options.voice_codes), len(options.voice_codes) + frames
    early = n_ref * 1920 - int(n_ref / total * (total * 1920))
    return ref[early:]


def _synthesize(tts, text, options):
    s = tts.synthesis(text, options)
    s.trace = {}
    chunks = []
    while not s.done:
        a = s.step()
        if a is not None:
            chunks.append(a)
    return s, np.concatenate(chunks)


def test_generation_matches_reference(run):
    variant, ckpt, ref = run
    tts = load_qwen3_tts(ckpt)
    for i, case in enumerate(fx.CASES[variant]):
        options = _options(tts, case)
        s, wav = _synthesize(tts, case["text"], options)
        talker = np.stack(s.trace["talker"])
        predictor = np.stack(s.trace["predictor"])
        np.testing.assert_allclose(talker, ref[f"{i}/talker_logits"], atol=ATOL_LOGITS, rtol=1e-4)
        np.testing.assert_allclose(predictor, ref[f"{i}/predictor_logits"], atol=ATOL_LOGITS, rtol=1e-4)
        codes = s.codes()
        # one talker step per frame plus the last (EOS, or the cap) whose frame is never built
        assert codes.shape == (len(ref[f"{i}/talker_logits"]) - 1, fx.GROUPS) and len(codes) >= 4
        # greedy codes: codebooks 1.. are the argmax of the reference's predictor logits
        want = ref[f"{i}/predictor_logits"].argmax(-1).reshape(len(codes), fx.GROUPS - 1)
        np.testing.assert_array_equal(codes[:, 1:], want)
        want = _reference_wav(ref[f"{i}/wav"], case, options, len(codes))
        assert wav.shape == want.shape
        np.testing.assert_allclose(wav, want, atol=WAV_TOL * np.abs(want).max())
        assert np.abs(wav).max() < 0.999  # not clipped: the comparison means something


def test_speech_tokenizer_decode_matches_reference(run):
    _, ckpt, ref = run
    tts = load_qwen3_tts(ckpt)
    codes = ref["decode/codes"]  # [frames > sliding window, groups]
    wav = np.array(tts.codec.decoder(mx.array(codes.T[None]))[0])
    np.testing.assert_allclose(wav, ref["decode/wav"], atol=WAV_TOL * np.abs(ref["decode/wav"]).max())


def test_speaker_embedding_matches_reference(run):
    variant, ckpt, ref = run
    tts = load_qwen3_tts(ckpt)
    if variant != "base":
        assert not tts.can_clone
        return
    emb = tts.speaker_embedding(fx.ref_audio())
    np.testing.assert_allclose(emb, ref["speaker/embedding"], atol=1e-4, rtol=1e-4)


def test_speech_tokenizer_encode_matches_reference(run):
    variant, ckpt, ref = run
    tts = load_qwen3_tts(ckpt)
    if variant != "base":
        return
    assert tts.can_icl
    for n in fx.ENCODE_SAMPLES:
        codes = tts.reference_codes(fx.ref_audio()[:n])
        want = ref[f"encode/{n}"]
        assert codes.shape == want.shape == (-(-n // 48), fx.GROUPS)
        np.testing.assert_array_equal(codes, want)


def test_mlx_community_8bit_layout_loads_and_tracks_float(run, tmp_path):
    variant, ckpt, ref = run
    q = load_qwen3_tts(fx.to_mlx_8bit(ckpt, tmp_path / "q8"))
    assert "scales" in str(q.model.talker.codec_head.parameters().keys())
    case = fx.CASES[variant][0]
    s, wav = _synthesize(q, case["text"], _options(q, case))
    first = s.trace["talker"][0]  # prefill logits: same prompt, 8-bit weights
    want = ref["0/talker_logits"][0]
    cos = float(first @ want / np.linalg.norm(first) / np.linalg.norm(want))
    assert cos > 0.999, cos
    assert 1 <= len(s.frames) <= fx.MAX_NEW_TOKENS - 1  # may end early: 8-bit logits can pick EOS
    assert len(wav) == len(s.frames) * q.frame_samples
