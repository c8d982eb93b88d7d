"""Whisper parity against transformers' WhisperForConditionalGeneration on tiny random weights, in
the transformers layout and in mlx-community's mlx-whisper layout, loaded through the same
`load_whisper` a download uses: features, encoder output, logits, greedy tokens with the KV cache,
alignment-head cross-attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mlx.core as mx

from ominix.engine.audio.features import log_mel, mel_filters
from ominix.engine.audio.types import SAMPLE_RATE
from ominix.engine.audio.whisper import load_whisper
from tests.speech_fixtures import SENTENCES, resample_linear, speak
from tests.whisper_checkpoints import build_hf, hf_to_mlx_layout


@pytest.fixture(scope="module")
def speech16k():
    s, rate = speak(SENTENCES[1])
    return resample_linear(s, rate, SAMPLE_RATE)


@pytest.fixture(scope="module", params=[False, True], ids=["english", "multilingual"])
def checkpoints(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("whisper")
    ref = build_hf(root / "hf", multilingual=request.param, seed=3)
    mlx_dir = hf_to_mlx_layout(root / "hf", root / "mlx")
    return ref, root / "hf", mlx_dir


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_transformers_feature_extractor(speech16k, n_mels):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=n_mels)
    np.testing.assert_allclose(mel_filters(n_mels), fe.mel_filters.T, atol=1e-7)
    ref = fe(speech16k, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
    np.testing.assert_allclose(log_mel(speech16k, n_mels), ref.T, atol=1e-4)


def _features(audio):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=SAMPLE_RATE,
                                                     return_tensors="pt").input_features


@pytest.mark.parametrize("layout", ["transformers", "mlx"])
def test_encoder_logits_and_greedy_tokens_match(checkpoints, speech16k, layout):
    ref, hf_dir, mlx_dir = checkpoints
    rec = load_whisper(hf_dir if layout == "transformers" else mlx_dir)
    model = rec.model
    feats = _features(speech16k)
    # The mlx layout stores fp16 (as mlx-community does): compare against the fp16-rounded model.
    tol = 2e-4 if layout == "transformers" else 3e-2
    ref_model = ref if layout == "transformers" else _fp16_rounded(ref)

    mel = mx.array(feats[0].numpy().T)[None]
    audio = model.embed_audio(mel)
    with torch.no_grad():
        ref_audio = ref_model.model.encoder(feats).last_hidden_state.numpy()
    np.testing.assert_allclose(np.array(audio), ref_audio, atol=tol, rtol=tol)

    tok = rec.tok
    prompt = tok.sot_sequence("en", "transcribe") + tok.encode(" the quick brown fox")
    with torch.no_grad():
        ref_logits = ref_model(input_features=feats, decoder_input_ids=torch.tensor([prompt])).logits.numpy()
    logits = np.array(model.decode(mx.array([prompt]), model.cross_kv(audio)))
    np.testing.assert_allclose(logits, ref_logits, atol=tol * 10, rtol=tol)

    # Greedy decoding, 24 steps: ours with the KV cache, transformers with its past_key_values.
    ids, past = torch.tensor([prompt]), None
    ref_tokens = []
    with torch.no_grad():
        enc = ref_model.model.encoder(feats)
        for _ in range(24):
            out = ref_model(encoder_outputs=enc, decoder_input_ids=ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = int(out.logits[0, -1].argmax())
            ref_tokens.append(nxt)
            ids = torch.tensor([[nxt]])
    cross_kv, cache = model.cross_kv(audio), rec.make_cache()
    ours, step = [], mx.array([prompt])
    for _ in range(24):
        nxt = int(mx.argmax(model.decode(step, cross_kv, cache)[0, -1]).item())
        ours.append(nxt)
        step = mx.array([[nxt]])
    assert ours == ref_tokens


def _fp16_rounded(ref):
    import copy

    m = copy.deepcopy(ref)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "encoder.embed_positions" not in name:
                p.copy_(p.half().float())
    return m


def test_alignment_heads_cross_attention_matches(checkpoints, speech16k):
    ref, hf_dir, mlx_dir = checkpoints
    feats = _features(speech16k)
    for path in (hf_dir, mlx_dir):
        rec = load_whisper(path)
        assert np.array(rec.model.alignment_heads).tolist() == [[1, 0], [1, 2], [0, 3]]
    rec = load_whisper(hf_dir)
    tokens = rec.tok.sot_sequence("en", "transcribe") + [rec.tok.no_timestamps] + rec.tok.encode(" hello there")
    audio = rec.model.embed_audio(mx.array(feats[0].numpy().T)[None])
    qk = np.array(rec.model.alignment_qk(mx.array([tokens]), rec.model.cross_kv(audio)))
    ours = np.exp(qk - qk.max(-1, keepdims=True))
    ours /= ours.sum(-1, keepdims=True)
    ref.set_attn_implementation("eager")  # the only one that returns attention weights
    try:
        with torch.no_grad():
            out = ref(input_features=feats, decoder_input_ids=torch.tensor([tokens]), output_attentions=True)
    finally:
        ref.set_attn_implementation("sdpa")
    for k, (layer, head) in enumerate([[1, 0], [1, 2], [0, 3]]):
        np.testing.assert_allclose(ours[k, 0], out.cross_attentions[layer][0, head].numpy(), atol=1e-5)


def test_tokenizer_special_tokens_and_suppression(checkpoints):
    _, hf_dir, _ = checkpoints
    import json

    from tests.whisper_checkpoints import real_tiny_en_dir

    rec = load_whisper(hf_dir)
    tok = rec.tok
    assert tok.decode(tok.encode(" Hello, world!")) == " Hello, world!"
    assert tok.timestamp_begin == tok.no_timestamps + 1
    assert tok.language_tokens["en"] == tok.sot + 1 and "he" in tok.language_tokens
    # Our non-speech list, rebuilt from the vocabulary, is the one CTranslate2's converter wrote.
    ct2 = json.loads((real_tiny_en_dir() / "config.json").read_text())
    specials = {tok.translate, tok.transcribe, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech}
    assert set(tok.non_speech_tokens()) == set(ct2["suppress_ids"]) - specials - {tok.eot}
