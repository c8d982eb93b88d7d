"""Runs inside the gpt-sovits-cpufast 0.1.0 reference venv (tests/test_sovits.py), not under pytest.

    python sovits_reference.py spec.json

Builds, with random weights at tiny widths, the two checkpoints in their published layouts and
then reads them back the way GPT-SoVITS' TTS does:
- chinese-hubert-base: `config.json` + `pytorch_model.bin` (the HubertModel state dict, weight_g /
  weight_v on the positional convolution), loaded through `CNHubert(base_path)`;
- the SoVITS generator `s2G*.pth`: `{"weight": state_dict, "config": hps, "info": ...}` via
  torch.save, loaded with `load_sovits_new`, `SynthesizerTrn(...)`, `load_state_dict(strict=False)`
  and `dec.remove_weight_norm()`, as `TTS.init_vits_weights` does.
Then records: the SSL features of a 16 kHz clip (`cnhubert.model(wav)["last_hidden_state"]`), the
semantic codes `extract_latent` gives for them, the linear spectrogram of a 32 kHz clip
(`spectrogram_torch`), the style vector and the waveform `decode(codes, phones, refer)` makes, with
the flow's noise fixed to a given array.
"""

from __future__ import annotations

import json
import site
import sys
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

for base in site.getsitepackages():  # the package's sources import `module...` as top-level packages
    if (Path(base) / "GPT_SoVITS").is_dir():
        sys.path.insert(0, str(Path(base) / "GPT_SoVITS"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from feature_extractor.cnhubert import CNHubert, HubertInferenceModel  # noqa: E402
from module.mel_processing import spectrogram_torch  # noqa: E402
from module.models import SynthesizerTrn  # noqa: E402


def randomize(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("weight_g"):
                p.copy_(0.6 + 0.4 * noise.abs())
            elif name.endswith(("gamma", "norm.weight")) or ("layer_norm" in name and name.endswith("weight")):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith(("bias", "beta")):
                p.copy_(0.05 * noise)
            elif p.ndim >= 2 and "embed" not in name and "emb_rel" not in name:
                fan_in = p[0].numel() if p.ndim > 1 else p.numel()
                p.copy_(noise / fan_in**0.5)
            else:
                p.copy_(noise * 0.3)
        for name, b in model.named_buffers():  # the VQ codebook is a buffer
            if name.endswith("_codebook.embed"):
                b.copy_(torch.randn(b.shape, generator=gen))
            elif name.endswith("_codebook.inited"):  # a trained codebook (no k-means init on first use)
                b.fill_(1.0)


def build_hubert(spec: dict) -> CNHubert:
    folder = Path(spec["hubert_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    config = spec["hubert_config"]
    model = HubertInferenceModel(SimpleNamespace(**config))
    randomize(model, spec["seed"])
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0, "return_attention_mask": False, "sampling_rate": 16000}))
    return CNHubert(str(folder)).eval()


def load_sovits(path: str) -> dict:  # process_ckpt.load_sovits_new, without its i18n import
    with open(path, "rb") as f:
        head = f.read(2)
        data = f.read()
    if head != b"PK":
        return torch.load(BytesIO(b"PK" + data), map_location="cpu", weights_only=False)
    return torch.load(path, map_location="cpu", weights_only=False)


def build_sovits(spec: dict) -> SynthesizerTrn:
    hps = spec["sovits_config"]

    def make():
        return SynthesizerTrn(hps["data"]["filter_length"] // 2 + 1,
                              hps["train"]["segment_size"] // hps["data"]["hop_length"],
                              n_speakers=hps["data"]["n_speakers"], **hps["model"])  # fmt: skip

    model = make()
    randomize(model, spec["seed"] + 1)
    torch.save({"weight": model.state_dict(), "config": hps, "info": "tiny random"}, spec["sovits_path"])
    dict_s2 = load_sovits(spec["sovits_path"])
    model = make()
    model.load_state_dict(dict_s2["weight"], strict=False)
    model.dec.remove_weight_norm()
    return model.eval()


def main(spec: dict) -> None:
    if "gpt" in spec:  # also the GPT checkpoint, in this same process (one torch start-up)
        sys.path.insert(0, str(Path(__file__).parent))
        import gpt_sovits_reference

        gpt_sovits_reference.main(spec["gpt"])
    torch.manual_seed(spec["seed"])
    hubert = build_hubert(spec)
    sovits = build_sovits(spec)
    wav16 = torch.from_numpy(np.load(spec["wav16"]))
    wav32 = torch.from_numpy(np.load(spec["wav32"]))
    noise = torch.from_numpy(np.load(spec["noise"]))  # [1, inter, 2T]
    phones = torch.tensor([spec["phones"]])
    with torch.no_grad():
        ssl = hubert.model(wav16[None])["last_hidden_state"]  # [1, frames, 768]
        codes = sovits.extract_latent(ssl.transpose(1, 2))  # [1, 1, frames // 2]
        spec32 = spectrogram_torch(wav32[None], 2048, 32000, 640, 2048, center=False)  # [1, 1025, frames]
        ge, _ = sovits.build_decode_condition(spec32)
        given = torch.tensor([[spec["codes"]]])
        sovits._sample_decode_noise_like = lambda target, *a, **k: noise[:, :, : target.shape[-1]]
        wav = sovits.decode(given, phones, spec32, noise_scale=0.5)
    np.savez(spec["results"], ssl=ssl[0].numpy(), codes=codes[0, 0].numpy(), spec=spec32[0].numpy(),
             ge=ge[0, :, 0].numpy(), wav=wav[0, 0].numpy())  # fmt: skip


if __name__ == "__main__":
    main(json.loads(Path(sys.argv[1]).read_text()))
