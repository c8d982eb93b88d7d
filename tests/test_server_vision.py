"""Vision chat over HTTP with the official openai client against a real uvicorn server: image
content parts (data URLs, several per message and across messages) give the tokens the in-process
reference gives; bad images and text-only models get 400s with OpenAI error bodies."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import openai
import pytest

from ominix.api.app import create_app
from ominix.engine.images import ImageProcessor
from ominix.engine.pool import ModelPool
from ominix.engine.llm.tokenizer import load_tokenizer
from tests.server_fixtures import ServerThread, random_qwen3
from tests.vlm_checkpoints import qwen3_vl_checkpoint, sample_image


def data_url(image, fmt="PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (its pixel data is a 1x1 image's)."""
    buf = io.BytesIO()
    sample_image(1, 1).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server_vision")
    vl = qwen3_vl_checkpoint(root / "vl", seed=7)
    pool = ModelPool(use_catalog=False)
    pool.register(str(vl), "vl")
    pool.register(str(random_qwen3(root / "tiny")), "tiny")
    with ServerThread(create_app(pool, preload=["vl"])) as s:
        s.ckpt = vl
        tok = load_tokenizer(vl)
        banned = [tok.token_to_id(t) for t in ("<think>", "</think>", "<tool_call>")] + sorted(tok.eos_token_ids)
        s.bias = {str(t): -100 for t in banned + [0, 1, 2]}
        s.tokenizer = tok
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)


def reference(server, messages, pil_images, max_tokens):
    proc = ImageProcessor.from_dir(server.ckpt)
    images = [proc(im) for im in pil_images]
    bias = {int(k): v for k, v in server.bias.items()}
    return solo_with_bias(server, messages, images, max_tokens, bias)


def solo_with_bias(server, messages, images, max_tokens, bias):
    from ominix.engine.llm.chat import build_chat_prompt
    from ominix.engine.llm.generate import encode_prompt, generate
    from ominix.engine.llm.sample import sampling_params
    from ominix.engine.vlm import VisionPrompt, WithMedia, expand_prompt, load

    model, tokenizer = load(server.ckpt)
    ids = expand_prompt(model, encode_prompt(tokenizer, build_chat_prompt(tokenizer, messages)), images)
    params = sampling_params(tokenizer.generation_config, {"temperature": 0.0, "logit_bias": bias})
    if images:
        model = WithMedia(model, VisionPrompt(model, ids, images).encode_all())
    return generate(model, tokenizer, ids, params, max_tokens=max_tokens).tokens


def test_an_image_question_answers_like_the_reference(server, client):
    pic = sample_image(80, 48, seed=1)
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                             {"type": "image_url", "image_url": {"url": data_url(pic)}}]}]
    template_messages = [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                                      {"type": "image"}]}]
    want = reference(server, template_messages, [pic], 12)
    r = client.chat.completions.create(model="vl", messages=messages, temperature=0, max_tokens=12,
                                       logit_bias=server.bias, logprobs=True)
    got = [e.token for e in r.choices[0].logprobs.content]
    assert got == [server.tokenizer.decode([t]) for t in want]
    assert r.choices[0].message.content == server.tokenizer.decode(want)
    assert r.usage.prompt_tokens > 10 and r.choices[0].finish_reason == "length"


def test_several_images_across_messages_streamed(server, client):
    a, b, c = sample_image(80, 48, seed=1), sample_image(64, 96, seed=2), sample_image(40, 40, seed=3)
    messages = [
        {"role": "system", "content": "You describe pictures."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(a)}},
                                     {"type": "image_url", "image_url": {"url": data_url(b, "JPEG")}},
                                     {"type": "text", "text": "Compare these two."}]},
        {"role": "assistant", "content": "They differ."},
        {"role": "user", "content": [{"type": "text", "text": "And this one?"},
                                     {"type": "image_url", "image_url": {"url": data_url(c), "detail": "low"}}]},
    ]
    from ominix.engine.images import decode_image

    # The reference sees the same decoded pixels (the JPEG round trip included).
    pils = [decode_image(base64.b64decode(m.split(",", 1)[1])) for m in
            (data_url(a), data_url(b, "JPEG"), data_url(c))]
    template = [messages[0],
                {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare these two."}]},
                messages[2],
                {"role": "user", "content": [{"type": "text", "text": "And this one?"}, {"type": "image"}]}]
    want = reference(server, template, pils, 10)
    chunks = list(client.chat.completions.create(model="vl", messages=messages, temperature=0, max_tokens=10,
                                                 logit_bias=server.bias, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == server.tokenizer.decode(want)


def _error(client, model, url):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model, max_tokens=4, messages=[
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": url}}]}])
    body = info.value.body
    assert set(body) >= {"message", "type", "param", "code"}, body
    return body


def test_bad_images_get_400s(client):
    assert "cannot be decoded" in _error(client, "vl", "data:image/png;base64," + base64.b64encode(b"\x89PNGjunk").decode())["message"]
    assert "base64" in _error(client, "vl", "data:image/png;base64,@@@not base64@@@")["message"]
    huge = _error(client, "vl", "data:image/png;base64," + base64.b64encode(png_claiming(20000, 20000)).decode())
    assert "limit" in huge["message"] and huge["code"] == "invalid_image"
    assert "data URL" in _error(client, "vl", "https://example.com/cat.png")["message"]
    assert "data URL" in _error(client, "vl", "file:///etc/passwd")["message"]


def test_a_text_model_given_an_image_names_a_vision_model(client):
    body = _error(client, "tiny", data_url(sample_image()))
    assert "does not take images" in body["message"] and "vision model" in body["message"]
    assert body["code"] == "model_not_supported"


def test_text_only_chat_on_the_vision_model(server, client):
    r = client.chat.completions.create(model="vl", messages=[{"role": "user", "content": "Hello"}], temperature=0,
                                       max_tokens=6, logit_bias=server.bias)
    want = solo_with_bias(server, [{"role": "user", "content": "Hello"}], [], 6, {int(k): v for k, v in server.bias.items()})
    assert r.choices[0].message.content == server.tokenizer.decode(want)
    card = client.models.retrieve("vl")
    assert card.model_extra["kind"] == "vlm"
