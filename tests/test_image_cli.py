"""`ominix image` on the tiny FLUX.2 [klein] checkpoint: files, sizes, PNG text chunks, edits,
--quantize, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ominix.cli import app
from tests.image_checkpoints import build_flux2_klein

runner = CliRunner()


@pytest.fixture(scope="module")
def klein(tmp_path_factory):
    return build_flux2_klein(tmp_path_factory.mktemp("imgcli") / "klein", te_layers=28)


def test_generate_png_with_metadata(klein, tmp_path):
    out = tmp_path / "fox.png"
    res = runner.invoke(app, ["image", "a red fox", "-o", str(out), "-m", str(klein), "--size", "48x32",
                              "--steps", "2", "--seed", "9"])  # fmt: skip
    assert res.exit_code == 0, res.output
    image = Image.open(out)
    assert image.size == (48, 32)
    assert image.text == {"prompt": "a red fox", "seed": "9", "steps": "2", "size": "48x32",
                          "model": str(klein), "guidance_scale": "1.0"}  # fmt: skip
    again = tmp_path / "again.png"
    runner.invoke(app, ["image", "a red fox", "-o", str(again), "-m", str(klein), "--size", "48x32",
                        "--steps", "2", "--seed", "9"])  # fmt: skip
    np.testing.assert_array_equal(np.asarray(Image.open(again)), np.asarray(image))


def test_batch_edit_and_quantize(klein, tmp_path):
    ref = tmp_path / "ref.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(ref)
    out = tmp_path / "edit.webp"
    res = runner.invoke(app, ["image", "night", "-o", str(out), "-m", str(klein), "--image", str(ref),
                              "--steps", "1", "-n", "2", "--quantize", "8"])  # fmt: skip
    assert res.exit_code == 0, res.output
    for k in (1, 2):
        image = Image.open(tmp_path / f"edit-{k}.webp")
        assert image.format == "WEBP" and image.size == (64, 64)


@pytest.mark.parametrize("args,needle", [
    (["--size", "50x50"], "nearest valid size is 48x48"),
    (["--size", "fifty"], "WIDTHxHEIGHT"),
    (["--quantize", "3"], "4 or 8"),
    (["-o", "x.gif"], ".png"),
])
def test_errors(klein, tmp_path, args, needle):
    argv = ["image", "x", "-m", str(klein), "-o", str(tmp_path / "x.png"), *args]
    res = runner.invoke(app, argv)
    assert res.exit_code != 0
    assert needle in res.output
