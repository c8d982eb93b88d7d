"""Moxin-7B-VLM (Prismatic) composed from its published equations, each part against
transformers on tiny random weights: the DINOv2-with-registers and SigLIP encoders (second-to-last
block), and the whole model (projector + Mistral with the picture after BOS) against the
transformers parts composed the same way: logits and greedy tokens, and over HTTP."""

from __future__ import annotations

import base64

import mlx.core as mx
import numpy as np
import pytest
import torch

from ominix import kinds
from ominix.engine.images import PrismaticProcessor, processor_for
from ominix.engine.llm.generate import generate
from ominix.engine.llm.sample import SamplingParams
from ominix.engine.vlm import VisionPrompt, WithMedia, expand_prompt, load
from tests.moxin_checkpoints import IMAGE, moxin_checkpoint, reference_logits
from tests.vlm_checkpoints import sample_image


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return moxin_checkpoint(tmp_path_factory.mktemp("moxin") / "moxin", seed=2)


@pytest.fixture(scope="module")
def loaded(built):
    return load(built[0])


def pixels(seed=0):
    return PrismaticProcessor(IMAGE)(sample_image(90, 60, seed=seed)).patches  # [6, H, W]


def test_preprocessing_is_resize_then_both_normalisations():
    image = sample_image(90, 60, seed=1)
    out = PrismaticProcessor(IMAGE)(image)
    assert out.patches.shape == (6, IMAGE, IMAGE) and out.grid == (1, 4, 4)
    from PIL import Image

    rgb = np.asarray(image.resize((IMAGE, IMAGE), Image.BICUBIC), np.float32).transpose(2, 0, 1) / 255
    np.testing.assert_allclose(out.patches[3:], rgb * 2 - 1, atol=1e-6)
    mean, std = np.array([0.485, 0.456, 0.406])[:, None, None], np.array([0.229, 0.224, 0.225])[:, None, None]
    np.testing.assert_allclose(out.patches[:3], (rgb - mean) / std, atol=1e-5)


def test_dinov2_with_registers_matches_transformers(built, loaded):
    dino = built[1][0]
    model, _ = loaded
    x = pixels()
    with torch.no_grad():
        want = dino(torch.tensor(x[:3])[None], output_hidden_states=True).hidden_states[-2][0, 5:].numpy()
    got = model.vision_backbone.featurizer(mx.array(x[:3]).transpose(1, 2, 0)[None])[0]
    np.testing.assert_allclose(np.array(got), want, atol=2e-5)


def test_siglip_matches_transformers(built, loaded):
    siglip = built[1][1]
    model, _ = loaded
    x = pixels(seed=3)
    with torch.no_grad():
        want = siglip(torch.tensor(x[3:])[None], output_hidden_states=True).hidden_states[-2][0].numpy()
    got = model.vision_backbone.fused_featurizer(mx.array(x[3:]).transpose(1, 2, 0)[None])[0]
    np.testing.assert_allclose(np.array(got), want, atol=2e-5)


def _ids(tokenizer):
    return tokenizer.encode("<|endoftext|>What is in the picture?")  # BOS stand-in first


