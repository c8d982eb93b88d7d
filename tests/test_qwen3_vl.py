"""Qwen3-VL against transformers on tiny random weights in the published layouts: the image
processor's pixels, the vision tower's merged and DeepStack features, logits with images in the
prompt (whole and chunked), and greedy tokens."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
import torch

from ominix.engine.images import ImageProcessor, ImageError, decode_image
from ominix.engine.llm.cache import make_cache
from ominix.engine.llm.generate import generate
from ominix.engine.llm.sample import SamplingParams
from ominix.engine.vlm import VisionPrompt, WithMedia, expand_prompt, load
from pathlib import Path

from tests.vlm_checkpoints import PREPROCESSOR, qwen3_vl_checkpoint, reference_model, sample_image

CONFIGS = Path(__file__).parent / "data" / "configs"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return qwen3_vl_checkpoint(tmp_path_factory.mktemp("qwen3vl") / "hf")


@pytest.fixture(scope="module")
def reference(ckpt):
    return reference_model(ckpt)


@pytest.fixture(scope="module")
def loaded(ckpt):
    return load(ckpt)


def hf_processor(**overrides):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    cfg = {k: v for k, v in {**PREPROCESSOR, **overrides}.items() if k not in ("image_processor_type", "processor_class")}
    return Qwen2VLImageProcessorPil(**cfg)


@pytest.mark.parametrize("size,overrides", [
    ((80, 48), {}),  # rounded to the 32-pixel grid
    ((30, 20), {}),  # below min_pixels: scaled up
    ((700, 300), {}),  # above max_pixels: scaled down
    ((64, 64), {"size": {"shortest_edge": 32 * 32, "longest_edge": 128 * 128}}),
])
def test_image_processor_matches_transformers(size, overrides):
    image = sample_image(*size)
    ref = hf_processor(**overrides)(images=[image], return_tensors="np")
    ours = ImageProcessor.from_config({**PREPROCESSOR, **overrides})(image)
    assert ours.grid == tuple(ref["image_grid_thw"][0])
    np.testing.assert_allclose(ours.patches, ref["pixel_values"], atol=1e-5)


def test_corrupt_and_huge_images_are_refused():
    import io

    with pytest.raises(ImageError, match="cannot be decoded"):
        decode_image(b"\x89PNG\r\n\x1a\nnot really")
    buf = io.BytesIO()
    sample_image(64, 64).save(buf, "PNG")
    with pytest.raises(ImageError, match="limit"):
        decode_image(buf.getvalue(), max_pixels=32 * 32)
    assert decode_image(buf.getvalue()).size == (64, 64)


def _hf_inputs(processor_out, ids, image_token):
    return dict(input_ids=torch.tensor([ids]), pixel_values=torch.tensor(processor_out["pixel_values"]),
                image_grid_thw=torch.tensor(processor_out["image_grid_thw"]),
                mm_token_type_ids=(torch.tensor([ids]) == image_token).int())


def _prompt(model, tokenizer, images):
    text = "<|im_start|>user\n" + "".join(f"Picture {i}:<|vision_start|><|image_pad|><|vision_end|>"
                                          for i in range(len(images))) + "What is it?<|im_end|>\n<|im_start|>assistant\n"
    return expand_prompt(model, tokenizer.encode(text), images)


def test_vision_features_match(loaded, reference):
    model, _ = loaded
    for size in ((80, 48), (64, 128)):
        image = sample_image(*size, seed=3)
        ref = hf_processor()(images=[image], return_tensors="np")
        with torch.no_grad():
            out = reference.model.visual(torch.tensor(ref["pixel_values"]), grid_thw=torch.tensor(ref["image_grid_thw"]),
                                         return_dict=True)
        ours = ImageProcessor.from_config(PREPROCESSOR)(image)
        embeds, deepstack = model.encode_image(ours.patches, ours.grid)
        np.testing.assert_allclose(np.array(embeds), out.pooler_output.numpy(), atol=2e-5)
        assert len(deepstack) == 2
        for a, b in zip(deepstack, out.deepstack_features):
            np.testing.assert_allclose(np.array(a), b.numpy(), atol=2e-5)


@pytest.mark.parametrize("layout", ["hf", "mlx"])
def test_logits_with_two_images_match(layout, ckpt, reference, tmp_path):
    path = ckpt if layout == "hf" else qwen3_vl_checkpoint(tmp_path / "mlx", mlx_layout=True)
    model, tokenizer = load(path)
    images_pil = [sample_image(80, 48, seed=1), sample_image(48, 96, seed=2)]
    ref = hf_processor()(images=images_pil, return_tensors="np")
    images = [ImageProcessor.from_dir(path)(im) for im in images_pil]
    ids = _prompt(model, tokenizer, images)
    image_token = json.loads((path / "config.json").read_text())["image_token_id"]
    with torch.no_grad():
        expected = reference(**_hf_inputs(ref, ids, image_token)).logits[0].numpy()
    media = VisionPrompt(model, ids, images).encode_all()
    whole = np.array(model(mx.array(ids)[None], media=media)[0])
    np.testing.assert_allclose(whole, expected, atol=1e-4)
    cache, chunks = make_cache(model), []  # chunk edges fall inside the images
    for start in range(0, len(ids), 5):
        chunks.append(np.array(model(mx.array(ids[start:start + 5])[None], cache=cache, media=media)[0]))
    np.testing.assert_allclose(np.concatenate(chunks), expected, atol=1e-4)


def test_greedy_tokens_match(loaded, reference, ckpt):
    model, tokenizer = loaded
    image = sample_image(96, 64, seed=5)
    ref = hf_processor()(images=[image], return_tensors="np")
    processed = [ImageProcessor.from_dir(ckpt)(image)]
    ids = _prompt(model, tokenizer, processed)
    image_token = model.args.image_token_id
    with torch.no_grad():
        out = reference.generate(**_hf_inputs(ref, ids, image_token), max_new_tokens=12, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
    expected = out[0, len(ids):].tolist()
    media = VisionPrompt(model, ids, processed).encode_all()
    tokenizer.eos_token_ids = set()
    result = generate(WithMedia(model, media), tokenizer, ids, SamplingParams(temperature=0.0), max_tokens=12)
    assert result.tokens == expected


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_mlx_checkpoint_loads_and_follows_the_float_model(bits, ckpt, loaded, tmp_path):
    """What mlx-community publishes: the mlx-vlm layout with MLX affine quantization."""
    from ominix.engine.convert import convert

    out = convert(ckpt, tmp_path / f"q{bits}", quantize=True, bits=bits, group_size=32)
    quantized, tokenizer = load(out)
    from mlx.utils import tree_flatten

    names = dict(tree_flatten(quantized.parameters()))
    assert "language_model.model.layers.0.self_attn.q_proj.scales" in names
    assert "vision_tower.blocks.0.attn.qkv.scales" in names
    model, _ = loaded
    images = [ImageProcessor.from_dir(out)(sample_image(80, 48, seed=1))]
    ids = _prompt(quantized, tokenizer, images)
    want = np.array(model(mx.array(ids)[None], media=VisionPrompt(model, ids, images).encode_all())[0])
    got = np.array(quantized(mx.array(ids)[None], media=VisionPrompt(quantized, ids, images).encode_all())[0])
    # Quantization noise on random weights: 8-bit stays close, 4-bit stays strongly correlated.
    corr = np.corrcoef(got.ravel(), want.ravel())[0, 1]
    assert corr > (0.999 if bits == 8 else 0.95), corr


def test_the_catalog_config_at_test_size_matches_transformers(tmp_path):
    """tests/data/configs/qwen3-vl-2b.json (Qwen3-VL-2B-Instruct's config.json as mlx-community
    ships it, with its 4-bit block) parses as published; shrunk (widths, heads, depth only; tied
    head, mrope interleave, DeepStack taps kept) it matches transformers."""
    from ominix.models.qwen3_vl import ModelArgs

    published = json.loads((CONFIGS / "qwen3-vl-2b.json").read_text())
    args = ModelArgs.from_dict(published)
    assert args.mrope_section == (24, 20, 20) and args.text.tie_word_embeddings
    assert args.vision.deepstack_visual_indexes == [5, 11, 17] and args.text.rope_theta == 5000000
    assert args.vocab_size == 151936 and args.max_position_embeddings == 262144
    text = {k: v for k, v in published["text_config"].items() if k not in ("hidden_size", "intermediate_size",
            "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
            "rope_scaling", "bos_token_id", "eos_token_id", "dtype")}
    vision = {k: v for k, v in published["vision_config"].items() if k not in ("depth", "hidden_size",
              "intermediate_size", "num_heads", "out_hidden_size", "num_position_embeddings", "deepstack_visual_indexes")}
    path = qwen3_vl_checkpoint(tmp_path / "vl2b", seed=3, text=text, vision={**vision, "deepstack_visual_indexes": [0, 2]},
                               tie=published["tie_word_embeddings"])
    ref = reference_model(path)
    model, tokenizer = load(path)
    assert not hasattr(model.language_model, "lm_head")
    pil = sample_image(96, 64, seed=4)
    images = [ImageProcessor.from_dir(path)(pil)]
    ids = _prompt(model, tokenizer, images)
    with torch.no_grad():
        expected = ref(**_hf_inputs(hf_processor()(images=[pil], return_tensors="np"), ids, model.args.image_token_id)).logits[0]
    got = np.array(model(mx.array(ids)[None], media=VisionPrompt(model, ids, images).encode_all())[0])
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


def test_list_all_says_the_qwen3_vl_entry_runs():
    from typer.testing import CliRunner

    from ominix.cli import app

    rows = {r["id"]: r for r in json.loads(CliRunner().invoke(app, ["list", "--all", "--json"]).output)}
    assert rows["qwen3-vl-2b"]["runnable"] is True and rows["qwen3-vl-2b"]["category"] == "vlm"
