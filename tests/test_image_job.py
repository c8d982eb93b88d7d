"""The image job driven directly (as the worker will): seeds, batches, previews, sizes, errors,
quantized loading (at load time and from a saved MLX-quantized checkpoint), text-encoder release,
float32 weights when memory allows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ominix.engine.image.job import (
    ImageJob, ImageRequest, ImageRequestError, PartialImage, Progress, run_job,
)  # fmt: skip
from ominix.engine.image.pipeline import Options, load_image_pipeline
from tests.image_checkpoints import bf16_copy, build_flux2_klein, build_zimage, psnr


class Ticket:
    def __init__(self):
        self.events = []

    def emit(self, event):
        self.events.append(event)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgjob")
    return {"flux2": build_flux2_klein(root / "flux2", te_layers=28),
            "zimage": build_zimage(root / "zimage")}  # fmt: skip


@pytest.fixture(scope="module")
def pipes(paths):
    return {k: load_image_pipeline(p) for k, p in paths.items()}


@pytest.mark.parametrize("family", ["flux2", "zimage"])
def test_seed_and_batch(pipes, family):
    pipe = pipes[family]
    one = run_job(ImageJob(ImageRequest("a cat", n=1, width=32, height=24, steps=2, seed=5)), pipe)
    again = run_job(ImageJob(ImageRequest("a cat", n=1, width=32, height=24, steps=2, seed=5)), pipe)
    batch = run_job(ImageJob(ImageRequest("a cat", n=3, width=32, height=24, steps=2, seed=4)), pipe)
    assert one.images[0].shape == (24, 32, 3) and one.images[0].dtype == np.uint8
    np.testing.assert_array_equal(one.images[0], again.images[0])
    assert len(batch.images) == 3
    np.testing.assert_allclose(batch.images[1], one.images[0], atol=2)  # seed 4 + 1
    assert not np.array_equal(batch.images[0], batch.images[1])


def test_events_and_previews(pipes):
    ticket = Ticket()
    result = run_job(ImageJob(ImageRequest("a cat", width=32, height=32, steps=4, seed=1,
                                           partial_images=2)), pipes["flux2"], ticket)  # fmt: skip
    progress = [e for e in ticket.events if isinstance(e, Progress)]
    partial = [e for e in ticket.events if isinstance(e, PartialImage)]
    assert [p.step for p in progress] == [1, 2, 3, 4]
    assert [p.index for p in partial] == [0, 1]
    assert partial[0].images[0].shape == result.images[0].shape == (32, 32, 3)


def test_errors(pipes):
    pipe = pipes["flux2"]
    m = pipe.multiple
    with pytest.raises(ImageRequestError, match=rf"nearest valid size is {8 * m}x{4 * m}"):
        run_job(ImageJob(ImageRequest("x", width=8 * m + 1, height=4 * m - 1)), pipe)
    with pytest.raises(ImageRequestError, match="n must be"):
        run_job(ImageJob(ImageRequest("x", n=9, width=32, height=32)), pipe)
    with pytest.raises(ImageRequestError, match="prompt"):
        run_job(ImageJob(ImageRequest("  ", width=32, height=32)), pipe)
    with pytest.raises(ImageRequestError, match="too small"):
        run_job(ImageJob(ImageRequest("x", width=32, height=32,
                                      references=[np.zeros((20, 80, 3), np.uint8)])), pipe)  # fmt: skip
    with pytest.raises(ImageRequestError, match="no reference"):
        run_job(ImageJob(ImageRequest("x", width=32, height=32,
                                      references=[np.zeros((64, 64, 3), np.uint8)])), pipes["zimage"])  # fmt: skip


def test_edit_job(pipes):
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (72, 100, 3), dtype=np.uint8)  # cropped to 72 x 100 -> multiples
    req = ImageRequest("make it blue", width=48, height=32, steps=2, seed=3, references=[ref])
    edited = run_job(ImageJob(req), pipes["flux2"])
    plain = run_job(ImageJob(ImageRequest("make it blue", width=48, height=32, steps=2, seed=3)),
                    pipes["flux2"])  # fmt: skip
    assert edited.images[0].shape == (32, 48, 3)
    assert not np.array_equal(edited.images[0], plain.images[0])  # the reference conditions it


@pytest.mark.parametrize("family", ["flux2", "zimage"])
def test_quantized_paths(paths, pipes, family, tmp_path):
    """--quantize at load and `ominix convert -q` give the same images, close to float: 8-bit
    above 30 dB PSNR, 4-bit above 15 dB (tiny random weights are a hard case)."""
    from typer.testing import CliRunner

    from ominix.cli import app

    req = dict(prompt="a lighthouse", width=32, height=32, steps=2, seed=11)
    base = run_job(ImageJob(ImageRequest(**req)), pipes[family]).images[0]
    for bits, bound in ((8, 30), (4, 15)):
        at_load = load_image_pipeline(paths[family], Options(quantize=bits))
        got = run_job(ImageJob(ImageRequest(**req)), at_load).images[0]
        saved = tmp_path / f"q{bits}"
        result = CliRunner().invoke(app, ["convert", str(paths[family]), str(saved), "-q", "--bits", str(bits)])
        assert result.exit_code == 0, result.output
        config = json.loads((saved / "transformer" / "config.json").read_text())
        assert config["quantization"] == {"bits": bits, "group_size": 64, "mode": "affine"}
        from_disk = load_image_pipeline(saved)
        assert from_disk.describe()["transformer_bytes"] < pipes[family].describe()["transformer_bytes"]
        again = run_job(ImageJob(ImageRequest(**req)), from_disk).images[0]
        np.testing.assert_array_equal(got, again)
        assert psnr(got, base) > bound, (bits, psnr(got, base))


def test_convert_cast_and_refusals(paths, pipes, tmp_path):
    """`convert --dtype bfloat16` halves the files and loads; bad requests are refused before
    anything is written."""
    from ominix.engine.convert import ConvertError, convert

    out = convert(paths["zimage"], tmp_path / "bf16", dtype="bfloat16", max_shard_bytes=20_000)
    assert len(list((out / "transformer").glob("model-*.safetensors"))) > 1  # sharded, indexed
    assert (out / "model_index.json").read_bytes() == (paths["zimage"] / "model_index.json").read_bytes()
    assert json.loads((out / "text_encoder" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    req = dict(prompt="a lighthouse", width=32, height=32, steps=2, seed=11)
    cast = run_job(ImageJob(ImageRequest(**req)), load_image_pipeline(out)).images[0]
    assert psnr(cast, run_job(ImageJob(ImageRequest(**req)), pipes["zimage"]).images[0]) > 25
    with pytest.raises(ConvertError, match="already exists and is not empty"):
        convert(paths["zimage"], out, quantize=True)
    with pytest.raises(ConvertError, match="quantizing .* or casting"):
        convert(paths["zimage"], tmp_path / "a")
    with pytest.raises(ConvertError, match="unsupported quantization bits=7"):
        convert(paths["zimage"], tmp_path / "b", quantize=True, bits=7)
    quantized = convert(paths["zimage"], tmp_path / "q", quantize=True)
    with pytest.raises(ConvertError, match="already quantized"):
        convert(quantized, tmp_path / "c", quantize=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bf16", "q"]


def test_convert_disk_full_leaves_nothing(paths, tmp_path, disk_full_on_second_write):
    from ominix.engine.convert import convert

    with pytest.raises(OSError, match="No space left"):
        convert(paths["flux2"], tmp_path / "full", quantize=True)
    assert len(disk_full_on_second_write) == 2
    assert list(tmp_path.iterdir()) == []  # neither DST nor the temporary directory


def test_release_text_encoder(paths, pipes):
    released = load_image_pipeline(paths["zimage"], Options(release_text_encoder=True))
    assert released.text_encoder is None
    req = dict(prompt="a lighthouse", width=32, height=32, steps=2, seed=11)
    a = run_job(ImageJob(ImageRequest(**req)), released).images[0]
    b = run_job(ImageJob(ImageRequest(**req)), pipes["zimage"]).images[0]
    np.testing.assert_array_equal(a, b)
    assert released.text_encoder is None


def test_float32_weights_when_memory_allows(paths, tmp_path, monkeypatch):
    """On a CPU, bf16 files small next to memory are held as float32 (cast once at load); with
    the switch off (Options or OMINIX_IMAGE_FLOAT32_WEIGHTS=0), or when the pipeline at float32
    would take over half the memory, they stay bf16 and are upcast per layer. The images agree."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    import ominix.engine.image.pipeline as pipeline

    def transformer_dtypes(pipe):
        return {v.dtype for _, v in tree_flatten(pipe.transformer.parameters())}

    bf16 = bf16_copy(paths["flux2"], tmp_path / "bf16")
    cast = load_image_pipeline(bf16)
    assert transformer_dtypes(cast) == {mx.float32}
    assert {v.dtype for _, v in tree_flatten(cast.text_encoder.body.parameters())} == {mx.float32}
    kept = load_image_pipeline(bf16, Options(float32_weights=False))
    assert transformer_dtypes(kept) == {mx.bfloat16} and kept.dtype == mx.float32
    assert kept.describe()["transformer_bytes"] * 2 == cast.describe()["transformer_bytes"]
    monkeypatch.setenv("OMINIX_IMAGE_FLOAT32_WEIGHTS", "0")
    assert transformer_dtypes(load_image_pipeline(bf16)) == {mx.bfloat16}
    monkeypatch.delenv("OMINIX_IMAGE_FLOAT32_WEIGHTS")
    files = sum(f.stat().st_size for f in bf16.glob("*/*.safetensors"))
    monkeypatch.setattr(pipeline, "physical_memory", lambda: 3 * files)  # 2x files > half of it
    assert transformer_dtypes(load_image_pipeline(bf16)) == {mx.bfloat16}
    req = dict(prompt="a lighthouse", width=32, height=32, steps=2, seed=11)
    a = run_job(ImageJob(ImageRequest(**req)), cast).images[0]
    b = run_job(ImageJob(ImageRequest(**req)), kept).images[0]
    assert psnr(a, b) > 40, psnr(a, b)
