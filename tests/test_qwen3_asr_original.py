"""Qwen3-ASR in Qwen's original layout vs qwen-asr 0.0.6 (Qwen's own inference package).

qwen-asr pins transformers 4.57.6 and accelerate 1.12.0, so it runs in its own venv (built once,
cached under ~/.cache/ominix-test-venvs). There, tests/qwen3_asr_reference.py builds a tiny random
model with qwen-asr's classes, saves it (`thinker.*` tensors, PyTorch conv layout), writes
config.json as Qwen publishes it (thinker_config, M-RoPE rope_scaling with mrope_section) and the
tokenizer files Qwen's repos ship (vocab.json + merges.txt, no tokenizer.json; chat_template.json;
WhisperFeatureExtractor's preprocessor_config.json), loads it back with
`Qwen3ASRModel.from_pretrained` and records features, audio encoder output, prompt logits, greedy
tokens and `transcribe()`'s answer for a language-tagged and a context-prompt request. We load the
same directory through `load_qwen3_asr`, the path a download takes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import mlx.core as mx
from tokenizers import Tokenizer

from ominix.engine.audio.qwen3_asr import load_qwen3_asr
from tests.funasr_checkpoints import speechlike
from tests.qwen3_asr_checkpoints import make_asr_tokenizer
from tests.refvenv import reference_python

HERE = Path(__file__).parent
REQUIREMENTS = ["torch==2.13.0", "transformers==4.57.6", "accelerate==1.12.0", "librosa", "soundfile"]
NO_DEPS = ["qwen-asr==0.0.6"]  # its gradio / flask / vllm / nagisa dependencies serve the demo and the aligner
MAX_NEW_TOKENS = 44  # what our recognizer allows 2.37 s of audio (16 + 12 per second)
CASES = [
    {"language": "English", "context": "", "seconds": 2.37, "seed": 1},
    {"language": None, "context": "OminiX MLX, Qwen3-ASR 你好", "seconds": 2.37, "seed": 4},
]

# Qwen3-ASR's chat template, to the same effect as the one Qwen ships: the system turn carries the
# context, the user turn one <|audio_start|><|audio_pad|><|audio_end|> per audio item.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='', audio='') -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'system' -%}"
    "{%- if m.content is string -%}{%- set ns.system = ns.system + m.content -%}"
    "{%- else -%}{%- for c in m.content -%}{%- if c.type == 'text' -%}{%- set ns.system = ns.system + c.text -%}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- elif m.content is not string -%}"
    "{%- for c in m.content -%}{%- if c.type == 'audio' or 'audio' in c -%}"
    "{%- set ns.audio = ns.audio + '<|audio_start|><|audio_pad|><|audio_end|>' -%}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{- '<|im_start|>system\\n' + ns.system + '<|im_end|>\\n<|im_start|>user\\n' + ns.audio + '<|im_end|>\\n' -}}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def published_config(ids: dict) -> dict:
    return {
        "architectures": ["Qwen3ASRForConditionalGeneration"],
        "model_type": "qwen3_asr",
        "support_languages": ["Chinese", "English", "Cantonese", "German"],
        "thinker_config": {
            "model_type": "qwen3_asr_thinker",
            "audio_config": {"activation_function": "gelu", "num_mel_bins": 128, "encoder_layers": 2,
                             "encoder_attention_heads": 4, "encoder_ffn_dim": 64, "d_model": 32, "n_window": 50,
                             "n_window_infer": 200, "conv_chunksize": 500, "output_dim": 64,
                             "downsample_hidden_size": 8, "max_source_positions": 1500, "dropout": 0.0},
            "text_config": {"model_type": "qwen3_asr_text", "vocab_size": ids["vocab_size"], "hidden_size": 64,
                            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                            "num_key_value_heads": 2, "head_dim": 16, "hidden_act": "silu",
                            "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
                            "rope_scaling": {"interleaved": True, "mrope_interleaved": True,
                                             "mrope_section": [4, 2, 2], "rope_type": "default"},
                            "tie_word_embeddings": True, "attention_bias": False},
            "audio_token_id": ids["<|audio_pad|>"],
            "audio_start_token_id": ids["<|audio_start|>"],
            "audio_end_token_id": ids["<|audio_end|>"],
        },
        "tie_word_embeddings": True,
    }


def qwen_tokenizer_files(root: Path) -> tuple[dict[str, str], dict]:
    """The tokenizer files of a Qwen3-ASR repo: vocab.json + merges.txt (no tokenizer.json), the
    added tokens and the audio token names in tokenizer_config.json, chat_template.json."""
    root.mkdir(parents=True, exist_ok=True)
    ids = make_asr_tokenizer(root)
    Tokenizer.from_file(str(root / "tokenizer.json")).model.save(str(root))
    config = json.loads((root / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    config.update({"tokenizer_class": "Qwen2Tokenizer", "model_max_length": 131072,
                   "extra_special_tokens": {"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>",
                                            "audio_eos_token": "<|audio_end|>"}})
    files = {"vocab.json": (root / "vocab.json").read_text(), "merges.txt": (root / "merges.txt").read_text(),
             "tokenizer_config.json": json.dumps(config, ensure_ascii=False),
             "generation_config.json": (root / "generation_config.json").read_text(),
             "chat_template.json": json.dumps({"chat_template": CHAT_TEMPLATE}),
             "preprocessor_config.json": json.dumps({
                 "chunk_length": 30, "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128,
                 "hop_length": 160, "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000,
                 "padding_side": "right", "padding_value": 0.0, "processor_class": "Qwen3ASRProcessor",
                 "return_attention_mask": True, "sampling_rate": 16000})}
    return files, ids


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3asr-original")
    python = reference_python("qwen-asr-0.0.6", REQUIREMENTS, NO_DEPS)
    files, ids = qwen_tokenizer_files(root / "tok")
    cases = []
    for i, case in enumerate(CASES):
        np.save(root / f"audio{i}.npy", speechlike(case["seconds"], seed=case["seed"]))
        cases.append({**case, "audio": str(root / f"audio{i}.npy")})
    spec = {"checkpoint": str(root / "Qwen3-ASR"), "results": str(root / "results.npz"),
            "texts": str(root / "texts.json"), "config": published_config(ids), "files": files, "seed": 0,
            "scale": 2.0, "cases": cases, "max_new_tokens": MAX_NEW_TOKENS,
            "eos_token_ids": [ids["<|im_end|>"], ids["<|endoftext|>"]]}
    (root / "spec.json").write_text(json.dumps(spec, ensure_ascii=False))
    done = subprocess.run([str(python), str(HERE / "qwen3_asr_reference.py"), str(root / "spec.json")],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"qwen-asr reference run failed:\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}")
    results = dict(np.load(root / "results.npz"))
    texts = json.loads((root / "texts.json").read_text())
    return Path(spec["checkpoint"]), cases, results, texts


@pytest.fixture(scope="module")
def ours(reference):
    recognizer = load_qwen3_asr(reference[0])
    recognizer.max_new_tokens = MAX_NEW_TOKENS
    return recognizer


def test_the_checkpoint_is_in_the_original_layout(reference):
    from safetensors import safe_open

    ckpt = reference[0]
    with safe_open(str(ckpt / "model.safetensors"), "np") as f:
        names = list(f.keys())
        conv = f.get_tensor("thinker.audio_tower.conv2d1.weight")
    assert names and all(n.startswith("thinker.") for n in names)
    assert "thinker.audio_tower.proj1.weight" in names and "thinker.model.embed_tokens.weight" in names
    assert conv.shape == (8, 1, 3, 3)  # PyTorch (out, in, kH, kW)
    assert not (ckpt / "tokenizer.json").exists()
    config = json.loads((ckpt / "config.json").read_text())
    assert config["thinker_config"]["text_config"]["rope_scaling"]["mrope_section"] == [4, 2, 2]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_prompt_features_and_encoder_match(reference, ours, case):
    _, cases, results, _ = reference
    c = cases[case]
    audio = np.load(c["audio"])
    got = ours.generate(audio, language=c["language"], context=c["context"] or None)
    assert got["prompt"] == results[f"{case}.input_ids"].tolist()
    mel, frames = ours.features(audio)
    assert frames == int(results[f"{case}.feature_frames"])
    np.testing.assert_allclose(np.array(mel), results[f"{case}.features"][:, :frames], atol=1e-4)
    encoded = ours.model.audio_tower(mel, frames)
    want = results[f"{case}.audio"]
    assert encoded.shape == want.shape
    np.testing.assert_allclose(np.array(encoded), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_logits_tokens_and_text_match(reference, ours, case):
    _, cases, results, texts = reference
    c = cases[case]
    audio = np.load(c["audio"])
    got = ours.generate(audio, language=c["language"], context=c["context"] or None)
    mel, frames = ours.features(audio)
    embeds = ours.model.embed(mx.array([got["prompt"]]), ours.model.audio_tower(mel, frames))
    logits = np.array(ours.model.forward_embeddings(embeds)[0])
    np.testing.assert_allclose(logits, results[f"{case}.logits"], atol=2e-3, rtol=1e-3)
    want = results[f"{case}.tokens"].tolist()
    assert len(want) > 10 and len(set(want)) > 3  # a real generation, not an immediate stop
    assert got["tokens"] == want
    answer = texts[case]
    if c["language"]:
        assert got["language"] == "en" and answer["language"] == "English"
    assert got["text"] == answer["text"].strip()


def test_looping_answers_collapse_as_qwen_asr_cleans_them():
    from ominix.engine.audio.qwen3_asr import collapse_repeats, parse_answer

    assert collapse_repeats("ab" + "x" * 21 + "cd") == "abxcd"
    assert collapse_repeats("x" * 20) == "x" * 20  # 20 in a row is still speech
    assert collapse_repeats("go " + "la " * 25 + "end") == "go la end"
    assert collapse_repeats("hello world") == "hello world"
    assert parse_answer("language English<asr_text>ok " + "yes " * 30 + "done") == {"language": "en", "text": "ok yes done"}
