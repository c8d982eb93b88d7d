"""Memory of image checkpoints: the pool's size estimate for a diffusers folder, and a released
text encoder reloaded off the worker thread (chat streams keep flowing while it loads)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import openai
import pytest

from ominix.api.app import create_app
from ominix.engine.image import pipeline
from ominix.engine.pool import ModelLoadError, ModelPool, estimate_bytes
from tests.image_checkpoints import build_zimage
from tests.server_fixtures import ServerThread, random_qwen3


@pytest.fixture(scope="module")
def zimage_path(tmp_path_factory):
    return build_zimage(tmp_path_factory.mktemp("zimage") / "zimage")


def test_estimate_counts_the_component_folders(zimage_path):
    parts = {c: sum(f.stat().st_size for f in (zimage_path / c).glob("*.safetensors"))
             for c in ("transformer", "text_encoder", "vae")}  # fmt: skip
    assert all(parts.values()), parts
    assert estimate_bytes(zimage_path) == sum(parts.values())
    pool = ModelPool(use_catalog=False, memory_budget=estimate_bytes(zimage_path) // 2)
    ref = pool.register(str(zimage_path), "zimage")
    with pytest.raises(ModelLoadError, match="memory budget"):
        pool.start_load(ref)


@pytest.fixture(scope="module")
def server(zimage_path, tmp_path_factory):
    """zimage with its text encoder released (loaded per request, through a gate the test opens),
    and a tiny chat model."""
    gate = {"entered": threading.Event(), "open": threading.Event(), "threads": []}
    real = pipeline.load_text_encoder

    def gated_load(*args, **kwargs):
        gate["threads"].append(threading.current_thread().name)
        gate["entered"].set()
        gate["open"].wait(120)  # a text encoder that takes as long as the test wants to load
        return real(*args, **kwargs)

    pipeline.load_text_encoder = gated_load
    os.environ["OMINIX_IMAGE_RELEASE_TEXT_ENCODER"] = "1"
    pool = ModelPool(use_catalog=False)
    pool.register(str(zimage_path), "zimage")
    pool.register(str(random_qwen3(tmp_path_factory.mktemp("tiny") / "tiny")), "tiny")
    try:
        with ServerThread(create_app(pool, preload=["zimage", "tiny"])) as s:
            s.gate = gate
            yield s
    finally:
        pipeline.load_text_encoder = real
        os.environ.pop("OMINIX_IMAGE_RELEASE_TEXT_ENCODER", None)


def test_chat_streams_while_the_text_encoder_reloads(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
    gate = server.gate
    resident = server.app.state.pool.resident()["zimage"].model
    assert resident.release_text_encoder and resident.text_encoder is None
    box = {}

    def render():
        box["res"] = client.images.generate(model="zimage", prompt="a harbour", size="32x32",
                                             extra_body={"steps": 2, "seed": 5})  # fmt: skip
        box["end"] = time.perf_counter()

    thread = threading.Thread(target=render)
    thread.start()
    assert gate["entered"].wait(60), "the image request never started loading its text encoder"
    # The encoder is loading now (and stays so until the gate opens): the worker must go on.
    times = []
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, max_tokens=16, temperature=0)  # fmt: skip
    start = time.perf_counter()
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
    still_loading = not gate["open"].is_set()
    gate["open"].set()
    thread.join(120)
    assert still_loading and len(times) >= 2
    gaps = np.diff([start] + times)
    # Without the fix the chat could not start before the load ends (here: never, until the
    # gate's 120 s); each token waits at most a few worker turns (2 s: a loaded 2-core machine).
    assert gaps.max() < 2.0, gaps
    assert box["res"].data[0].b64_json
    assert gate["threads"] and all(name != "ominix-inference" for name in gate["threads"]), gate
    assert resident.text_encoder is None  # released again after encoding
    # A second request loads it again, also off the worker thread.
    client.images.generate(model="zimage", prompt="a pier", size="32x32", extra_body={"steps": 1})
    assert len(gate["threads"]) == 2 and "ominix-inference" not in gate["threads"]
