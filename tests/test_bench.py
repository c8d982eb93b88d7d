"""`ominix bench`: runs the real engine on a tiny checkpoint and reports every field (timings are
checked for sanity, never for speed); bad input gets a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ominix.bench import random_prompt
from ominix.cli import app
from tests.checkpoints import build_checkpoint, build_quantized


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("bench") / "tiny-qwen3", "qwen3", tied=True)


def check_result(result: dict, prompt_tokens: int, generation_tokens: int, trials: int) -> None:
    assert result["prompt_tokens"] == prompt_tokens
    assert result["generation_tokens"] == generation_tokens
    assert result["trials"] == trials and len(result["runs"]) == trials
    for run in result["runs"]:
        assert run["ttft_s"] > 0 and run["prompt_tps"] > 0 and run["generation_tps"] > 0
        assert run["prompt_tps"] == pytest.approx(prompt_tokens / run["ttft_s"])
        assert run["peak_memory_gb"] > 0
    for metric in ("prompt_tps", "generation_tps", "ttft_s", "peak_memory_gb"):
        values = sorted(r[metric] for r in result["runs"])
        assert values[0] <= result[metric] <= values[-1]  # a median of the trials
    assert result["model_type"] == "qwen3"
    assert result["device"].startswith("Device(")
    assert result["load_s"] > 0


def test_bench_json_in_a_fresh_process(checkpoint):
    proc = subprocess.run(
        [sys.executable, "-m", "ominix", "bench", str(checkpoint), "-p", "16", "-g", "8", "-n", "1", "--json"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    check_result(result, 16, 8, 1)
    assert result["path"] == str(checkpoint)
    assert result["checkpoint_dtype"] == "float32" and result["compute_dtype"] == "float32"
    assert result["quantization"] is None
    from ominix import _blas

    assert result["blas"] == _blas.blas_status()["path"]  # same preload as this test process


def test_bench_quantized_and_median_over_trials(checkpoint, tmp_path):
    quantized = build_quantized(checkpoint, tmp_path / "tiny-4bit", bits=4, group_size=32)
    result = CliRunner().invoke(app, ["bench", str(quantized), "-p", "12", "-g", "4", "-n", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    check_result(data, 12, 4, 3)
    assert data["quantization"] == {"bits": 4, "group_size": 32}


def test_bench_text_output(checkpoint):
    result = CliRunner().invoke(app, ["bench", str(checkpoint), "-p", "8", "-g", "3", "-n", "1"])
    assert result.exit_code == 0, result.output
    for label in ("prompt", "generation", "TTFT", "peak memory", "tok/s", "float32"):
        assert label in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent/model-dir"], "/nonexistent/model-dir: no such directory"),
        (["no-such-model-anywhere"], "no-such-model-anywhere"),
        (["qwen3-0.6b"], "'qwen3-0.6b' is not installed; run `ominix pull qwen3-0.6b` first"),
        (["{ckpt}", "-p", "0"], "prompt tokens must be >= 1, got 0"),
        (["{ckpt}", "-n", "0"], "trials must be >= 1, got 0"),
        (["{empty}"], "not a model checkpoint directory"),
    ],
)
def test_bench_errors_are_one_clear_line(checkpoint, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(ckpt=checkpoint, empty=tmp_path / "empty") for a in args]
    result = CliRunner().invoke(app, ["bench", *args])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr


def test_random_prompt_is_reproducible_and_in_range():
    a = random_prompt(640, 100, seed=3)
    assert a == random_prompt(640, 100, seed=3) and a != random_prompt(640, 100, seed=4)
    assert len(a) == 100 and min(a) >= 0 and max(a) < 640
