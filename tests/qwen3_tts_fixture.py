"""Tiny random Qwen3-TTS 12Hz checkpoints and the reference's outputs on them (qwen-tts 0.1.1).

`reference_run(root, variant)` builds (once per directory) a checkpoint of `variant`
("custom_voice" or "base") with qwen-tts' own classes in its own venv, in the layout Qwen publishes
(model.safetensors with PyTorch names, speech_tokenizer/, vocab.json + merges.txt without a
tokenizer.json) and returns (checkpoint dir, reference results). `to_mlx_8bit(src, dst)` turns it
into the mlx-community 8-bit layout (talker linears quantized, embeddings / speaker encoder / speech
tokenizer left float, convolutions in MLX order).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from tests.refvenv import reference_python
from tests.tokenizer_fixture import VOCAB_SIZE, make_tokenizer

HERE = Path(__file__).parent
REQUIREMENTS = ["torch==2.13.0", "transformers==4.57.3", "accelerate==1.12.0", "librosa==0.11.0",
                "soundfile", "einops"]  # fmt: skip
NO_DEPS = ["qwen-tts==0.1.1"]

TTS_TOKENS = ["<|tts_pad|>", "<|tts_text_bos|>", "<|tts_text_eod|>"]
TEXT_VOCAB = VOCAB_SIZE + len(TTS_TOKENS)
CODEBOOK = 64
GROUPS = 4
CODEC_VOCAB = 1024 + CODEBOOK  # the last 1024 ids are control ids, as in the real 3072 = 2048 + 1024
SPEAKERS = {"vivian": [1050], "dylan": [1051]}
LANGUAGES = {"english": 1060, "chinese": 1061, "beijing_dialect": 1062}
GENERATION = {"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.9, "top_p": 1.0, "top_k": 50,
              "subtalker_dosample": True, "subtalker_temperature": 0.9, "subtalker_top_k": 50,
              "subtalker_top_p": 1.0, "max_new_tokens": 8192}  # fmt: skip


def model_config(variant: str) -> dict:
    talker = dict(
        vocab_size=CODEC_VOCAB, hidden_size=128, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6, rope_theta=10000.0,
        rope_scaling={"interleaved": True, "mrope_section": [4, 6, 6], "rope_type": "default"},
        num_code_groups=GROUPS, text_hidden_size=64, text_vocab_size=TEXT_VOCAB, hidden_act="silu",
        codec_eos_token_id=1070, codec_think_id=1071, codec_nothink_id=1072, codec_think_bos_id=1073,
        codec_think_eos_id=1074, codec_pad_id=1075, codec_bos_id=1076, max_position_embeddings=4096,
        spk_id=SPEAKERS if variant != "base" else {}, codec_language_id=LANGUAGES,
        spk_is_dialect={"vivian": False, "dylan": "beijing_dialect"} if variant != "base" else {},
        code_predictor_config=dict(
            vocab_size=CODEBOOK, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
            rope_theta=10000.0, num_code_groups=GROUPS, max_position_embeddings=64,
        ),
    )  # fmt: skip
    config = dict(
        talker_config=talker, tokenizer_type="qwen3_tts_tokenizer_12hz", tts_model_size="1b7",
        tts_model_type=variant, im_start_token_id=VOCAB_SIZE - 25, im_end_token_id=VOCAB_SIZE - 24,
        tts_pad_token_id=VOCAB_SIZE, tts_bos_token_id=VOCAB_SIZE + 1, tts_eos_token_id=VOCAB_SIZE + 2,
    )  # fmt: skip
    if variant == "base":
        config["speaker_encoder_config"] = dict(
            mel_dim=128, enc_dim=128, enc_channels=[32, 32, 32, 32, 96], enc_kernel_sizes=[5, 3, 3, 3, 1],
            enc_dilations=[1, 2, 3, 4, 1], enc_attention_channels=16, enc_res2net_scale=4,
            enc_se_channels=16, sample_rate=24000,
        )  # fmt: skip
    return config


def tokenizer_config() -> dict:
    decoder = dict(
        codebook_size=CODEBOOK, codebook_dim=32, hidden_size=32, latent_dim=48, head_dim=16,
        num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, num_hidden_layers=2,
        rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=8, num_quantizers=GROUPS,
        upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2], decoder_dim=64, max_position_embeddings=8000,
        layer_scale_initial_scale=0.01, attention_bias=False, hidden_act="silu",
    )  # fmt: skip
    encoder = dict(
        sampling_rate=24000, frame_rate=500.0, audio_channels=1, hidden_size=32, num_filters=4,
        num_residual_layers=1, upsampling_ratios=[3, 2, 2, 2], kernel_size=7, last_kernel_size=3,
        residual_kernel_size=3, dilation_growth_rate=2, use_causal_conv=True, compress=2,
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
        intermediate_size=64, sliding_window=16, codebook_size=CODEBOOK, codebook_dim=16,
        num_quantizers=GROUPS, num_semantic_quantizers=1, vector_quantization_hidden_dimension=16, upsample_groups=32,
        max_position_embeddings=8000,
    )  # fmt: skip
    return dict(encoder_config=encoder, decoder_config=decoder, encoder_valid_num_quantizers=GROUPS,
                input_sample_rate=24000, output_sample_rate=24000, decode_upsample_rate=1920,
                encode_downsample_rate=48)  # fmt: skip


def qwen_tokenizer_files(dst: Path) -> Path:
    """The fixture BPE tokenizer as Qwen's TTS repos ship theirs: vocab.json, merges.txt and
    tokenizer_config.json (added tokens, TTS control tokens included), no tokenizer.json."""
    src = make_tokenizer(dst.parent / (dst.name + "-src"))
    data = json.loads((src / "tokenizer.json").read_text())
    model = data["model"]
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (dst / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = json.loads((src / "tokenizer_config.json").read_text())
    for i, token in enumerate(TTS_TOKENS):
        config["added_tokens_decoder"][str(VOCAB_SIZE + i)] = {
            "content": token, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True,
        }  # fmt: skip
    config.pop("chat_template", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    shutil.rmtree(src)
    return dst


def ref_audio(n: int = 24000 * 2) -> np.ndarray:
    t = np.arange(n) / 24000
    rng = np.random.default_rng(3)
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
            + 0.02 * rng.standard_normal(n)).astype(np.float32)  # fmt: skip


CASES = {
    "custom_voice": [
        {"kind": "custom", "text": "Hello world, how are you today?", "speaker": "vivian", "language": "English"},
        {"kind": "custom", "text": "The quick brown fox.", "speaker": "dylan", "language": "Auto",
         "instruct": "Speak slowly and sadly.", "non_streaming_mode": False},
        {"kind": "custom", "text": "The weather is sunny and the answer is 42.", "speaker": "vivian",
         "language": "Chinese", "non_streaming_mode": True},
    ],
    "base": [
        {"kind": "clone", "text": "Hello world, how are you today?", "language": "English"},
        # in-context cloning (x_vector_only_mode=False): reference codes + transcript in the prompt
        {"kind": "icl", "text": "Hello world, how are you today?", "language": "English",
         "ref_text": "The quick brown fox.", "ref_samples": 12000},
        {"kind": "icl", "text": "The weather is sunny.", "language": "Auto", "non_streaming_mode": True,
         "ref_text": "How are you doing, my friend?", "ref_samples": 6000},
        # a clip shorter (in frames) than the texts' tokens: the text runs on after the clip's frames
        {"kind": "icl", "text": "The quick brown fox jumps over the lazy dog, and the answer is 42.",
         "language": "English", "ref_samples": 2400,
         "ref_text": "Hello world, the weather is sunny and the quick brown fox is here today, my friend. "
                     "How are you doing today? The answer is 42, and the lazy dog is sleeping in the sun."},
    ],
}  # fmt: skip
ENCODE_SAMPLES = [24000 * 2, 24000 - 17]  # clip lengths the encoder parity covers (one not whole frames)
MAX_NEW_TOKENS = 14
DECODE_FRAMES = 20


def reference_run(root: Path, variant: str) -> tuple[Path, dict[str, np.ndarray]]:
    root = Path(root)
    ckpt, results = root / f"qwen3-tts-{variant}", root / f"reference-{variant}.npz"
    if not results.exists():
        python = reference_python("qwen-tts-0.1.1", REQUIREMENTS, NO_DEPS)
        audio = root / "ref_audio.npy"
        np.save(audio, ref_audio())
        spec = dict(
            checkpoint=str(ckpt), results=str(results), tokenizer=str(qwen_tokenizer_files(root / "tok")),
            config=model_config(variant), tokenizer_config=tokenizer_config(), generation_config=GENERATION,
            cases=[dict(c) for c in CASES[variant]], max_new_tokens=MAX_NEW_TOKENS, decode_frames=DECODE_FRAMES,
            ref_audio=str(audio), seed=0 if variant == "custom_voice" else 10, encode_samples=ENCODE_SAMPLES,
        )  # fmt: skip
        (root / f"spec-{variant}.json").write_text(json.dumps(spec))
        done = subprocess.run([str(python), str(HERE / "qwen3_tts_reference.py"), str(root / f"spec-{variant}.json")],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"reference run failed:\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}")
    return ckpt, dict(np.load(results))


def to_mlx_8bit(src: Path, dst: Path) -> Path:
    """What mlx-community's conversion does: quantize the talker's linears (8 bits, group 64),
    keep embeddings, the speaker encoder and the speech tokenizer float, write MLX conv order."""
    import mlx.core as mx

    shutil.copytree(src, dst)
    weights = mx.load(str(src / "model.safetensors"))
    out = {}
    for name, w in weights.items():
        is_linear = name.endswith(".weight") and w.ndim == 2 and "embedding" not in name
        if is_linear and name.startswith("talker.") and w.shape[-1] % 64 == 0:
            q, scales, biases = mx.quantize(w, group_size=64, bits=8)
            base = name[: -len(".weight")]
            out[name], out[base + ".scales"], out[base + ".biases"] = q, scales, biases
        elif w.ndim == 3 and "speaker_encoder" in name:
            out[name] = w.transpose(0, 2, 1)
        else:
            out[name] = w
    mx.save_safetensors(str(dst / "model.safetensors"), out)
    config = json.loads((src / "config.json").read_text())
    config["quantization"] = {"group_size": 64, "bits": 8}
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


def build_tiny(dst: Path, variant: str = "custom_voice", seed: int = 0) -> Path:
    """The same tiny checkpoint built without the reference (MLX random weights, our module tree
    saved under the published names), for engine, API and CLI tests that need no reference venv."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from ominix.models.qwen3_tts import Model, ModelArgs
    from ominix.models.qwen3_tts_codec import DecoderArgs, SpeechTokenizer
    from ominix.models.qwen3_tts_encoder import EncoderArgs

    dst = Path(dst)
    qwen_tokenizer_files(dst)
    config = {"model_type": "qwen3_tts", **model_config(variant)}
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    # A short cap (12 frames, ~1 s) per sentence keeps the end-to-end tests quick.
    (dst / "generation_config.json").write_text(json.dumps({**GENERATION, "max_new_tokens": TINY_FRAMES + 1}, indent=2))
    mx.random.seed(seed)

    def randomized(module) -> dict:
        out = {}
        for name, p in tree_flatten(module.parameters()):
            noise = mx.random.normal(p.shape)
            if name.endswith(("norm.weight", "layernorm.weight")) or "cluster_usage" in name:
                value = 1.0 + 0.2 * mx.abs(noise)
            elif name.endswith("bias") or name.endswith(("alpha", "beta", "gamma")) or "layer_scale" in name:
                value = 0.1 * noise
            elif "embedding" in name:
                value = 0.5 * noise
            else:
                fan_in = int(np.prod(p.shape[1:]))
                value = (0.002 if p.ndim == 3 and p.shape[0] == 1 else 1.0) * noise / fan_in**0.5
            out[name] = value
        return out

    model = Model(ModelArgs.from_dict(config))
    weights = randomized(model)
    # EOS's logit is 0 while 64 random code logits compete with it: greedy never stops early, so
    # every sentence is TINY_FRAMES frames and audio length follows the number of sentences.
    eos = config["talker_config"]["codec_eos_token_id"]
    weights["talker.codec_head.weight"][eos] = 0.0
    mx.save_safetensors(str(dst / "model.safetensors"), weights)
    codec_dir = dst / "speech_tokenizer"
    codec_dir.mkdir()
    tok = {"model_type": "qwen3_tts_tokenizer_12hz", **tokenizer_config()}
    (codec_dir / "config.json").write_text(json.dumps(tok, indent=2))
    codec = SpeechTokenizer(DecoderArgs.from_dict(tok), EncoderArgs.from_dict(tok))
    weights = {k.replace(".codebook.", "._codebook.") if k.startswith("decoder.") else k: v
               for k, v in randomized(codec).items()}  # fmt: skip
    mx.save_safetensors(str(codec_dir / "model.safetensors"), weights)
    return dst


try:  # a session fixture for the modules that import it
    import pytest

    @pytest.fixture(scope="session")
    def qwen3_tts_tiny(tmp_path_factory) -> Path:
        return build_tiny(tmp_path_factory.mktemp("qwen3tts-tiny") / "qwen3-tts-tiny")

    @pytest.fixture(scope="session")
    def qwen3_tts_tiny_base(tmp_path_factory) -> Path:
        return build_tiny(tmp_path_factory.mktemp("qwen3tts-tiny-base") / "qwen3-tts-tiny-base", "base", seed=1)
except ImportError:  # imported outside pytest
    pass

FRAME_SECONDS = 1920 / 24000  # 80 ms frames, as the real 12 Hz tokenizer
TINY_FRAMES = 12
