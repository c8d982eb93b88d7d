"""Vision chat on the worker: images are encoded one per step in the prefill, the merged prompt
prefills in chunks, and the sequences decode in the model's batch beside text-only ones, each with
exactly the tokens it gives alone (in-process, engine/generate.py with the images bound)."""

from __future__ import annotations

import queue

import pytest

from ominix import kinds
from ominix.engine.images import ImageProcessor
from ominix.engine.llm.generate import generate
from ominix.engine.llm.jobs import ChoiceDone, GenerateJob, RequestError, TokenEvent
from ominix.engine.llm.sample import sampling_params
from ominix.engine.pool import ModelPool
from ominix.engine.vlm import VisionPrompt, WithMedia, expand_prompt, load
from ominix.engine.worker import Done, Failed, Worker
from tests.vlm_checkpoints import qwen3_vl_checkpoint, sample_image

NO_EOS = {"logit_bias": {"0": -100, "1": -100, "2": -100}}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return qwen3_vl_checkpoint(tmp_path_factory.mktemp("vlm_engine") / "vl", seed=7)


@pytest.fixture(scope="module")
def worker(ckpt):
    pool = ModelPool(use_catalog=False)
    pool.register(str(ckpt), "vl")
    w = Worker(pool, prefill_step_size=6)  # small chunks: image spans cross chunk edges
    w.start()
    yield w
    w.stop()


def chat(question: str, n_images: int) -> list[dict]:
    parts = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
    return [{"role": "user", "content": parts if n_images else question}]


def solo(ckpt, messages, images, sampling, max_tokens, choice=0):
    model, tokenizer = load(ckpt)
    params = sampling_params(tokenizer.generation_config, {**sampling, **{"logit_bias": {0: -100, 1: -100, 2: -100}}})
    if params.seed is not None:
        params.seed += choice
    from ominix.engine.llm.chat import build_chat_prompt
    from ominix.engine.llm.generate import encode_prompt

    ids = encode_prompt(tokenizer, build_chat_prompt(tokenizer, messages))
    if images:
        ids = expand_prompt(model, ids, images)
        model = WithMedia(model, VisionPrompt(model, ids, images).encode_all())
    return generate(model, tokenizer, ids, params, max_tokens=max_tokens).tokens


def submit(worker, messages, images, sampling, max_tokens, n=1):
    from ominix.engine.llm.chat import build_chat_prompt

    box: queue.Queue = queue.Queue()
    job = GenerateJob(prompts=[lambda tok: build_chat_prompt(tok, messages)], sampling={**sampling, **NO_EOS},
                      max_tokens=max_tokens, n=n, images=images)
    worker.submit("vl", job, box.put)
    return box


def collect(box) -> dict:
    tokens = {}
    while True:
        event = box.get(timeout=120)
        if isinstance(event, TokenEvent):
            tokens.setdefault(event.choice, []).append(event.token)
        elif isinstance(event, Failed):
            raise event.error
        elif isinstance(event, Done):
            return tokens


def test_the_vlm_kind_loads_and_runs(ckpt):
    kind = kinds.detect(ckpt)
    assert kind.name == "vlm" and kinds.runs(kind) and "run" in kind.verbs


def test_vision_sequences_batch_with_text_ones_and_keep_their_tokens(ckpt, worker):
    proc = ImageProcessor.from_dir(ckpt)
    a, b = proc(sample_image(80, 48, seed=1)), proc(sample_image(64, 96, seed=2))
    cases = [  # (messages, images, sampling, max_tokens, n)
        (chat("What is in the picture?", 1), [a], {"temperature": 0.0}, 14, 1),
        (chat("Tell me a story.", 0), None, {"temperature": 0.0}, 18, 1),
        (chat("Compare them.", 2), [a, b], {"temperature": 0.9, "seed": 4}, 10, 2),
        (chat("What is in the picture?", 1), [b], {"temperature": 0.0}, 12, 1),  # same text, other image
    ]
    expected = [[solo(ckpt, m, i, s, k, choice=j) for j in range(n)] for m, i, s, k, n in cases]
    steps_before = worker.stats["decode_steps"]
    boxes = [submit(worker, m, i, s, k, n) for m, i, s, k, n in cases]
    results = [collect(box) for box in boxes]
    for case, got, want in zip(cases, results, expected):
        assert [got[j] for j in range(case[4])] == want, case[0]
    assert expected[0][0] != expected[3][0]  # the image matters, not only the text
    steps = worker.stats["decode_steps"] - steps_before
    assert steps < sum(k * n for _, _, _, k, n in cases) * 0.7, steps  # they decoded together

    # Again, one after the other: the prompt cache must not hand image B's prompt image A's keys.
    for case, want in zip(cases, expected):
        m, i, s, k, n = case
        assert [collect(submit(worker, m, i, s, k, n))[j] for j in range(n)] == want


def test_placeholders_must_match_the_images(ckpt, worker):
    proc = ImageProcessor.from_dir(ckpt)
    box = submit(worker, chat("Two?", 1), [proc(sample_image()), proc(sample_image(seed=9))], {"temperature": 0.0}, 4)
    event = box.get(timeout=60)
    while not isinstance(event, Failed):
        event = box.get(timeout=60)
    assert isinstance(event.error, RequestError) and "placeholder" in str(event.error)


def test_image_features_are_freed_after_the_last_prefill(ckpt):
    model, tokenizer = load(ckpt)
    images = [ImageProcessor.from_dir(ckpt)(sample_image())]
    from ominix.engine.llm.chat import build_chat_prompt

    ids = expand_prompt(model, tokenizer.encode(build_chat_prompt(tokenizer, chat("Hi", 1))), images)
    vision = VisionPrompt(model, ids, images)
    vision.users = 2  # n=2 choices share the encoded images
    delta = vision.encode_all().rope_delta
    vision.release()
    assert vision.media.embeds is not None  # the second choice still prefills with them
    vision.release()
    assert vision.media.embeds is None and vision.features == [] and vision.media.rope_delta == delta
