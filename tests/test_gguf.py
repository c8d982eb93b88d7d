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


def test_a_gguf_from_a_url_or_a_hub_repo_pulls_shows_runs_and_benches(tmp_path, monkeypatch):
    """One GGUF file by URL and in a hub repo: pulled, `show` says how each tensor type loads,
    `run` answers from it, `bench` measures it."""
    import json as jsonlib
    import os
    import subprocess
    import sys

    from ominix.bench import run_bench
    from ominix.engine.llm.generate import generate
    from ominix.engine.llm.sample import SamplingParams
    from tests.hubserver import FakeHub

    path, _ = write_gguf(tmp_path / "src.gguf", "qwen3", "Q4_K")
    hub = FakeHub().start()
    try:
        hub.plain["tiny-q4_k.gguf"] = path.read_bytes()
        hub.add_hf_repo("acme/tiny-GGUF", {"tiny-q4_k.gguf": path.read_bytes(), "README.md": b"x"})
        env = {**os.environ, "OMINIX_HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf"),
               "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"}
        for key in ("HF_HUB_CACHE", "OMINIX_MODELS", "HF_HUB_OFFLINE"):
            env.pop(key, None)

        def ominix(*args):
            return subprocess.run([sys.executable, "-m", "ominix", *args], env=env,
                                  capture_output=True, text=True, timeout=120)  # fmt: skip

        url = f"{hub.url}/files/dl/tiny-q4_k.gguf"
        for name in (url, "acme/tiny-GGUF"):
            pulled = ominix("pull", name)
            assert pulled.returncode == 0, pulled.stderr
            folder = pulled.stdout.strip().splitlines()[-1]
            shown = ominix("show", folder, "--json")
            assert shown.returncode == 0, shown.stderr
            types = jsonlib.loads(shown.stdout)["gguf"]
            assert types["Q4_K"]["loaded_as"] == "MLX affine 4-bit, group 32"
            model, tokenizer = load(folder)
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
            expected = generate(model, tokenizer, prompt, SamplingParams(temperature=0), max_tokens=5).text
            ran = ominix("run", folder, "hi", "--temp", "0", "--max-tokens", "5")
            assert ran.returncode == 0, ran.stderr
            assert ran.stdout.strip() == expected.strip()
    finally:
        hub.stop()
    result = run_bench(str(path), prompt_tokens=8, generation_tokens=4, trials=1, warmup=False)
    assert result["model_type"] == "qwen3" and result["quantization"] == {"bits": 4, "group_size": 32}
    assert result["generation_tps"] > 0 and result["prompt_tps"] > 0
