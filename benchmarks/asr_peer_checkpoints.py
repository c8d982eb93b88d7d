"""Random checkpoints at the published widths for benchmarks/bench_asr_peers.py, in the layouts the
peers read, with a Qwen tokenizer whose vocabulary has the real size and the real special-token ids
(the peers hard-code some of them: funasr-mlx's <|audio_pad|> 151676 and its end-of-turn ids).

- `qwen_tokenizer(dir, extra)`: the small trained BPE of tests/tokenizer_fixture.py padded to
  Qwen's 151643 learned ids (unreachable filler entries), then Qwen's added tokens at 151643..,
  then `extra` (id -> token); the files a Qwen repo ships: vocab.json + merges.txt +
  tokenizer_config.json (added_tokens_decoder) and tokenizer.json.
- `build_qwen3_asr(dir, text_layers)`: Qwen's original Qwen3-ASR-0.6B layout (thinker.*, PyTorch
  convolutions, float32 safetensors, config.json with thinker_config and M-RoPE rope_scaling,
  WhisperFeatureExtractor's preprocessor_config.json), the decoder cut to `text_layers` of 28.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QWEN_LEARNED = 151643
VOCAB = 151936
QWEN3_ASR_TOKENS = {151669: "<|audio_start|>", 151670: "<|audio_end|>", 151676: "<|audio_pad|>", 151704: "<asr_text>"}


def qwen_tokenizer(out: Path, extra: dict[int, str]) -> dict[str, int]:
    sys.path.insert(0, str(ROOT))
    from tokenizers import AddedToken, Tokenizer, models

    from tests.tokenizer_fixture import ADDED_TOKENS, make_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    make_tokenizer(out)
    small = Tokenizer.from_file(str(out / "tokenizer.json"))
    small.model.save(str(out))
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    merges = (out / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [m for m in merges if m and not m.startswith("#")]
    for i in range(len(vocab), QWEN_LEARNED):  # never produced by the merges: just ids
        vocab[f"\u0120filler{i}"] = i
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    big = Tokenizer(models.BPE(vocab, [tuple(m.split(" ")) for m in merges], unk_token=None, fuse_unk=False))
    big.normalizer, big.pre_tokenizer, big.decoder = small.normalizer, small.pre_tokenizer, small.decoder
    added = {QWEN_LEARNED + i: (content, special) for i, (content, special) in enumerate(ADDED_TOKENS)}
    added.update({i: (t, t != "<asr_text>") for i, t in extra.items()})
    decoder = {}
    for index in range(QWEN_LEARNED, max(added) + 1):
        content, special = added.get(index, (f"<|extra_{index}|>", True))
        piece = AddedToken(content, special=special, normalized=False)
        big.add_special_tokens([piece]) if special else big.add_tokens([piece])
        assert big.token_to_id(content) == index, content
        decoder[str(index)] = {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                               "single_word": False, "special": special}
    big.save(str(out / "tokenizer.json"))
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = decoder
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    ids = {"<|endoftext|>": 151643, "<|im_end|>": 151645}
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643],
                                                            "pad_token_id": 151643, "do_sample": False}))
    return ids


def qwen3_asr_config(text_layers: int) -> dict:
    return {
        "architectures": ["Qwen3ASRForConditionalGeneration"], "model_type": "qwen3_asr",
        "support_languages": ["Chinese", "English"],
        "thinker_config": {
            "model_type": "qwen3_asr_thinker",
            "audio_config": {"activation_function": "gelu", "num_mel_bins": 128, "encoder_layers": 18,
                             "encoder_attention_heads": 14, "encoder_ffn_dim": 3584, "d_model": 896,
                             "n_window": 50, "n_window_infer": 800, "conv_chunksize": 500, "output_dim": 1024,
                             "downsample_hidden_size": 480, "max_source_positions": 1500},
            "text_config": {"model_type": "qwen3_asr_text", "vocab_size": VOCAB, "hidden_size": 1024,
                            "intermediate_size": 3072, "num_hidden_layers": text_layers,
                            "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
                            "hidden_act": "silu", "max_position_embeddings": 65536, "rms_norm_eps": 1e-6,
                            "rope_theta": 1000000.0, "tie_word_embeddings": True,
                            "rope_scaling": {"interleaved": True, "mrope_interleaved": True,
                                             "mrope_section": [24, 20, 20], "rope_type": "default"}},
            "audio_token_id": 151676, "audio_start_token_id": 151669, "audio_end_token_id": 151670,
        },
        "tie_word_embeddings": True,
    }


def _random(model, seed: int) -> None:
    """Every weight random with ~unit-variance activations (norms near 1), so 18 + N layers stay
    finite and no runner gets a constant-input shortcut."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    mx.random.seed(seed)
    params = []
    for name, p in tree_flatten(model.parameters()):
        if "norm" in name and name.endswith("weight") or name.endswith(("ln_post.weight",)):
            value = 1.0 + 0.05 * mx.random.normal(p.shape)
        elif name.endswith("bias"):
            value = 0.02 * mx.random.normal(p.shape)
        else:
            fan_in = p.shape[-1] if p.ndim == 2 else max(1, p.size // p.shape[0])
            value = mx.random.normal(p.shape) * (0.5 / fan_in ** 0.5)
        params.append((name, value.astype(mx.float32)))
    model.update(tree_unflatten(params))
    mx.eval(model.parameters())


def build_qwen3_asr(out: Path, text_layers: int = 4, seed: int = 0) -> Path:
    sys.path.insert(0, str(ROOT))
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from ominix.models import qwen3_asr

    out.mkdir(parents=True, exist_ok=True)
    config = qwen3_asr_config(text_layers)
    model = qwen3_asr.Model(qwen3_asr.ModelArgs.from_dict(config))
    _random(model, seed)
    weights = {}
    for name, w in tree_flatten(model.parameters()):
        if ".conv2d" in name and name.endswith(".weight"):
            w = w.transpose(0, 3, 1, 2)  # MLX (O, kH, kW, I) -> PyTorch (O, I, kH, kW), as Qwen ships it
        weights["thinker." + name] = w
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    qwen_tokenizer(out, QWEN3_ASR_TOKENS)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "chunk_length": 30, "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128,
        "hop_length": 160, "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right",
        "padding_value": 0.0, "processor_class": "Qwen3ASRProcessor", "return_attention_mask": True,
        "sampling_rate": 16000}))
    return out


