"""`ominix run ID --image pic.png "question"` in a subprocess prints what the in-process reference
generates with the image; a text model given --image fails with one clear line."""

from __future__ import annotations

import pytest

from ominix.engine.images import ImageProcessor, decode_image
from ominix.engine.llm.chat import build_chat_prompt
from ominix.engine.llm.generate import encode_prompt, generate
from ominix.engine.llm.sample import SamplingParams
from ominix.engine.vlm import VisionPrompt, WithMedia, expand_prompt, load
from tests.server_fixtures import random_qwen3
from tests.test_run_cli import ominix
from tests.vlm_checkpoints import qwen3_vl_checkpoint, sample_image

MAX = 10


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return qwen3_vl_checkpoint(tmp_path_factory.mktemp("run_vision") / "vl", seed=7)


def reference(ckpt, question: str, files) -> str:
    model, tokenizer = load(ckpt)
    proc = ImageProcessor.from_dir(ckpt)
    images = [proc(decode_image(f.read_bytes())) for f in files]
    parts = [{"type": "image"} for _ in files] + [{"type": "text", "text": question}]
    ids = encode_prompt(tokenizer, build_chat_prompt(tokenizer, [{"role": "user", "content": parts}]))
    ids = expand_prompt(model, ids, images)
    bound = WithMedia(model, VisionPrompt(model, ids, images).encode_all())
    return generate(bound, tokenizer, ids, SamplingParams(temperature=0), max_tokens=MAX).text


def test_run_with_images(ckpt, tmp_path):
    files = [tmp_path / "a.png", tmp_path / "b.jpg"]
    sample_image(80, 48, seed=1).save(files[0])
    sample_image(64, 96, seed=2).save(files[1])
    result = ominix("run", str(ckpt), "--image", str(files[0]), "--image", str(files[1]), "What differs?",
                    "--temp", "0", "--max-tokens", str(MAX))
    assert result.returncode == 0, result.stderr
    want = reference(ckpt, "What differs?", files)
    assert want.strip() and result.stdout == want + "\n"
    one = ominix("run", str(ckpt), "--image", str(files[0]), "What is it?", "--temp", "0", "--max-tokens", str(MAX))
    assert one.stdout == reference(ckpt, "What is it?", files[:1]) + "\n" != result.stdout


def test_run_image_errors_are_one_line(ckpt, tmp_path):
    text_model = random_qwen3(tmp_path / "tiny")
    pic = tmp_path / "p.png"
    sample_image().save(pic)
    result = ominix("run", str(text_model), "--image", str(pic), "hi")
    assert result.returncode == 1 and "does not take images" in result.stderr and len(result.stderr.splitlines()) == 1
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    result = ominix("run", str(ckpt), "--image", str(bad), "hi")
    assert result.returncode == 1 and "cannot be decoded" in result.stderr, result.stderr
    result = ominix("run", str(ckpt), "--image", str(tmp_path / "missing.png"), "hi")
    assert result.returncode == 1 and "missing.png" in result.stderr, result.stderr
