"""Qwen3-ASR vs transformers 5.23 (Qwen3ASRForConditionalGeneration, Qwen3ASRFeatureExtractor) on a
tiny random checkpoint in the -hf layout, and the same weights in Qwen's original (thinker.*) and
mlx-community's (8-bit) layouts through the same loader."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import mlx.core as mx  # noqa: E402

from ominix.engine.audio.qwen3_asr import load_qwen3_asr, log_mel, mel_filters, parse_answer  # noqa: E402
from tests.funasr_checkpoints import speechlike  # noqa: E402
from tests.qwen3_asr_checkpoints import build_hf, build_mlx_community  # noqa: E402


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return build_hf(tmp_path_factory.mktemp("qwen3asr-hf"), scale=2.0)


@pytest.fixture(scope="module")
def ours(hf):
    return load_qwen3_asr(hf[0])


def _reference_inputs(audio, ours):
    """transformers' features, with the padding past the audio zeroed as Qwen's encoder pads chunks."""
    from transformers import Qwen3ASRFeatureExtractor

    got = Qwen3ASRFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    mel, frames = ours.features(audio)
    features = torch.zeros_like(got["input_features"])
    features[0, :, :frames] = torch.from_numpy(np.array(mel))
    return got, features, got["attention_mask"], mel, frames


def test_mel_filters_match_transformers():
    from transformers.audio_utils import mel_filter_bank

    want = mel_filter_bank(num_frequency_bins=201, num_mel_filters=128, min_frequency=0.0, max_frequency=8000.0,
                           sampling_rate=16000, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(mel_filters(128), want, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("seconds", [0.2, 1.0, 2.37, 4.0])
def test_log_mel_matches_the_feature_extractor(ours, seconds):
    audio = speechlike(seconds, seed=2)
    got, _, mask, mel, frames = _reference_inputs(audio, ours)
    assert frames == int(mask.sum())
    np.testing.assert_allclose(np.array(mel), got["input_features"][0, :, :frames].numpy(), atol=1e-4)


@pytest.mark.parametrize("seconds", [0.3, 2.37, 4.0, 9.1])
def test_audio_encoder_parity(hf, ours, seconds):
    _, model, _ = hf
    _, features, mask, mel, frames = _reference_inputs(speechlike(seconds, seed=3), ours)
    with torch.no_grad():
        want = model.model.get_audio_features(features, mask).pooler_output
    got = ours.model.audio_tower(mel, frames)
    assert got.shape == tuple(want.shape) and got.shape[0] == ours.model.audio_tokens(frames)
    np.testing.assert_allclose(np.array(got), want.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("language,context", [(None, None), ("en", None), (None, "OminiX MLX")])
def test_decoding_parity(hf, ours, language, context):
    _, model, _ = hf
    audio = speechlike(2.37, seed=1)
    _, features, mask, _, _ = _reference_inputs(audio, ours)
    out = ours.generate(audio, language=language, context=context)
    prompt = torch.tensor([out["prompt"]])
    with torch.no_grad():
        ref_logits = model(input_ids=prompt, input_features=features, input_features_mask=mask).logits
        generated = model.generate(input_ids=prompt, input_features=features, input_features_mask=mask,
                                   attention_mask=torch.ones_like(prompt), do_sample=False,
                                   max_new_tokens=len(out["tokens"]) + 1)
    mel, frames = ours.features(audio)
    embeds = ours.model.embed(mx.array([out["prompt"]]), ours.model.audio_tower(mel, frames))
    logits = ours.model.forward_embeddings(embeds)
    np.testing.assert_allclose(np.array(logits), ref_logits.numpy(), atol=2e-3, rtol=1e-3)
    want = generated[0, prompt.shape[1]:].tolist()
    assert len(out["tokens"]) > 10 and len(set(out["tokens"])) > 3
    assert out["tokens"] == want[:len(out["tokens"])]


def _original_layout(hf_dir, out):
    """Qwen's own layout: thinker.* names, PyTorch conv weights, thinker_config."""
    from safetensors.numpy import load_file, save_file

    out.mkdir()
    weights = {}
    for name, w in load_file(str(hf_dir / "model.safetensors")).items():
        name = (name.replace("model.multi_modal_projector.linear_1.", "audio_tower.proj1.")
                .replace("model.multi_modal_projector.linear_2.", "audio_tower.proj2.")
                .replace("model.audio_tower.", "audio_tower.").replace("model.language_model.", "model."))
        weights["thinker." + name] = w
    save_file(weights, str(out / "model.safetensors"))
    config = json.loads((hf_dir / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({"model_type": "qwen3_asr", "thinker_config": {
        "audio_config": config["audio_config"], "text_config": config["text_config"],
        "audio_token_id": config["audio_token_id"]}, "eos_token_id": config["eos_token_id"]}))
    for f in hf_dir.iterdir():
        if f.name.startswith(("tokenizer", "special", "generation", "preprocessor")):
            (out / f.name).write_bytes(f.read_bytes())
    return out


def test_other_layouts_load_through_the_same_loader(hf, ours, tmp_path):
    audio = speechlike(2.37, seed=1)
    want = ours.generate(audio)
    original = load_qwen3_asr(_original_layout(hf[0], tmp_path / "original"))
    assert original.generate(audio)["tokens"] == want["tokens"]

    community = load_qwen3_asr(build_mlx_community(hf[0], tmp_path / "community"))
    assert community.model.model.layers[0].self_attn.q_proj.bits == 8
    mel, frames = ours.features(audio)
    prompt = mx.array([want["prompt"]])
    float_logits = ours.model.forward_embeddings(ours.model.embed(prompt, ours.model.audio_tower(mel, frames)))
    quant_logits = community.model.forward_embeddings(
        community.model.embed(prompt, community.model.audio_tower(mel, frames)))
    # 8-bit weights: close to the float model, same best token on nearly every position
    agree = np.mean(np.array(mx.argmax(float_logits, -1) == mx.argmax(quant_logits, -1)))
    assert agree > 0.9
    np.testing.assert_allclose(np.array(quant_logits), np.array(float_logits), atol=0.5)


def test_answer_parsing_and_window(ours, monkeypatch):
    assert parse_answer("language English<asr_text> hello there") == {"language": "en", "text": "hello there"}
    assert parse_answer("language Cantonese<asr_text>你好") == {"language": "yue", "text": "你好"}
    assert parse_answer("language None<asr_text>") == {"language": None, "text": ""}
    assert parse_answer("no tag at all") == {"language": None, "text": "no tag at all"}
    audio = speechlike(1.5, seed=5)
    monkeypatch.setattr(ours, "generate", lambda a, language=None, context=None: {
        "tokens": [1, 2], **parse_answer("language German<asr_text>guten Tag")})
    segments, language = ours.transcribe_window(audio, offset=3.0)
    assert language == "de" and segments[0].text == "guten Tag"
    assert segments[0].start == 3.0 and segments[0].end == pytest.approx(4.5)


def test_repo_without_tokenizer_json_uses_vocab_and_merges(hf, ours, tmp_path):
    import shutil

    from tokenizers import Tokenizer

    copy = tmp_path / "slow-tokenizer"
    shutil.copytree(hf[0], copy)
    fast = Tokenizer.from_file(str(copy / "tokenizer.json"))
    fast.model.save(str(copy))  # vocab.json + merges.txt, as Qwen's repos ship them
    (copy / "tokenizer.json").unlink()
    slow = load_qwen3_asr(copy)
    text = ("<|im_start|>system\nOminiX 你好<|im_end|>\n<|im_start|>user\n<|audio_start|><|audio_pad|>"
            "<|audio_pad|><|audio_end|><|im_end|>\n<|im_start|>assistant\nlanguage English<asr_text>Hello, world!")
    assert slow.tokenizer.encode(text) == ours.tokenizer.encode(text)
    assert slow.eos == ours.eos
    audio = speechlike(1.2, seed=6)
    assert slow.generate(audio)["raw"] == ours.generate(audio)["raw"]


def test_one_asr_loader_routes_every_family(hf, tmp_path):
    from ominix.engine.audio import recognizers
    from ominix.engine.audio.qwen3_asr import Qwen3ASRRecognizer
    from ominix.engine.load import LoadError

    assert recognizers.family(hf[0]) == "qwen3_asr"
    recognizer, tokenizer = recognizers.load(hf[0])
    assert isinstance(recognizer, Qwen3ASRRecognizer) and tokenizer is None
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(LoadError, match="not a speech recognition checkpoint"):
        recognizers.load(tmp_path)
