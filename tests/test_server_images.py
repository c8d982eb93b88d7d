"""/v1/images/generations and /v1/images/edits end to end: a real uvicorn server on the tiny
FLUX.2 [klein] and Z-Image checkpoints, driven by the official openai client."""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import openai
import pytest
from PIL import Image

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from tests.image_checkpoints import build_flux2_klein, build_zimage
from tests.server_fixtures import ServerThread, random_qwen3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgserver")
    pool = ModelPool()
    pool.register(str(build_flux2_klein(root / "klein", te_layers=28)), "klein")
    pool.register(str(build_zimage(root / "zimage")), "zimage")
    pool.register(str(random_qwen3(root / "tiny")), "tiny")
    with ServerThread(create_app(pool, preload=["klein", "zimage", "tiny"])) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)


def png(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


@pytest.mark.parametrize("model", ["klein", "zimage"])
def test_b64_png_of_the_requested_size(client, model):
    res = client.images.generate(model=model, prompt="a red fox", size="48x32", n=2,
                                 response_format="b64_json",
                                 extra_body={"seed": 7, "steps": 2})  # fmt: skip
    assert len(res.data) == 2 and res.size == "48x32" and res.output_format == "png"
    images = [png(d.b64_json) for d in res.data]
    assert all(im.format == "PNG" and im.size == (48, 32) for im in images)
    assert images[0].text["seed"] == "7" and images[1].text["seed"] == "8"
    assert images[0].text["prompt"] == "a red fox" and images[0].text["steps"] == "2"
    assert images[0].text["model"] == model and images[0].text["size"] == "48x32"
    again = client.images.generate(model=model, prompt="a red fox", size="48x32", n=1,
                                   extra_body={"seed": 8, "steps": 2})  # fmt: skip
    np.testing.assert_allclose(np.asarray(png(again.data[0].b64_json)), np.asarray(images[1]), atol=2)
    assert res.usage.input_tokens > 0


def test_url_and_formats(client, server):
    import httpx

    res = client.images.generate(model="klein", prompt="a boat", size="32x32", response_format="url",
                                 output_format="jpeg", output_compression=30, extra_body={"steps": 1})  # fmt: skip
    url = res.data[0].url
    assert url.startswith(server.url + "/v1/files/")
    got = httpx.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(got.content)).size == (32, 32)
    webp = client.images.generate(model="zimage", prompt="a boat", size="32x32", output_format="webp",
                                  extra_body={"steps": 1})  # fmt: skip
    assert png(webp.data[0].b64_json).format == "WEBP"
    assert httpx.get(server.url + "/v1/files/file-nope/content").status_code == 404


def test_stream_partial_images(client):
    stream = client.images.generate(model="klein", prompt="a tree", size="32x32", stream=True,
                                    partial_images=2, extra_body={"steps": 4, "seed": 1})  # fmt: skip
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    assert all(png(e.b64_json).size == (32, 32) for e in events)
    assert events[-1].usage.total_tokens > 0


def test_edit_with_reference_image(client):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(buf, "PNG")
    res = client.images.edit(model="klein", image=[("ref.png", buf.getvalue(), "image/png")],
                             prompt="make it night", n=1, extra_body={"steps": 2, "seed": 3})  # fmt: skip
    assert png(res.data[0].b64_json).size == (96, 64)  # the reference's size by default
    sized = client.images.edit(model="klein", image=("ref.png", buf.getvalue(), "image/png"),
                               prompt="make it night", size="32x48", extra_body={"steps": 1})  # fmt: skip
    assert png(sized.data[0].b64_json).size == (32, 48)


@pytest.mark.parametrize("kwargs,needle", [
    ({"size": "50x50"}, "nearest valid size is 48x48"),
    ({"size": "big"}, "size"),
    ({"n": 9}, "n"),
    ({"n": 0}, "n"),
    ({"prompt": "  "}, "prompt"),
    ({"response_format": "tiff"}, "response_format"),
    ({"output_format": "gif"}, "output_format"),
])
def test_bad_requests(client, kwargs, needle):
    args = {"model": "klein", "prompt": "x", "size": "32x32", **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(**args)
    assert needle in err.value.body["message"]


def test_bad_edits_and_wrong_kind(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.images.edit(model="klein", image=("x.png", b"not an image", "image/png"), prompt="x")
    assert "image" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(model="tiny", prompt="x")
    assert "image generation" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="nope", prompt="x")


def test_chat_keeps_streaming_while_an_image_renders(client):
    """The worker interleaves: chat tokens keep coming between denoising steps."""
    steps = 100
    box = {}

    def render():
        t = time.perf_counter()
        box["res"] = client.images.generate(model="zimage", prompt="a city", size="64x64",
                                             extra_body={"steps": steps, "seed": 2})  # fmt: skip
        box["seconds"] = time.perf_counter() - t
        box["end"] = time.perf_counter()

    thread = threading.Thread(target=render)
    thread.start()
    time.sleep(0.3)
    times = []
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, max_tokens=24, temperature=0)  # fmt: skip
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
    chat_done = time.perf_counter()
    thread.join()
    assert png(box["res"].data[0].b64_json).size == (64, 64)
    assert chat_done < box["end"], "the chat waited for the image"
    gaps = np.diff(times)
    per_step = box["seconds"] / steps
    assert len(times) >= 2
    # A token waits at most about one step of the image job (the prompt-encoding step is the
    # longest; 2 s covers it and the noise of a shared 2-core machine), never for the image.
    assert gaps.max() < max(2.0, 4 * per_step), (gaps.max(), per_step)
    assert gaps.max() < box["seconds"] / 3, (gaps.max(), box["seconds"])


def test_client_gone_cancels_the_job(server):
    """Closing a streamed request stops the job at its next step; the worker is free again."""
    import httpx

    worker = server.app.state.worker
    body = {"model": "zimage", "prompt": "a field", "size": "64x64", "stream": True,
            "partial_images": 1, "steps": 100}  # fmt: skip
    start = time.perf_counter()
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", server.url + "/v1/images/generations", json=body) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("event: image_generation.partial_image"):
                    break  # one preview arrived (halfway): hang up
    halfway = time.perf_counter()
    while worker.running_jobs and time.perf_counter() < halfway + 60:
        time.sleep(0.02)
    assert worker.running_jobs == 0
    # The other 50 steps would take about as long as the first 50: it stopped well before.
    assert time.perf_counter() - halfway < 0.5 * (halfway - start)