NANO_ENCODER = {"output_size": 512, "attention_heads": 4, "linear_units": 2048, "num_blocks": 50, "tp_blocks": 20,
                "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1,
                "normalize_before": True, "kernel_size": 11, "sanm_shift": 0, "feat_permute": True}
NANO_ADAPTOR = {"downsample_rate": 1, "use_low_frame_rate": True, "ffn_dim": 2048, "llm_dim": 1024,
                "encoder_dim": 512, "n_layer": 2, "attention_heads": 8}
NANO_TOKENS = {151646 + 25: "<|startofspeech|>", 151646 + 26: "<|endofspeech|>"}


def qwen3_06b_config(text_layers: int) -> dict:
    return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": VOCAB, "hidden_size": 1024,
            "intermediate_size": 3072, "num_hidden_layers": text_layers, "num_attention_heads": 16,
            "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu", "max_position_embeddings": 40960,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True, "attention_bias": False,
            "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "float32"}


def _save_torch(weights: dict, file: Path) -> None:
    import numpy as np
    import torch

    torch.save({name: torch.from_numpy(np.array(w)) for name, w in weights.items()}, file)


def build_fun_asr_nano(out: Path, text_layers: int = 4, seed: int = 1) -> Path:
    """FunAudioLLM/Fun-ASR-Nano-2512's own layout: model.pt (FunASR names, PyTorch FSMN
    convolutions, llm.lm_head.weight included), config.yaml, Qwen3-0.6B/ (config + tokenizer);
    `nano_mlx_community(out)` is mlx-audio's conversion of it."""
    sys.path.insert(0, str(ROOT))
    import yaml
    from mlx.utils import tree_flatten

    from ominix.models import fun_asr_nano

    out.mkdir(parents=True, exist_ok=True)
    text = qwen3_06b_config(text_layers)
    config = {"model_type": "fun_asr_nano", "input_size": 560, "audio_encoder_conf": NANO_ENCODER,
              "audio_adaptor_conf": NANO_ADAPTOR, "text_config": text}
    model = fun_asr_nano.Model(fun_asr_nano.ModelArgs.from_dict(config))
    _random(model, seed)
    weights = dict(tree_flatten(model.parameters()))  # our tree keeps FunASR's names and FSMN layout
    weights["llm.lm_head.weight"] = weights["llm.model.embed_tokens.weight"]
    _save_torch(weights, out / "model.pt")
    (out / "config.yaml").write_text(yaml.safe_dump({
        "model": "FunASRNano", "audio_encoder": "SenseVoiceEncoderSmall", "audio_encoder_conf": NANO_ENCODER,
        "audio_adaptor": "Transformer", "audio_adaptor_conf": NANO_ADAPTOR, "llm": "Qwen3-0.6b",
        "frontend": "WavFrontend", "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80,
                                                     "frame_length": 25, "frame_shift": 10, "lfr_m": 7,
                                                     "lfr_n": 6}}, sort_keys=False))
    qwen = out / "Qwen3-0.6B"
    qwen_tokenizer(qwen, NANO_TOKENS)
    (qwen / "config.json").write_text(json.dumps(text, indent=2))
    return out


def nano_mlx_community(src: Path) -> Path:
    """mlx-audio's own converter (the one that made mlx-community/Fun-ASR-Nano-2512), float32."""
    from mlx_audio.stt.models.fun_asr_nano.convert import convert

    out = src.parent / f"{src.name}-mlx-community"
    if not (out / "config.json").exists():
        convert(src, out, dtype="float32", include_examples=False)
    return out


def build_sensevoice(out: Path) -> Path:
    """SenseVoice-Small as FunAudioLLM/SenseVoiceSmall ships it (bench_asr_funasr.py's builder)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_asr_funasr import build

    return build("sensevoice", out)


def sensevoice_mlx_community(src: Path) -> Path:
    """The layout mlx-audio's SenseVoice loads (mlx-community's): config.json + model.safetensors with
    FunASR's names (it transposes the FSMN convolutions itself), am.mvn, the BPE model."""
    import shutil

    import numpy as np
    import torch
    import yaml
    from safetensors.numpy import save_file

    out = src.parent / f"{src.name}-mlx-community"
    if (out / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    state = torch.load(src / "model.pt", map_location="cpu", weights_only=True)
    save_file({k: np.ascontiguousarray(v.numpy()) for k, v in state.items()}, str(out / "model.safetensors"))
    config = yaml.safe_load((src / "config.yaml").read_text(encoding="utf-8"))
    frontend = {k: v for k, v in config["frontend_conf"].items() if k != "cmvn_file"}
    (out / "config.json").write_text(json.dumps({"model_type": "sensevoice", "vocab_size": 25055, "input_size": 560,
                                                 "encoder_conf": config["encoder_conf"], "frontend_conf": frontend}))
    for name in ("am.mvn", "chn_jpn_yue_eng_ko_spectok.bpe.model"):
        shutil.copy(src / name, out / name)
    return out
