"""Fun-ASR-Nano vs transformers 5.23 (FunAsrNanoForConditionalGeneration) on a tiny random checkpoint
in the -hf layout, and the same weights in mlx-community's (FunASR-named) layout, through one loader.

transformers splices every adaptor frame into the prompt; FunASR's own code (and mlx-audio, which
converted mlx-community's weights) splices only the first `audio_token_count` frames when the
adaptor has use_low_frame_rate (the published config). We follow FunASR and compare with
transformers on identical prompt embeddings, so every stage is checked either way.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import mlx.core as mx  # noqa: E402

from ominix.engine.audio.fun_asr_nano import instruction, load_fun_asr_nano  # noqa: E402
from ominix.models.fun_asr_nano import audio_token_count  # noqa: E402
from tests.funasr_checkpoints import randomize, speechlike  # noqa: E402
from tests.tokenizer_fixture import VOCAB_SIZE, make_tokenizer  # noqa: E402


def _hf_config(vocab: int) -> dict:
    return {"audio_config": {"model_type": "fun_asr_nano_encoder", "num_mel_bins": 80, "hidden_size": 32,
                             "num_attention_heads": 4, "intermediate_size": 64, "num_hidden_layers": 5,
                             "num_timestamp_prediction_layers": 2, "max_position_embeddings": 2049,
                             "num_stacked_frames": 7, "fsmn_kernel_size": 11},
            "adaptor_config": {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 16,
                               "num_hidden_layers": 2, "projector_hidden_size": 48},
            "text_config": {"model_type": "qwen3", "vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128,
                            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                            "head_dim": 16, "max_position_embeddings": 4096, "rope_theta": 1000000.0,
                            "tie_word_embeddings": True},
            "audio_token_id": 5, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    from transformers import FunAsrNanoConfig, FunAsrNanoForConditionalGeneration

    out = tmp_path_factory.mktemp("funasr-nano-hf")
    make_tokenizer(out)
    torch.manual_seed(0)
    model = FunAsrNanoForConditionalGeneration(FunAsrNanoConfig(**_hf_config(VOCAB_SIZE))).eval()
    randomize(model, 0, scale=2.0)
    model.save_pretrained(out)
    return out, model


@pytest.fixture(scope="module")
def ours(hf):
    return load_fun_asr_nano(hf[0])


def test_encoder_and_adaptor_parity(hf, ours):
    model = hf[1]
    feats = ours.features(speechlike(2.3, seed=1))
    x = torch.from_numpy(np.array(feats))
    mask = torch.ones(x.shape[:2], dtype=torch.long)
    with torch.no_grad():
        out = model.model.get_audio_features(x, mask)
    np.testing.assert_allclose(np.array(ours.model.audio_encoder(feats)), out.last_hidden_state.numpy(), atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(np.array(ours.model.audio_features(feats)[0]), out.pooler_output.numpy(), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("language,context", [(None, None), ("en", None), ("zh", "OminiX 千问")])
def test_decoding_parity(hf, ours, language, context):
    model = hf[1]
    audio = speechlike(3.1, seed=2)
    out = ours.generate(audio, language, context)
    before, n, after = out["prompt"]
    feats = ours.features(audio)
    assert n == audio_token_count(feats.shape[1], True) < feats.shape[1]
    embeds = ours.model.embed(before, ours.model.audio_features(feats)[:, :n], after)
    with torch.no_grad():
        ref = torch.from_numpy(np.array(embeds))
        want_logits = model(inputs_embeds=ref).logits
        generated = model.generate(inputs_embeds=ref, attention_mask=torch.ones(ref.shape[:2], dtype=torch.long),
                                   do_sample=False, max_new_tokens=len(out["tokens"]) + 1)
    np.testing.assert_allclose(np.array(ours.model.forward_embeddings(embeds)), want_logits.numpy(), atol=2e-3, rtol=1e-3)
    assert len(out["tokens"]) > 8 and len(set(out["tokens"])) > 3
    assert out["tokens"] == generated[0].tolist()[:len(out["tokens"])]


def test_prompt_instruction():
    assert instruction(None, None) == "语音转写："
    assert instruction("en", None) == "语音转写成英文："
    assert instruction("ja", ["OminiX"]).endswith("热词列表：[OminiX]\n语音转写成日文：")
    assert [audio_token_count(n, True) for n in (1, 8, 17, 167)] == [1, 1, 3, 21]


def test_mlx_community_layout_loads_the_same(hf, ours, tmp_path):
    from mlx.utils import tree_flatten

    out = tmp_path / "community"
    out.mkdir()
    weights = {}
    for name, w in tree_flatten(ours.model.parameters()):
        if name.endswith("fsmn_block.weight"):
            w = w.transpose(0, 2, 1)  # mlx-audio keeps the depthwise conv in MLX layout (C, K, 1)
        weights[name] = w
    mx.save_safetensors(str(out / "model.safetensors"), weights)
    hf_config = json.loads((hf[0] / "config.json").read_text())
    a = hf_config["audio_config"]
    config = {"model_type": "fun_asr_nano", "input_size": 560, "qwen_tokenizer_path": "Qwen3-0.6B",
              "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25,
                                "frame_shift": 10, "lfr_m": 7, "lfr_n": 6, "cmvn_file": None},
              "audio_encoder_conf": {"output_size": a["hidden_size"], "attention_heads": a["num_attention_heads"],
                                     "linear_units": a["intermediate_size"], "num_blocks": 3, "tp_blocks": 2,
                                     "kernel_size": 11, "sanm_shift": 0, "normalize_before": True},
              "audio_adaptor_conf": {"downsample_rate": 1, "use_low_frame_rate": True, "ffn_dim": 48, "llm_dim": 64,
                                     "encoder_dim": 32, "n_layer": 2, "attention_heads": 4},
              "text_config": hf_config["text_config"], "default_max_tokens": 512}
    (out / "config.json").write_text(json.dumps(config))
    shutil.copytree(hf[0], out / "Qwen3-0.6B", ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    community = load_fun_asr_nano(out)
    audio = speechlike(2.0, seed=3)
    assert community.generate(audio)["tokens"] == ours.generate(audio)["tokens"]


def test_window_segments(ours, monkeypatch):
    monkeypatch.setattr(ours, "generate", lambda a, language=None, context=None: {"tokens": [1], "text": "你好"})
    segments, language = ours.transcribe_window(speechlike(1.0), offset=2.0, language="zh")
    assert language == "zh" and segments[0].text == "你好" and segments[0].end == pytest.approx(3.0)
