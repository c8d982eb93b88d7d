"""Tokenizer, chat templates and streaming detokenization, checked against transformers."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, normalizers, trainers

from ominix.engine.llm.tokenizer import ChatTemplateError, StopMatcher, TokenizerError, load_tokenizer
from tests.tokenizer_fixture import VOCAB_SIZE, make_tokenizer, special_ids

TEXTS = [
    "Hello world! How are you today?",
    "你好，世界！今天天气很好。机器学习",
    "Emoji: 😀🚀 👍🏽 🇫🇷 ❤️ and a family 👨‍👩‍👧",
    "  leading spaces and\ttabs\n\n    def f(x):\n        return x * 2\n",
    "Mixed: café 北京 🍕 <think>\nreasoning\n</think>\n\nanswer<|im_end|>",
    "Rare bytes: \u0394\u03b1 \u0416 \u05d0 \u0e01 \U0001f9ec end",
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather in a city — 天气",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["city"],
            },
        },
    }
]

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Hi there!"}],
    "system_multi_turn": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "<think>\nsimple sum\n</think>\n\n4"},
        {"role": "user", "content": "And 你好 times 😀?"},
    ],
    "reasoning_field": [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1", "reasoning_content": "thought about it"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2", "reasoning_content": "more thought"},
    ],
    "tool_round_trip": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "東京"}'}},
            ],
        },
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "tool", "content": '{"temp": 25, "note": "晴れ"}'},
        {"role": "assistant", "content": "Paris 21°C, Tokyo 25°C."},
        {"role": "user", "content": "Thanks!"},
    ],
    # content None: Qwen2.5's template copes, Qwen3-0.6B's original one fails in transformers too.
    "tool_call_null_content": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "東京"}'}},
            ],
        },
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "tool", "content": '{"temp": 25, "note": "晴れ"}'},
    ],
}


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("qwen3tok"), flavor="qwen3")


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    # Template in chat_template.jinja, the layout newer transformers write.
    return make_tokenizer(tmp_path_factory.mktemp("qwen2tok"), flavor="qwen2", template_file=True)


@pytest.fixture(scope="module")
def hf(qwen3_dir, qwen2_dir):
    from transformers import AutoTokenizer

    return {"qwen3": AutoTokenizer.from_pretrained(str(qwen3_dir)), "qwen2": AutoTokenizer.from_pretrained(str(qwen2_dir))}


def test_fixture_vocab_matches_declared_size(qwen3_dir):
    tok = load_tokenizer(qwen3_dir)
    assert tok.vocab_size == VOCAB_SIZE
    ids = special_ids(qwen3_dir)
    assert ids["<|endoftext|>"] == VOCAB_SIZE - 26 and ids["</think>"] == VOCAB_SIZE - 1


def test_encode_decode_match_transformers(qwen3_dir, hf):
    tok = load_tokenizer(qwen3_dir)
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == hf["qwen3"].encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
        assert tok.decode(ids, skip_special_tokens=True) == hf["qwen3"].decode(ids, skip_special_tokens=True)


def test_eos_and_special_tokens(qwen3_dir):
    tok = load_tokenizer(qwen3_dir)
    ids = special_ids(qwen3_dir)
    assert tok.eos_token_ids == {ids["<|im_end|>"], ids["<|endoftext|>"]}
    assert tok.bos_token_id is None
    assert tok.special_tokens == {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    assert tok.generation_config["top_k"] == 20


@pytest.mark.parametrize("flavor", ["qwen3", "qwen2"])
@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("with_tools", [False, True])
def test_chat_template_matches_transformers(flavor, name, with_tools, qwen3_dir, qwen2_dir, hf):
    tok = load_tokenizer(qwen3_dir if flavor == "qwen3" else qwen2_dir)
    messages = CONVERSATIONS[name]
    tools = TOOLS if with_tools else None
    for add_generation_prompt in (True, False):
        for extra in ({}, {"enable_thinking": False}, {"enable_thinking": True}):
            kwargs = dict(tools=tools, add_generation_prompt=add_generation_prompt, **extra)
            try:
                theirs = hf[flavor].apply_chat_template(messages, tokenize=False, **kwargs)
            except Exception:  # the template itself fails: we must fail too, with our error type
                with pytest.raises(ChatTemplateError):
                    tok.apply_chat_template(messages, **kwargs)
                return
            assert tok.apply_chat_template(messages, **kwargs) == theirs, (flavor, name, kwargs)
    ids = tok.apply_chat_template(messages, tools=tools, tokenize=True)
    assert ids == hf[flavor].apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False)


def test_qwen3_thinking_switch_renders_empty_think_block(qwen3_dir):
    tok = load_tokenizer(qwen3_dir)
    on = tok.apply_chat_template(CONVERSATIONS["single"])
    off = tok.apply_chat_template(CONVERSATIONS["single"], enable_thinking=False)
    assert on.endswith("<|im_start|>assistant\n")
    assert off == on + "<think>\n\n</think>\n\n"


def test_named_templates_and_template_features(tmp_path, hf):
    from transformers import AutoTokenizer

    path = make_tokenizer(tmp_path / "named")
    config = json.loads((path / "tokenizer_config.json").read_text())
    default = (
        "{% for m in messages %}{% if m.role == 'bad' %}{{ raise_exception('no bad roles') }}{% endif %}"
        "{% if loop.index > 3 %}{% break %}{% endif %}"
        "{% generation %}[{{ m.role }}]{{ m.content | tojson(indent=2) }}{% endgeneration %}\n{% endfor %}"
        "{{ eos_token }}{{ strftime_now('%Y') | length }}"
    )
    tool_use = "TOOLS {{ tools | tojson }} {{ messages | length }}"
    config["chat_template"] = [{"name": "default", "template": default}, {"name": "tool_use", "template": tool_use}]
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    tok, ref = load_tokenizer(path), AutoTokenizer.from_pretrained(str(path))
    messages = [{"role": "user", "content": f"m{i} — ü"} for i in range(5)]
    assert tok.apply_chat_template(messages) == ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert tok.apply_chat_template(messages, tools=TOOLS) == ref.apply_chat_template(messages, tools=TOOLS, tokenize=False)
    assert tok.apply_chat_template(messages).count("[user]") == 3
    with pytest.raises(ChatTemplateError, match="no bad roles"):
        tok.apply_chat_template([{"role": "bad", "content": "x"}])


def test_template_errors_are_clear(tmp_path):
    path = make_tokenizer(tmp_path / "t")
    config = json.loads((path / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = load_tokenizer(path)
    assert tok.chat_template is None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])
    (path / "chat_template.jinja").write_text("{% if %}")
    with pytest.raises(ChatTemplateError, match="syntax error"):
        load_tokenizer(path).apply_chat_template([{"role": "user", "content": "hi"}])
    with pytest.raises(ChatTemplateError, match="empty"):
        load_tokenizer(path).apply_chat_template([])


def test_missing_or_corrupt_tokenizer_files(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": 3')
    with pytest.raises(TokenizerError, match="could not be read"):
        load_tokenizer(tmp_path)
    path = make_tokenizer(tmp_path / "ok")
    (path / "generation_config.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="generation_config.json is not valid JSON"):
        load_tokenizer(path)


def _stream(tok, ids, skip_special_tokens=False):
    detok = tok.detokenizer(skip_special_tokens=skip_special_tokens)
    pieces, widest = [], 0
    for i in ids:
        pieces.append(detok.add_token(i))
        widest = max(widest, len(detok._tokens))
    pieces.append(detok.finalize())
    return pieces, widest, detok


def test_streaming_detokenizer_equals_full_decode(qwen3_dir):
    tok = load_tokenizer(qwen3_dir)
    for text in TEXTS:
        ids = tok.encode(text)
        for skip in (False, True):
            pieces, widest, detok = _stream(tok, ids, skip)
            assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip) == detok.text
            assert not any("\ufffd" in p for p in pieces)  # never a broken half-character
            assert widest <= 8  # a small window, not the whole sequence


def test_streaming_detokenizer_long_text_window_stays_small(qwen3_dir):
    tok = load_tokenizer(qwen3_dir)
    ids = tok.encode(" ".join(TEXTS) * 30)
    pieces, widest, _ = _stream(tok, ids)
    assert "".join(pieces) == tok.decode(ids)
    assert widest <= 8


def test_streaming_detokenizer_holds_incomplete_character(qwen3_dir):
    tok = load_tokenizer(qwen3_dir)
    ids = tok.encode("😀")
    assert len(ids) >= 2  # the emoji's bytes are split across tokens in this small vocab
    detok = tok.detokenizer()
    assert detok.add_token(ids[0]) == ""
    assert "".join(detok.add_token(i) for i in ids[1:]) == "😀"
    # A truncated character at the very end is flushed by finalize() (as the full decode shows it).
    detok = tok.detokenizer()
    assert detok.add_token(ids[0]) == ""
    assert detok.finalize() == tok.decode(ids[:1])


def _sentencepiece_style_tokenizer():
    """Llama-2 style: Metaspace "▁" spaces, byte fallback for unknown characters."""
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Backend(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens], show_progress=False)
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog " * 5, "hello world hello there"], trainer=trainer)
    return tok


def test_streaming_detokenizer_sentencepiece_style(tmp_path):
    _sentencepiece_style_tokenizer().save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    tok = load_tokenizer(tmp_path)
    assert tok.bos_token_id == 1 and tok.eos_token_ids == {2}
    for text in ["hello world", "  the lazy   fox", "über 北京 😀 the end", "fox😀dog"]:
        ids = tok.encode(text)
        pieces, widest, _ = _stream(tok, ids)
        assert "".join(pieces) == tok.decode(ids)
        assert not any("\ufffd" in p for p in pieces)
        assert widest <= 8


def test_stop_matcher_spans_pieces_and_holds_prefixes():
    m = StopMatcher(["STOP", "\n\n"])
    assert m.feed("Hello S") == ("Hello ", False)
    assert m.feed("T") == ("", False)
    assert m.feed("OP and more") == ("", True)
    m = StopMatcher(["STOP"])
    assert m.feed("ST") == ("", False)
    assert m.feed("ART") == ("START", False)
    assert m.feed("x\n") == ("x\n", False)
    assert m.feed("S") == ("", False)
    assert m.flush() == "S"
    m = StopMatcher(["abc", "b"])
    assert m.feed("xab") == ("xa", True)  # earliest stop wins
    assert StopMatcher(None).feed("anything") == ("anything", False)