def test_whole_model_logits_and_greedy_tokens(built, loaded):
    path, parts = built
    model, tokenizer = loaded
    assert kinds.detect(path).name == "vlm"
    x = pixels(seed=4)
    ids = _ids(tokenizer)
    want = reference_logits(parts, x[:3], x[3:], ids)
    images = [processor_for(path)(sample_image(90, 60, seed=4))]
    expanded = expand_prompt(model, ids, images)
    assert len(expanded) == len(ids) + 16
    media = VisionPrompt(model, expanded, images).encode_all()
    np.testing.assert_allclose(np.array(model(mx.array(expanded)[None], media=media)[0]), want, atol=1e-4)

    # Greedy: transformers' generate on the composed embeddings vs ours through the image-bound model.
    dino, siglip, projector, llm = parts
    with torch.no_grad():
        d = dino(torch.tensor(x[:3])[None], output_hidden_states=True).hidden_states[-2][:, 5:]
        s = siglip(torch.tensor(x[3:])[None], output_hidden_states=True).hidden_states[-2]
        f = torch.nn.functional.gelu
        v = projector["fc3"](f(projector["fc2"](f(projector["fc1"](torch.cat([d, s], -1))))))
        emb = llm.get_input_embeddings()(torch.tensor([ids]))
        out = llm.generate(inputs_embeds=torch.cat([emb[:, :1], v, emb[:, 1:]], 1), max_new_tokens=10,
                           do_sample=False, eos_token_id=None, pad_token_id=0)
    tokenizer.eos_token_ids = set()
    got = generate(WithMedia(model, media), tokenizer, expanded, SamplingParams(temperature=0.0), max_tokens=10)
    assert got.tokens == out[0].tolist()[-10:]


def test_one_image_only(loaded, built):
    model, _ = loaded
    images = [processor_for(built[0])(sample_image())] * 2
    with pytest.raises(ValueError, match="one image"):
        expand_prompt(model, [1, 2, 3], images)


def test_over_http_with_the_openai_client(built):
    import openai

    from ominix.api.app import create_app
    from ominix.engine.images import decode_image
    from ominix.engine.llm.chat import build_chat_prompt
    from ominix.engine.llm.generate import encode_prompt
    from ominix.engine.pool import ModelPool
    from tests.server_fixtures import ServerThread
    from tests.test_server_vision import data_url

    path = built[0]
    url = data_url(sample_image(90, 60, seed=6))
    model, tokenizer = load(path)
    images = [processor_for(path)(decode_image(base64.b64decode(url.split(",", 1)[1])))]
    ids = encode_prompt(tokenizer, build_chat_prompt(tokenizer, [{"role": "user", "content": "Describe it."}]))
    ids = expand_prompt(model, ids, images)
    bias = {t: -100 for t in sorted(tokenizer.eos_token_ids)}
    from ominix.engine.llm.sample import sampling_params

    params = sampling_params(tokenizer.generation_config, {"temperature": 0.0, "logit_bias": bias})
    want = generate(WithMedia(model, VisionPrompt(model, ids, images).encode_all()), tokenizer, ids, params,
                    max_tokens=8).tokens
    pool = ModelPool(use_catalog=False)
    pool.register(str(path), "moxin")
    with ServerThread(create_app(pool, preload=["moxin"])) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
        content = [{"type": "text", "text": "Describe it."}, {"type": "image_url", "image_url": {"url": url}}]
        r = client.chat.completions.create(model="moxin", messages=[{"role": "user", "content": content}],
                                           temperature=0, max_tokens=8, logprobs=True,
                                           logit_bias={str(k): v for k, v in bias.items()})
        assert [e.token for e in r.choices[0].logprobs.content] == [tokenizer.decode([t]) for t in want]
        with pytest.raises(openai.BadRequestError, match="one image"):
            client.chat.completions.create(model="moxin", max_tokens=2, messages=[
                {"role": "user", "content": content + [{"type": "image_url", "image_url": {"url": url}}]}])


def test_published_style_config_uses_the_timm_presets():
    """A config naming only the timm backbones (no vision_config, no text_config) gets the real
    sizes: DINOv2 ViT-L/14 + 4 registers, SigLIP SO400M/14, Moxin-7B's 36-layer decoder."""
    from ominix.models.moxin_vlm import ModelArgs

    args = ModelArgs.from_dict({"model_type": "moxin_vlm", "image_sizes": [224, 224],
                                "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]})
    assert (args.dino.hidden_size, args.dino.depth, args.dino.registers, args.dino.patches) == (1024, 24, 4, 256)
    assert (args.siglip.hidden_size, args.siglip.depth, args.siglip.mlp_dim) == (1152, 27, 4304)
    assert (args.text.num_hidden_layers, args.text.hidden_size, args.text.vocab_size) == (36, 4096, 32064)
