"""A small trained byte-level BPE tokenizer in the Qwen2/Qwen3 layout, for tests.

`make_tokenizer(dir)` trains BPE merges on a mixed corpus (English, Chinese, emoji, code), adds
Qwen's special tokens after the learned vocabulary (as Qwen does), and writes the same files a
Hugging Face download has: tokenizer.json, tokenizer_config.json (with the real Qwen3 or
Qwen2.5 chat template from tests/data/), special_tokens_map.json, generation_config.json.

The total vocabulary is exactly VOCAB_SIZE ids, so tiny model checkpoints can use
`vocab_size=VOCAB_SIZE` and every id the model can emit decodes to something.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

DATA = Path(__file__).parent / "data"
VOCAB_SIZE = 640  # learned BPE ids + added tokens

# Qwen2's pre-tokenizer split (the same regex its tokenizer.json carries).
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# (content, special) in Qwen's order; special=False ones are still never split (added tokens).
ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]

CORPUS = [
    "The quick brown fox jumps over the lazy dog. Hello world! How are you today?",
    "Large language models predict the next token. The answer is 42, and the weather is sunny.",
    "I think the capital of France is Paris; the capital of Japan is Tokyo.",
    "Please write a short poem about the sea, the sky and the mountains in the morning.",
    "你好，世界！今天天气很好。我们一起去公园散步吧。",
    "机器学习和人工智能正在改变世界。中文分词是一个有趣的问题。",
    "北京是中国的首都，上海是最大的城市。谢谢你的帮助！",
    "Emoji time: 😀 😃 😄 🎉 🚀 ❤️ 👍 🐍 🍕 — and flags 🇫🇷 🇯🇵.",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(i, add(i, 1))\n",
    "import json\nwith open('data.json') as f:\n    data = json.load(f)\nprint(data['name'])\n",
    'const x = {"name": "ominix", "version": 1};\nif (x.version > 0) { console.log(x.name); }\n',
    "  indented text\twith tabs\n\n  and   multiple    spaces  at the end   ",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2024 3.14159 -7 1e-6",
    "Café naïve résumé façade — déjà vu; Straße; Ångström.",
]


def _corpus() -> list[str]:
    # Repeat with small variations so frequent pairs get merged across scripts.
    lines = []
    for round_ in range(20):
        for i, line in enumerate(CORPUS):
            lines.append(line if (round_ + i) % 3 else line.lower())
    return lines


def train_tokenizer(vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Train the BPE part so that learned ids + added tokens == vocab_size exactly."""
    bpe_size = vocab_size - len(ADDED_TOKENS)
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if tok.get_vocab_size() != bpe_size:
        raise RuntimeError(f"corpus too small: learned {tok.get_vocab_size()} ids, wanted {bpe_size}")
    tok.add_tokens(
        [AddedToken(c, special=s, normalized=False, lstrip=False, rstrip=False, single_word=False) for c, s in ADDED_TOKENS]
    )
    assert tok.get_vocab_size() == vocab_size
    return tok


def _tokenizer_config(tok: Tokenizer, chat_template: str) -> dict:
    decoder = {}
    for content, special in ADDED_TOKENS:
        decoder[str(tok.token_to_id(content))] = {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [c for c, s in ADDED_TOKENS[1:14] if s],
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 40960,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def make_tokenizer(path, vocab_size: int = VOCAB_SIZE, flavor: str = "qwen3", template_file: bool = False) -> Path:
    """Write a Qwen-style tokenizer into `path` (created if needed) and return the path.

    flavor: "qwen3" (Qwen3-0.6B's template and EOS ids) or "qwen2" (Qwen2.5's template).
    template_file: put the template in chat_template.jinja instead of tokenizer_config.json
    (the layout transformers >= 4.5x writes).
    """
    if flavor not in ("qwen3", "qwen2"):
        raise ValueError(f"unknown flavor {flavor!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(vocab_size)
    tok.save(str(path / "tokenizer.json"))

    name = "qwen3_chat_template.jinja" if flavor == "qwen3" else "qwen2_5_chat_template.jinja"
    template = (DATA / name).read_text(encoding="utf-8")
    config = _tokenizer_config(tok, template)
    if template_file:
        del config["chat_template"]
        (path / "chat_template.jinja").write_text(template, encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")

    special_map = {
        "additional_special_tokens": config["additional_special_tokens"],
        "eos_token": {"content": "<|im_end|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "pad_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
    }
    (path / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2), encoding="utf-8")

    endoftext, im_end = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
    generation = {"bos_token_id": endoftext, "eos_token_id": [im_end, endoftext], "pad_token_id": endoftext}
    if flavor == "qwen3":
        generation.update(do_sample=True, temperature=0.6, top_k=20, top_p=0.95)
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2), encoding="utf-8")
    return path


def special_ids(path) -> dict[str, int]:
    """Ids of the added tokens, for tests that need e.g. <|im_end|>."""
    tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    return {c: tok.token_to_id(c) for c, _ in ADDED_TOKENS}
