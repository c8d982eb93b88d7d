"""GPT-SoVITS v2's reference-audio features and SoVITS decoder against gpt-sovits-cpufast 0.1.0.

Tiny random chinese-hubert-base (config.json + pytorch_model.bin) and SoVITS `s2G*.pth` are built
and saved in the reference venv as published, converted here without torch, and compared stage by
stage: cnhubert's SSL features of a 16 kHz clip, the semantic codes `extract_latent` quantizes them
to (identical), the 32 kHz clip's linear spectrogram, the style vector, and the waveform `decode`
makes from given codes + phonemes + the reference spectrogram (the flow's noise given to both).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from ominix.engine.audio import torch_ckpt
from ominix.engine.audio.gpt_sovits import convert_hubert, convert_sovits, linear_spectrogram, load_hubert, load_sovits
from tests import gpt_sovits_venv
from tests.sovits_checkpoints import HUBERT_CONFIG, SOVITS_CONFIG

HERE = Path(__file__).parent
PHONES = [12, 300, 45, 7, 600, 88, 231, 5, 99, 410, 3]
CODES = [5, 1000, 77, 77, 512, 3, 64, 900, 250, 18, 731, 6, 400]


def _clip(rate: int, seconds: float, seed: int) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    voiced = 0.4 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (voiced + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("sovits")
    python = gpt_sovits_venv.python()
    inter = SOVITS_CONFIG["model"]["inter_channels"]
    arrays = {"wav16": _clip(16000, 1.3, 1), "wav32": _clip(32000, 1.1, 2),
              "noise": np.random.default_rng(3).standard_normal((1, inter, 2 * len(CODES))).astype(np.float32)}  # fmt: skip
    for name, a in arrays.items():
        np.save(root / f"{name}.npy", a)
    spec = {"seed": 0, "hubert_config": HUBERT_CONFIG, "hubert_dir": str(root / "chinese-hubert-base"),
            "sovits_config": SOVITS_CONFIG, "sovits_path": str(root / "s2G-tiny.pth"), "phones": PHONES,
            "codes": CODES, "results": str(root / "ref.npz"), **{k: str(root / f"{k}.npy") for k in arrays}}  # fmt: skip
    (root / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([str(python), str(HERE / "sovits_reference.py"), str(root / "spec.json")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return root, arrays, dict(np.load(root / "ref.npz"))


@pytest.fixture(scope="module")
def converted(reference, tmp_path_factory):
    root, _, _ = reference
    out = tmp_path_factory.mktemp("converted")
    hubert = load_hubert(convert_hubert(root / "chinese-hubert-base", out / "hubert"))
    sovits = load_sovits(convert_sovits(root / "s2G-tiny.pth", out / "sovits"))
    return hubert, sovits


def test_cnhubert_features_match_reference(reference, converted):
    _, arrays, ref = reference
    hubert, _ = converted
    ssl = np.array(hubert(mx.array(arrays["wav16"])[None])[0])
    assert ssl.shape == ref["ssl"].shape and ssl.shape[1] == 768
    np.testing.assert_allclose(ssl, ref["ssl"], atol=2e-4, rtol=1e-3)


def test_quantizer_codes_match_reference(reference, converted):
    _, _, ref = reference
    _, sovits = converted
    codes = np.array(sovits.extract_latent(mx.array(ref["ssl"])[None])[0])
    assert len(codes) == len(ref["ssl"]) // 2
    assert codes.tolist() == ref["codes"].tolist()
    assert len(set(codes.tolist())) > 1  # not a degenerate all-one-code case


def test_spectrogram_and_style_match_reference(reference, converted):
    _, arrays, ref = reference
    _, sovits = converted
    spec = linear_spectrogram(arrays["wav32"])
    np.testing.assert_allclose(spec, ref["spec"].T, atol=2e-4, rtol=1e-4)
    ge = np.array(sovits.style(mx.array(spec)[None])[0, 0])
    np.testing.assert_allclose(ge, ref["ge"], atol=1e-4, rtol=1e-3)


def test_decoder_waveform_matches_reference(reference, converted):
    _, arrays, ref = reference
    _, sovits = converted
    ge = sovits.style(mx.array(ref["spec"].T)[None])
    noise = mx.array(arrays["noise"].transpose(0, 2, 1))
    wav = np.array(sovits.decode(mx.array([CODES]), mx.array([PHONES]), ge, noise)[0])
    assert wav.shape == ref["wav"].shape == (len(CODES) * sovits.samples_per_code,)
    assert np.abs(ref["wav"]).max() > 0.05  # a real signal, not silence
    np.testing.assert_allclose(wav, ref["wav"], atol=2e-4, rtol=1e-3)


def test_sovits_checkpoint_heads(reference, tmp_path):
    root, _, _ = reference
    raw = (root / "s2G-tiny.pth").read_bytes()
    (tmp_path / "v2-head.pth").write_bytes(b"01" + raw[2:])  # newer GPT-SoVITS' version head
    assert (convert_sovits(tmp_path / "v2-head.pth", tmp_path / "a") / "model.safetensors").is_file()
    (tmp_path / "pro.pth").write_bytes(b"05" + raw[2:])
    with pytest.raises(torch_ckpt.CheckpointError, match="v2Pro"):
        convert_sovits(tmp_path / "pro.pth", tmp_path / "b")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(torch_ckpt.CheckpointError):
        convert_sovits(tmp_path / "junk.pth", tmp_path / "c")
