"""Tiny random Qwen3-ASR checkpoints: the transformers `-hf` layout (saved by
Qwen3ASRForConditionalGeneration.save_pretrained) and the mlx-community layout derived from it the
way mlx-audio converts (thinker-style names, MLX conv layout, 8-bit text model, lm_head dropped).

The tokenizer is the test Qwen tokenizer plus Qwen3-ASR's audio tokens and <asr_text>.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from tests.tokenizer_fixture import make_tokenizer

AUDIO_TOKENS = ["<|audio_start|>", "<|audio_end|>", "<|audio_pad|>", "<asr_text>"]


def make_asr_tokenizer(path: Path) -> dict[str, int]:
    make_tokenizer(path)
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.add_tokens([AddedToken(t, special=t != "<asr_text>", normalized=False) for t in AUDIO_TOKENS])
    tok.save(str(path / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in AUDIO_TOKENS + ["<|im_end|>", "<|endoftext|>"]}
    config = json.loads((path / "tokenizer_config.json").read_text())
    for t in AUDIO_TOKENS:  # the added tokens, listed the way Qwen's tokenizer_config.json does
        config["added_tokens_decoder"][str(ids[t])] = {"content": t, "lstrip": False, "normalized": False,
                                                       "rstrip": False, "single_word": False,
                                                       "special": t != "<asr_text>"}
    (path / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False))
    generation = {"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]], "do_sample": False,
                  "pad_token_id": ids["<|endoftext|>"]}
    (path / "generation_config.json").write_text(json.dumps(generation))
    ids["vocab_size"] = tok.get_vocab_size()
    return ids


def hf_config(ids: dict) -> dict:
    return {
        "model_type": "qwen3_asr",
        "architectures": ["Qwen3ASRForConditionalGeneration"],
        "audio_config": {"model_type": "qwen3_asr_encoder", "num_mel_bins": 128, "encoder_layers": 2,
                         "encoder_attention_heads": 4, "encoder_ffn_dim": 64, "d_model": 32, "n_window": 50,
                         "n_window_infer": 200, "output_dim": 64, "downsample_hidden_size": 8,
                         "max_position_embeddings": 13},
        "text_config": {"model_type": "qwen3", "vocab_size": ids["vocab_size"], "hidden_size": 64,
                        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 4096,
                        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True},
        "audio_token_id": ids["<|audio_pad|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": True,
    }


def build_hf(out: Path, seed: int = 0, scale: float = 1.0):
    """The -hf layout; returns (directory, the transformers model, token ids)."""
    import torch
    from transformers import Qwen3ASRConfig, Qwen3ASRForConditionalGeneration

    from tests.funasr_checkpoints import randomize

    out.mkdir(parents=True, exist_ok=True)
    ids = make_asr_tokenizer(out)
    torch.manual_seed(seed)
    model = Qwen3ASRForConditionalGeneration(Qwen3ASRConfig(**{k: v for k, v in hf_config(ids).items()
                                                               if k not in ("model_type", "architectures")}))
    randomize(model, seed, scale=scale)
    model.eval()
    model.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "Qwen3ASRFeatureExtractor", "feature_size": 128, "hop_length": 160,
        "n_fft": 400, "sampling_rate": 16000, "n_window": 50, "min_length": 8000}))
    return out, model, ids


def build_mlx_community(hf_dir: Path, out: Path) -> Path:
    """mlx-community's layout from an -hf directory: names without thinker., conv weights in MLX
    layout, the text model quantized to 8 bits (group 64), the audio tower left in float."""
    import shutil

    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from ominix.models import qwen3_asr

    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((hf_dir / "config.json").read_text())
    model = qwen3_asr.Model(qwen3_asr.ModelArgs.from_dict(config))
    weights = model.sanitize(mx.load(str(hf_dir / "model.safetensors")))
    model.load_weights(list(weights.items()))
    nn.quantize(model, group_size=64, bits=8,
                class_predicate=lambda p, m: isinstance(m, (nn.Linear, nn.Embedding)) and not p.startswith("audio_tower"))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    original = {"model_type": "qwen3_asr", "architectures": ["Qwen3ASRForConditionalGeneration"],
                "thinker_config": {"audio_config": config["audio_config"], "text_config": {
                    **config["text_config"], "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2],
                                                              "mrope_interleaved": True}},
                    "audio_token_id": config["audio_token_id"]},
                "eos_token_id": config["eos_token_id"], "quantization": {"group_size": 64, "bits": 8}}
    (out / "config.json").write_text(json.dumps(original))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                 "preprocessor_config.json"):
        shutil.copy(hf_dir / name, out / name)
    return out
