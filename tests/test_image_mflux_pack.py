"""mflux packs (mflux-save's layout, in which mlx-community and others publish FLUX.2 [klein] and
Z-Image Turbo at 4 and 8 bits) load and run.

The packs are written by mflux 0.24.0 itself (tests/mflux_pack_builder.py, in its own venv: mflux
pins a CUDA MLX on Linux, so it installs without dependencies next to the CPU MLX) from tiny
diffusers FLUX.2 [klein] and Z-Image checkpoints with the real models' shape rules. A float pack (mflux stores it in bf16)
must make exactly the image our loader makes from the same checkpoint in bf16: that checks every
renamed tensor, the re-laid-out convolutions and the configs read off the shapes. A 4-bit pack
(every layer mflux quantizes: the text encoder's embedding, the VAE's attention too) must load
quantized and stay close to our own --quantize 4 of the same source.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from typer.testing import CliRunner

from ominix import kinds
from ominix.cli import app
from ominix.engine.budget import estimate_bytes
from ominix.engine.image.job import ImageJob, ImageRequest, run_job
from ominix.engine.image.pipeline import Options, load_image_pipeline
from ominix.engine.load import LoadError
from tests.image_checkpoints import bf16_copy, build_flux2_klein, build_zimage, psnr
from tests.refvenv import reference_python

MLX = f"mlx[cpu]=={mx.__version__}" if sys.platform == "linux" else f"mlx=={mx.__version__}"
# mflux's imports on the way to its savers and FLUX.2 modules (no torch, no OpenCV needed there).
REQUIREMENTS = [MLX, "transformers==5.23.0", "pillow", "piexif", "platformdirs", "toml", "tqdm", "pyyaml",
                "regex", "filelock", "anyio", "jinja2"]  # fmt: skip
NO_DEPS = ["mflux==0.24.0"]
REQ = dict(prompt="a lighthouse at dusk", width=32, height=48, steps=2, seed=11)


@pytest.fixture(scope="module", params=["flux2", "zimage"])
def packs(request, tmp_path_factory):
    family = request.param
    root = tmp_path_factory.mktemp(f"mflux-pack-{family}")
    python = reference_python("mflux-0.24.0", REQUIREMENTS, NO_DEPS)
    if family == "flux2":
        src = build_flux2_klein(root / "src", te_layers=28, te_hidden=64, wide=True)
    else:
        src = build_zimage(root / "src", te_hidden=64, wide=True)
    builder = Path(__file__).with_name("mflux_pack_builder.py")
    out = {"src": src, "family": family}
    for bits in ("none", "4"):
        done = subprocess.run([str(python), str(builder), family, str(src), str(root / f"pack-{bits}"), bits],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        out[bits] = root / f"pack-{bits}"
    return out


def test_float_pack_equals_the_source(packs, tmp_path):
    pack = packs["none"]
    assert not (pack / "model_index.json").exists() and not (pack / "scheduler").exists()
    assert kinds.detect(pack).name == "image" and kinds.is_image_pipeline(pack)
    assert estimate_bytes(pack) == sum(f.stat().st_size for f in pack.glob("*/*.safetensors"))
    ours = load_image_pipeline(pack)
    same = load_image_pipeline(bf16_copy(packs["src"], tmp_path / "bf16"))
    a = run_job(ImageJob(ImageRequest(**REQ)), ours).images[0]
    b = run_job(ImageJob(ImageRequest(**REQ)), same).images[0]
    np.testing.assert_array_equal(a, b)


def test_quantized_pack(packs):
    import mlx.nn as nn

    pipe = load_image_pipeline(packs["4"])
    float_pipe = load_image_pipeline(packs["src"])
    assert pipe.describe()["transformer_bytes"] < float_pipe.describe()["transformer_bytes"] / 4
    assert isinstance(pipe.text_encoder.body.embed_tokens, nn.QuantizedEmbedding)
    assert isinstance(pipe.vae.decoder.mid_block.attentions[0].to_q, nn.QuantizedLinear)
    got = run_job(ImageJob(ImageRequest(**REQ)), pipe).images[0]
    ours = run_job(ImageJob(ImageRequest(**REQ)), load_image_pipeline(packs["src"], Options(quantize=4))).images[0]
    base = run_job(ImageJob(ImageRequest(**REQ)), float_pipe).images[0]
    # measured: 34.5 / 35.2 dB (FLUX.2 / Z-Image) to ours at 4 bits (mflux also quantizes the
    # embedding and the VAE's attention), 26.4 / 24.4 dB to float (ours at 4 bits: 27.0 / 24.3)
    assert psnr(got, ours) > 28 and psnr(got, base) > 20, (psnr(got, ours), psnr(got, base))
    assert pipe.family == packs["family"]


def test_cli_runs_a_pack(packs, tmp_path):
    out = tmp_path / "pack.png"
    res = CliRunner().invoke(app, ["image", "a fox", "-o", str(out), "-m", str(packs["4"]), "--size", "32x32",
                                   "--steps", "1"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 0


def test_broken_packs_are_clear_errors(packs, tmp_path):
    missing = shutil.copytree(packs["4"], tmp_path / "missing")
    (missing / "transformer" / "0.safetensors").unlink()
    with pytest.raises(LoadError, match="missing shard 0.safetensors"):
        load_image_pipeline(missing)
    odd = shutil.copytree(packs["4"], tmp_path / "odd")
    index = odd / "vae" / "model.safetensors.index.json"
    index.write_text(index.read_text().replace('"quantization_level": "4"', '"quantization_level": "four"'))
    with pytest.raises(LoadError, match="quantization_level 'four'"):
        load_image_pipeline(odd)
    cut = shutil.copytree(packs["4"], tmp_path / "cut")
    shard = cut / "transformer" / "0.safetensors"
    tensors = mx.load(str(shard))
    mx.save_safetensors(str(shard), {k: v for k, v in tensors.items() if ".norm_q." not in k})
    with pytest.raises(LoadError, match="not a complete mflux"):
        load_image_pipeline(cut)
    res = CliRunner().invoke(app, ["image", "x", "-o", str(tmp_path / "x.png"), "-m", str(missing)])
    assert res.exit_code != 0 and "missing shard" in res.output and "Traceback" not in res.output


def test_convert_refuses_a_pack(packs, tmp_path):
    from ominix.engine.convert import ConvertError, convert

    with pytest.raises(ConvertError, match="is an mflux pack"):
        convert(packs["4"], tmp_path / "out", quantize=True)
    assert not (tmp_path / "out").exists()
