"""A tiny random GPT-SoVITS v2 model folder in lj1995/GPT-SoVITS' published layout, for the
end-to-end tests:

    gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt   GPT (torch.save)
    gsv-v2final-pretrained/s2G2333k.pth                                    SoVITS (torch.save)
    chinese-hubert-base/{config.json, preprocessor_config.json, pytorch_model.bin}
    chinese-roberta-wwm-ext-large/{config.json, tokenizer.json, pytorch_model.bin}

The GPT, SoVITS and cnhubert checkpoints are made by the reference's own classes in its venv
(tests/gpt_sovits_reference.py, tests/sovits_reference.py, in one process); the BERT is transformers'
BertForMaskedLM with a character WordPiece tokenizer. Widths are tiny where the architecture lets
them be; the GPT reads real phoneme ids (732 symbols) and 1024 semantic codes + EOS.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from tests import gpt_sovits_venv
from tests.sovits_checkpoints import HUBERT_CONFIG, SOVITS_CONFIG

HERE = Path(__file__).parent
GPT_FILE = "gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"
SOVITS_FILE = "gsv-v2final-pretrained/s2G2333k.pth"
GPT_CONFIG = {"model": {"hidden_dim": 64, "embedding_dim": 64, "head": 4, "n_layer": 2, "vocab_size": 1025,
                        "phoneme_vocab_size": 732, "EOS": 1024, "dropout": 0.0, "linear_units": 256},
              "data": {"max_sec": 1}}  # fmt: skip  (max_sec 1: at most 50 semantic tokens a sentence)
BERT_CONFIG = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "hidden_size": 1024, "num_hidden_layers": 3,
               "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 128, "type_vocab_size": 2,
               "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0, "directionality": "bidi",
               "attention_probs_dropout_prob": 0.1, "hidden_dropout_prob": 0.1, "initializer_range": 0.02}  # fmt: skip
CHARACTERS = "你好世界今天是年月日我们一二三四五六七八九十零百千万点的了在有这个人中大来上说不到时要就出会也"


def _run_reference(script: str, spec: dict, root: Path) -> None:
    (root / f"{script}.json").write_text(json.dumps(spec))
    done = subprocess.run([str(gpt_sovits_venv.python()), str(HERE / script), str(root / f"{script}.json")],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-4000:])


def write_wordpiece_tokenizer(folder: Path, chars: list[str]) -> dict[str, int]:
    """A BERT WordPiece tokenizer.json (BertNormalizer + BertPreTokenizer: one token per CJK
    character or punctuation mark, as chinese-roberta's) over `chars`, in that order; its vocab."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])  # fmt: skip
    tok.save(str(folder / "tokenizer.json"))
    return vocab


def write_bert(folder: Path) -> None:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_wordpiece_tokenizer(folder, list(dict.fromkeys(CHARACTERS + "，。！？、,.!?")))
    config = {**BERT_CONFIG, "vocab_size": len(vocab)}
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**config)).eval()
    torch.save({k: v for k, v in model.state_dict().items()}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def build_folder(root: Path) -> Path:
    """The published layout under `root/model`; the reference's scratch files elsewhere in `root`."""
    model = root / "model"
    (model / "gsv-v2final-pretrained").mkdir(parents=True, exist_ok=True)
    scratch = root / "scratch"
    scratch.mkdir(exist_ok=True)
    np.save(scratch / "bert.npy", np.zeros((4, 1024), np.float32))
    gpt = {"seed": 5, "config": GPT_CONFIG, "ckpt": str(model / GPT_FILE), "results": str(scratch / "gpt.npz"),
           "phones": [1, 2, 3, 4], "prompt": [7, 8], "bert": str(scratch / "bert.npy"), "max_tokens": 5}  # fmt: skip
    for name, a in {"wav16": np.zeros(16000, np.float32), "wav32": np.zeros(32000, np.float32),
                    "noise": np.zeros((1, SOVITS_CONFIG["model"]["inter_channels"], 4), np.float32)}.items():  # fmt: skip
        np.save(scratch / f"{name}.npy", a)
    _run_reference("sovits_reference.py", {
        "seed": 6, "hubert_config": HUBERT_CONFIG, "hubert_dir": str(model / "chinese-hubert-base"),
        "sovits_config": SOVITS_CONFIG, "sovits_path": str(model / SOVITS_FILE), "phones": [1, 2, 3], "codes": [1, 2],
        "results": str(scratch / "sovits.npz"), "gpt": gpt,
        **{k: str(scratch / f"{k}.npy") for k in ("wav16", "wav32", "noise")}}, scratch)  # fmt: skip
    write_bert(model / "chinese-roberta-wwm-ext-large")
    shutil.rmtree(scratch)
    return model


def reference_clip(seconds: float = 4.0, rate: int = 32000, seed: int = 0) -> np.ndarray:
    """A voiced, speech-like test clip (a gliding harmonic tone with syllable-rate loudness)."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.25 * tone * envelope + noise).astype(np.float32)
