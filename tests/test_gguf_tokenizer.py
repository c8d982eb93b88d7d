"""GGUF tokenizers against their references. SentencePiece ("llama") vocabularies against
sentencepiece itself: a BPE model with byte fallback is trained here, its pieces, scores and types
written as tokenizer.ggml.* metadata (what llama.cpp's converter stores; no merges, so they are
recovered from the scores), and our tokenizer must split and decode every text as sentencepiece
does. Byte-level ("gpt2") vocabularies against the tokenizer.json they came from (Qwen2's split
regex here; SmolLM2's against transformers on the real file)."""

from __future__ import annotations

import io

import pytest

from ominix.engine.gguf_tokenizer import gguf_backend, gguf_tokenizer
from tests.tokenizer_fixture import _corpus

TEXTS = ["Hello world! It's 2024.", "  leading  spaces\nnew line\ttab", "你好，世界 café naïve",
         "def add(a, b): return a + b", "unseen: 🙂 Ωμέγα ж", "", " ", "a"]  # fmt: skip


@pytest.fixture(scope="module")
def sp():
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus() * 3), model_writer=model, vocab_size=800, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, add_dummy_prefix=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", minloglevel=2)  # fmt: skip
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def metadata(sp) -> dict:
    def kind(i):  # llama.cpp's token types: 1 normal, 2 unknown, 3 control, 6 byte
        return 2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1

    n = sp.get_piece_size()
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
            "tokenizer.ggml.scores": [sp.get_score(i) for i in range(n)],
            "tokenizer.ggml.token_type": [kind(i) for i in range(n)],
            "tokenizer.ggml.bos_token_id": sp.bos_id(), "tokenizer.ggml.eos_token_id": sp.eos_id(),
            "tokenizer.ggml.unknown_token_id": sp.unk_id(), "tokenizer.ggml.add_bos_token": True,
            "tokenizer.ggml.add_space_prefix": True}  # fmt: skip


def test_sentencepiece_vocabulary_splits_and_decodes_like_sentencepiece(sp):
    backend = gguf_backend(metadata(sp))
    for text in TEXTS:
        ours = backend.encode(text, add_special_tokens=False).ids
        assert ours == sp.encode(text), text
        assert backend.decode(ours) == sp.decode(ours), text
    assert sp.encode("🙂")[1:] == [sp.piece_to_id(f"<0x{b:02X}>") for b in "🙂".encode()]  # fallback ran


def test_bos_and_special_tokens(sp):
    tokenizer = gguf_tokenizer(metadata(sp))
    ids = tokenizer.encode("Hello", add_special_tokens=True)
    assert ids == [sp.bos_id()] + sp.encode("Hello")
    assert tokenizer.encode("</s>") == [sp.eos_id()]  # control tokens stay whole
    assert sp.eos_id() in tokenizer.eos_token_ids and tokenizer.special_tokens["bos_token"] == "<s>"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hello"


def test_a_file_without_a_tokenizer_is_refused():
    with pytest.raises(ValueError, match="no tokenizer"):
        gguf_tokenizer({"tokenizer.ggml.model": "llama"})
    with pytest.raises(ValueError, match="not supported"):
        gguf_tokenizer({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]})


def test_byte_level_qwen2_vocabulary_splits_like_its_tokenizer_json():
    """A Qwen2-style byte-level BPE (the test tokenizer: Qwen2's split regex, merges, added
    special tokens) exported as GGUF metadata with tokenizer.ggml.pre = "qwen2", as llama.cpp's
    converter writes it: our tokenizer must give the tokenizer.json's ids."""
    import json

    from tests.tokenizer_fixture import ADDED_TOKENS, train_tokenizer

    original = train_tokenizer()
    model = json.loads(original.to_str())["model"]
    vocab = original.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t for t, is_special in ADDED_TOKENS if is_special}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.token_type": [3 if t in special else 1 for t in tokens]}  # fmt: skip
    backend = gguf_backend(meta)
    for text in TEXTS + ["<|im_start|>user\nHi 12345 there<|im_end|>", "x  \n\n  y", "I'm 'quoted' it's"]:
        expected = original.encode(text, add_special_tokens=False).ids
        assert backend.encode(text, add_special_tokens=False).ids == expected, text
        assert backend.decode(expected) == original.decode(expected), text
