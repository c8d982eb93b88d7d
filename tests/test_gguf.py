"""GGUF loading on tiny random files written with the `gguf` package: every architecture we read
from GGUF (llama with llama.cpp's Q/K permutation, qwen2, qwen3, qwen3moe, Mixtral in the llama
layout) and the block types Q8_0 / Q4_0 / Q4_1 (kept as MLX affine group 32), Q4_K (kept) and
Q6_K (dequantized), against transformers holding the values the file encodes; our block decoders
against gguf's reference dequantizer; and the errors a bad file gets."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch

from ominix.engine import gguf_quants
from ominix.engine.gguf import read_gguf, read_tensor
from ominix.engine.load import LoadError, load
from tests.gguf_checkpoints import CHAT_TEMPLATE, VOCAB, write_gguf

IDS = [int(i) for i in np.random.default_rng(1).integers(0, VOCAB, 24)]


def relative_error(ours, ref) -> float:
    return float(np.abs(np.asarray(ours, np.float32) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "qwen3_moe", "mixtral"])
def test_logits_match_transformers(tmp_path, arch, kind):
    path, reference = write_gguf(tmp_path / "m.gguf", arch, kind)
    model, tokenizer = load(path)
    config = model.gguf_config
    assert config["model_type"] == arch
    loaded_as = config["_ominix"]["gguf"][kind]["loaded_as"]
    if kind in gguf_quants.AFFINE_BITS:
        assert loaded_as == f"MLX affine {gguf_quants.AFFINE_BITS[kind]}-bit, group 32"
        assert model.layers[0].self_attn.q_proj.group_size == 32
    else:
        assert loaded_as.startswith("dequantized")
    with torch.no_grad():
        expected = reference(torch.tensor([IDS])).logits.numpy()
    # Both sides hold the same values (the quantized ones, exactly); float32 arithmetic differs.
    assert relative_error(model(mx.array([IDS])), expected) < 1e-4
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_greedy_tokens_match_transformers(tmp_path):
    from ominix.engine.llm.cache import make_cache

    path, reference = write_gguf(tmp_path / "m.gguf", "llama", "Q4_0")
    ids = torch.tensor([IDS])
    with torch.no_grad():
        expected = reference.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=16, min_new_tokens=16)[0, len(IDS):].tolist()
    model, _ = load(path)
    cache = make_cache(model)
    logits, out = model(mx.array([IDS]), cache=cache), []
    for _ in range(16):
        token = mx.argmax(logits[:, -1, :], axis=-1)
        out.append(token.item())
        logits = model(token[:, None], cache=cache)
    assert out == expected


def test_unpermuting_matters(tmp_path, monkeypatch):
    """Without putting llama.cpp's Q/K rows back the llama model is wrong (so the test above
    checks the un-permutation)."""
    import ominix.engine.gguf as gguf_module

    path, reference = write_gguf(tmp_path / "m.gguf", "llama", "Q8_0")
    monkeypatch.setattr(gguf_module, "unpermute", lambda w, heads: w)
    model, _ = load(path)
    with torch.no_grad():
        expected = reference(torch.tensor([IDS])).logits.numpy()
    assert relative_error(model(mx.array([IDS])), expected) > 1e-2


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1"])
def test_affine_tensors_equal_what_mx_load_returns(tmp_path, kind):
    """mx.load keeps these three as MLX affine quantization too: ours are bit-identical."""
    path, _ = write_gguf(tmp_path / "m.gguf", "qwen2", kind)
    theirs = mx.load(str(path))
    file = read_gguf(path)
    info = file.tensors["blk.0.ffn_down.weight"]
    ours = read_tensor(file, info)
    for part, name in (("weight", "blk.0.ffn_down.weight"), ("scales", "blk.0.ffn_down.scales"),
                       ("biases", "blk.0.ffn_down.biases")):  # fmt: skip
        np.testing.assert_array_equal(np.array(ours[part]), np.array(theirs[name]))


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
                                  "Q5_K", "Q6_K"])  # fmt: skip
def test_block_decoders_equal_gguf_reference(kind):
    import gguf

    from tests.gguf_checkpoints import _blocks

    rng = np.random.default_rng(0)
    qtype = gguf.GGMLQuantizationType[kind]
    per_block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    if kind.endswith("_K"):
        raw = _blocks(np.zeros((5, 2 * per_block)), kind, rng)
    else:  # well-formed blocks from gguf's quantizer, then random codes over them
        raw = gguf.quants.quantize(rng.standard_normal((5, 3 * per_block)).astype(np.float32),
                                   qtype)  # fmt: skip
    expected = gguf.quants.dequantize(raw, qtype)
    blocks = raw.reshape(5, -1, block_bytes)
    np.testing.assert_array_equal(gguf_quants.dequantize(blocks, kind), expected)


def test_bad_files_get_clear_errors(tmp_path):
    path, _ = write_gguf(tmp_path / "m.gguf", "qwen3", "Q8_0")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(LoadError, match="truncated"):
        load(cut)
    header = tmp_path / "header.gguf"
    header.write_bytes(path.read_bytes()[:200])
    with pytest.raises(LoadError, match="truncated"):
        load(header)
    data = bytearray(path.read_bytes())
    arch = data.index(b"qwen3")
    data[arch:arch + 5] = b"gpt99"
    other = tmp_path / "other.gguf"
    other.write_bytes(bytes(data))
    with pytest.raises(LoadError, match="architecture 'gpt99' is not supported"):
        load(other)


def test_llama3_rope_freqs(tmp_path):
    """Llama 3.x GGUF files carry llama3 rope scaling as a rope_freqs tensor of divisors."""
    path, reference = write_gguf(tmp_path / "m.gguf", "llama", "Q8_0", llama3_rope=True)
    model, _ = load(path)
    assert model.gguf_config["rope_scaling"]["type"] == "frequency_factors"
    ids = IDS * 2  # past original_max_position_embeddings, where the scaling shows
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits.numpy()
    assert relative_error(model(mx.array([ids])), expected) < 1e-4
