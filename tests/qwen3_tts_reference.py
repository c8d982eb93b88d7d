"""Runs inside the qwen-tts 0.1.1 reference venv (see tests/qwen3_tts_fixture.py), not under pytest.

    python qwen3_tts_reference.py spec.json

Builds a tiny random Qwen3-TTS 12Hz checkpoint with qwen-tts' own classes and `save_pretrained`
(talker + code predictor [+ speaker encoder] in `model.safetensors`, the speech tokenizer in
`speech_tokenizer/`), copies in the given tokenizer files, loads it back through
`Qwen3TTSModel.from_pretrained` (the path a download takes) and records, for each case: the
talker's logits at every step, the code predictor's logits, the greedy codes and the decoded
waveform; plus a standalone decode of random codes and (Base) a speaker embedding.
"""

from __future__ import annotations

import importlib.machinery
import json
import shutil
import sys
import types
from pathlib import Path


def _stub(name: str) -> None:
    # torchaudio's wheels do not load with torch 2.13; qwen-tts only needs torchaudio.compliance.kaldi
    # (and sox / onnxruntime) for the 25 Hz tokenizer, which these tests never build.
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__path__ = []
    sys.modules[name] = module


for _name in ("torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi", "sox", "onnxruntime"):
    _stub(_name)
sys.modules["torchaudio"].compliance = sys.modules["torchaudio.compliance"]
sys.modules["torchaudio.compliance"].kaldi = sys.modules["torchaudio.compliance.kaldi"]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from qwen_tts import Qwen3TTSModel  # noqa: E402
from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration  # noqa: E402
from qwen_tts.core import Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model  # noqa: E402


def randomize(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif "cluster_usage" in name:
                p.copy_(1.0 + noise.abs())
            elif name.endswith(("alpha", "beta")) or "layer_scale" in name or name.endswith("gamma"):
                p.copy_(0.3 * noise)
            elif "embedding" in name:
                p.copy_(0.5 * noise)
            else:
                fan_in = p[0].numel() if p.ndim > 1 else p.shape[-1]
                # The vocoder's last conv (one output channel) is kept small so that the random
                # waveform stays inside [-1, 1] instead of clipping, which would hide differences.
                scale = 0.002 if p.ndim == 3 and p.shape[0] == 1 else 1.0
                p.copy_(scale * noise / fan_in**0.5)


def build(spec: dict) -> Path:
    out = Path(spec["checkpoint"])
    out.mkdir(parents=True, exist_ok=True)
    config = Qwen3TTSConfig(**spec["config"])
    torch.manual_seed(0)
    model = Qwen3TTSForConditionalGeneration(config)
    randomize(model, spec.get("seed", 0))
    model.save_pretrained(out, safe_serialization=True)
    # The published config.json lists only the speaker encoder's own fields (save_pretrained adds
    # PretrainedConfig's, which Qwen3TTSSpeakerEncoderConfig's __init__ does not accept).
    saved = json.loads((out / "config.json").read_text())
    fields = ("mel_dim", "enc_dim", "enc_channels", "enc_kernel_sizes", "enc_dilations",
              "enc_attention_channels", "enc_res2net_scale", "enc_se_channels", "sample_rate")
    saved["speaker_encoder_config"] = {k: v for k, v in saved["speaker_encoder_config"].items() if k in fields}
    (out / "config.json").write_text(json.dumps(saved, indent=2))
    (out / "generation_config.json").write_text(json.dumps(spec["generation_config"], indent=2))

    tok_config = Qwen3TTSTokenizerV2Config(**spec["tokenizer_config"])
    codec = Qwen3TTSTokenizerV2Model(tok_config)
    randomize(codec, spec.get("seed", 0) + 1)
    codec.save_pretrained(out / "speech_tokenizer", safe_serialization=True)
    (out / "speech_tokenizer" / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "EncodecFeatureExtractor", "feature_size": 1, "padding_side": "right",
        "padding_value": 0.0, "return_attention_mask": True, "sampling_rate": 24000,
    }))  # fmt: skip
    for f in Path(spec["tokenizer"]).iterdir():
        shutil.copy(f, out / f.name)
    return out


class Recorder:
    """Forward hooks that keep every output of the talker's codec_head and the predictor's heads."""

    def __init__(self, talker):
        self.talker, self.predictor = [], []
        talker.codec_head.register_forward_hook(lambda m, i, o: self.talker.append(o[0, -1].float().numpy()))
        for head in talker.code_predictor.lm_head:
            head.register_forward_hook(lambda m, i, o: self.predictor.append(o[0, -1].float().numpy()))


def run(spec: dict) -> None:
    ckpt = build(spec)
    tts = Qwen3TTSModel.from_pretrained(str(ckpt), dtype=torch.float32, attn_implementation="eager")
    rec = Recorder(tts.model.talker)
    results: dict[str, np.ndarray] = {}
    greedy = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=spec["max_new_tokens"])
    for i, case in enumerate(spec["cases"]):
        rec.talker.clear()
        rec.predictor.clear()
        kind = case.pop("kind")
        with torch.no_grad():
            if kind == "custom":
                wavs, sr = tts.generate_custom_voice(**case, **greedy)
            elif kind == "clone":
                audio = np.load(spec["ref_audio"])
                wavs, sr = tts.generate_voice_clone(ref_audio=(audio, 24000), x_vector_only_mode=True, **case, **greedy)
            else:  # in-context cloning
                audio = np.load(spec["ref_audio"])[: case.pop("ref_samples")]
                wavs, sr = tts.generate_voice_clone(ref_audio=(audio, 24000), x_vector_only_mode=False, **case, **greedy)
        results[f"{i}/talker_logits"] = np.stack(rec.talker)
        results[f"{i}/predictor_logits"] = np.stack(rec.predictor)
        results[f"{i}/wav"] = wavs[0]
    codes = np.random.default_rng(5).integers(0, spec["tokenizer_config"]["decoder_config"]["codebook_size"],
                                              size=(1, spec["decode_frames"], spec["config"]["talker_config"]["num_code_groups"]))  # fmt: skip
    wav, _ = tts.model.speech_tokenizer.decode([{"audio_codes": codes[0]}])
    results["decode/codes"] = codes[0]
    results["decode/wav"] = wav[0]
    if spec["config"].get("tts_model_type") == "base":
        audio = np.load(spec["ref_audio"]).astype(np.float32)
        with torch.no_grad():
            results["speaker/embedding"] = tts.model.extract_speaker_embedding(audio, 24000).float().numpy()
            for n in spec["encode_samples"]:
                enc = tts.model.speech_tokenizer.encode(audio[:n], sr=24000)
                results[f"encode/{n}"] = enc.audio_codes[0].numpy()
    np.savez(spec["results"], **results)


if __name__ == "__main__":
    run(json.loads(Path(sys.argv[1]).read_text()))
