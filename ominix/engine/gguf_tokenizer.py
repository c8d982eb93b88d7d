"""A `tokenizers` Tokenizer (and our engine Tokenizer around it) from a GGUF file's
`tokenizer.ggml.*` metadata.

Two vocabularies cover the architectures we run: "gpt2" (byte-level BPE with its merges; the text
is split by the regex `tokenizer.ggml.pre` names, as llama.cpp does) and "llama" (SentencePiece BPE
with byte fallback; merges from the file, or recovered from the token scores). Tokens the file
marks as control become special tokens, user-defined ones plain added tokens, so both stay whole.
"""

from __future__ import annotations

from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE

from ominix.engine.llm.tokenizer import END_OF_TURN_TOKENS, Tokenizer

CONTROL, USER_DEFINED = 3, 4

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")  # fmt: skip
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")  # fmt: skip
# tokenizer.ggml.pre -> split regex (llama.cpp's table for the families we run); others: GPT-2's
SPLITS = {"llama3": _LLAMA3, "llama-v3": _LLAMA3, "llama-bpe": _LLAMA3, "smaug-bpe": _LLAMA3,
          "qwen2": _QWEN2, "deepseek-r1-qwen": _QWEN2}  # fmt: skip
# Pre-tokenizers that also split digits one by one (SmolLM's tokenizer.json has Digits first).
DIGIT_SPLIT = {"smollm"}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable spelling of the 256 bytes (the alphabet byte-level vocabularies use)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _byte_level(meta: dict) -> Backend:
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    model = BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False)
    backend = Backend(model)
    pre = meta.get("tokenizer.ggml.pre", "default")
    split = pre_tokenizers.Split(Regex(SPLITS.get(pre, _GPT2)), behavior="isolated")
    steps = [pre_tokenizers.Digits(individual_digits=True)] if pre in DIGIT_SPLIT else []
    steps += [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    backend.pre_tokenizer = pre_tokenizers.Sequence(steps)
    backend.decoder = decoders.ByteLevel()
    return backend


def _spm_merges(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """SentencePiece BPE stores scores, not merges: every split of a token into two vocabulary
    pieces is a merge, ranked by the merged token's score (best first)."""
    vocab = {t: i for i, t in enumerate(tokens)}
    found = []
    for token, score in zip(tokens, scores):
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                found.append((-score, vocab[left], vocab[right], left, right))
    found.sort()
    return [(left, right) for *_, left, right in found]


def _sentencepiece(meta: dict) -> Backend:
    tokens = meta["tokenizer.ggml.tokens"]
    scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    merges = meta.get("tokenizer.ggml.merges")
    merges = [tuple(m.split(" ", 1)) for m in merges] if merges else _spm_merges(tokens, scores)
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[unk_id] if unk_id is not None else None
    backend = Backend(BPE({t: i for i, t in enumerate(tokens)}, merges, unk_token=unk,
                          byte_fallback=True, fuse_unk=True))  # fmt: skip
    steps = [normalizers.Replace(" ", "\u2581")]
    if meta.get("tokenizer.ggml.add_space_prefix", True):
        steps.insert(0, normalizers.Prepend("\u2581"))
    backend.normalizer = normalizers.Sequence(steps)
    strip = [decoders.Strip(" ", 1, 0)] if meta.get("tokenizer.ggml.add_space_prefix", True) else []
    backend.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), *strip])
    return backend


def gguf_backend(meta: dict) -> Backend:
    kind = meta.get("tokenizer.ggml.model")
    if not meta.get("tokenizer.ggml.tokens"):
        raise ValueError("the GGUF file has no tokenizer (tokenizer.ggml.tokens is missing)")
    if kind == "gpt2":
        backend = _byte_level(meta)
    elif kind == "llama":
        backend = _sentencepiece(meta)
    else:
        raise ValueError(f"GGUF tokenizer model '{kind}' is not supported (gpt2, llama)")
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type") or []
    alphabet = set(_bytes_to_unicode().values()) if kind == "gpt2" else None
    special = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types)
               if k == CONTROL and (alphabet is None or set(t) <= alphabet)]  # fmt: skip
    backend.add_special_tokens(special)
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, k in zip(tokens, types) if k == USER_DEFINED])  # fmt: skip
    return backend


def _token(meta: dict, key: str) -> str | None:
    index = meta.get(f"tokenizer.ggml.{key}_token_id")
    tokens = meta["tokenizer.ggml.tokens"]
    return tokens[index] if index is not None and 0 <= index < len(tokens) else None


def gguf_tokenizer(meta: dict) -> Tokenizer:
    backend = gguf_backend(meta)
    special = {name: tok for name, key in (("bos_token", "bos"), ("eos_token", "eos"),
               ("unk_token", "unknown"), ("pad_token", "padding"))
               if (tok := _token(meta, key)) is not None}  # fmt: skip
    if meta.get("tokenizer.ggml.add_bos_token") and "bos_token" in special:
        bos = special["bos_token"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, backend.token_to_id(bos))])  # fmt: skip
    eos = {meta[f"tokenizer.ggml.{k}_token_id"] for k in ("eos", "eot", "eom")
           if f"tokenizer.ggml.{k}_token_id" in meta}  # fmt: skip
    eos |= {i for t in END_OF_TURN_TOKENS if (i := backend.token_to_id(t)) is not None}
    return Tokenizer(backend, chat_template=meta.get("tokenizer.chat_template"),
                     special_tokens=special, eos_token_ids=eos)  # fmt: skip
