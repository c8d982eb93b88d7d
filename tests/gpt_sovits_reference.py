"""Runs inside the gpt-sovits-cpufast 0.1.0 reference venv (tests/test_gpt_sovits.py), not under pytest.

    python gpt_sovits_reference.py spec.json

Builds the GPT (Text2SemanticDecoder) at tiny widths with random weights, saves it as GPT-SoVITS
does (`{"weight": {"model." + name: tensor}, "config": config}` via torch.save, a `.ckpt`), then
runs the reference's own decode loop (`infer_panel_naive`, top_k=1: greedy with its repetition
penalty and EOS rules) and records the logits of every step and the semantic tokens.
"""

from __future__ import annotations

import json
import site
import sys
import types
from pathlib import Path

for base in site.getsitepackages():  # the package's sources import `AR...` as a top-level package
    if (Path(base) / "GPT_SoVITS").is_dir():
        sys.path.insert(0, str(Path(base) / "GPT_SoVITS"))
metrics = types.ModuleType("torchmetrics.classification")  # training-only accuracy metric
metrics.MulticlassAccuracy = lambda *a, **k: None
sys.modules["torchmetrics"] = types.ModuleType("torchmetrics")
sys.modules["torchmetrics.classification"] = metrics

import numpy as np  # noqa: E402
import torch  # noqa: E402
from AR.models.t2s_model import Text2SemanticDecoder  # noqa: E402


def main(spec: dict) -> None:
    torch.manual_seed(spec["seed"])
    config = spec["config"]
    model = Text2SemanticDecoder(config, top_k=3)
    gen = torch.Generator().manual_seed(spec["seed"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif name.endswith("alpha"):
                p.copy_(1.0 + 0.3 * noise)
            elif "embedding" in name:
                p.copy_(noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)
    model.rebuild_t2s_transformer()  # its fast path holds copies of the weights
    model.eval()
    state = {"model." + k: v for k, v in model.state_dict().items()}
    torch.save({"weight": state, "config": config, "info": "tiny random"}, spec["ckpt"])
    logits = []
    model.ar_predict_layer.register_forward_hook(lambda m, i, o: logits.append(o[0].float().numpy().copy()))
    phones = torch.tensor([spec["phones"]])
    bert = torch.from_numpy(np.load(spec["bert"]))[None].transpose(1, 2)  # [1, 1024, Tx]
    prompt = torch.tensor([spec["prompt"]])
    with torch.no_grad():
        y, idx = model.infer_panel(phones, torch.tensor([phones.shape[1]]), prompt, bert, top_k=1, top_p=1.0,
                                   temperature=1.0, early_stop_num=spec["max_tokens"], repetition_penalty=1.35)
    np.savez(spec["results"], logits=np.stack(logits), tokens=y[0].numpy())


if __name__ == "__main__":
    main(json.loads(Path(sys.argv[1]).read_text()))
