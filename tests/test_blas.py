"""The BLAS preload (ominix/_blas.py): it really maps OpenBLAS into the process before MLX binds its
symbols, matmuls stay correct with and without it, and every way it can fail is reported plainly.

Each check runs in a fresh interpreter, because the preload only works before mlx.core is imported
and the test process itself has imported it long ago.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ominix import _blas

REPO = Path(__file__).resolve().parents[1]
IS_LINUX = sys.platform.startswith("linux")

# Imports ominix first (as every entry point does), then MLX; reports the preload status, whether a
# libopenblas is mapped, and the error of a float32 matmul against a float64 numpy reference.
PROBE = """
import json, sys
{prelude}
import ominix
import mlx.core as mx
import numpy as np
rng = np.random.default_rng(0)
a = rng.standard_normal((67, 300)).astype(np.float32)
b = rng.standard_normal((300, 129)).astype(np.float32)
out = np.array(mx.array(a) @ mx.array(b))
err = float(np.abs(out - a.astype(np.float64) @ b.astype(np.float64)).max())
# numpy's own OpenBLAS (symbols renamed *64_, invisible to MLX) is not the one we look for
mapped = [l.split()[-1] for l in open("/proc/self/maps") if "libopenblas" in l and "64_" not in l]
print(json.dumps({{"status": ominix._blas.blas_status(), "mapped": mapped, "err": err}}))
"""


def run_probe(env_extra: dict | None = None, prelude: str = "") -> tuple[dict, str]:
    env = dict(os.environ)
    env.pop("OMINIX_BLAS", None)
    env.pop("LD_PRELOAD", None)
    env.update(env_extra or {})
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(prelude=prelude)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.mark.skipif(not IS_LINUX, reason="the preload exists only for MLX's Linux CPU backend")
def test_default_preload_maps_openblas_when_installed():
    result, stderr = run_probe()
    status = result["status"]
    assert result["err"] < 1e-3
    assert stderr == "", "importing ominix as a library must print nothing"
    assert status["mlx_imported_before"] is False
    if _blas.candidates():
        assert status["loaded"] is True, status
        assert result["mapped"], "libopenblas is not mapped into the process"
        assert status["path"] and "openblas" in status["path"]
        assert status["config"].startswith("OpenBLAS")
        assert status["threads"] >= 1
    else:  # a machine without OpenBLAS: still correct, and the status says how to get it
        assert status["loaded"] is False and not result["mapped"]
        assert status["install_hint"].startswith(_blas.INSTALL_HINT)


@pytest.mark.skipif(not IS_LINUX, reason="the preload exists only for MLX's Linux CPU backend")
def test_off_disables_the_preload_and_matmul_stays_correct():
    result, stderr = run_probe({"OMINIX_BLAS": "off"})
    assert result["mapped"] == []
    assert result["status"]["loaded"] is False
    assert result["status"]["reason"] == "disabled by OMINIX_BLAS=off"
    assert result["err"] < 1e-3
    assert stderr == ""


@pytest.mark.skipif(not IS_LINUX, reason="the preload exists only for MLX's Linux CPU backend")
def test_mlx_imported_first_is_reported_as_too_late():
    result, _ = run_probe(prelude="import mlx.core")
    status = result["status"]
    assert status["mlx_imported_before"] is True
    assert status["loaded"] is False
    assert "too late" in status["reason"]
    assert result["mapped"] == []  # nothing was loaded behind MLX's back
    assert result["err"] < 1e-3


@pytest.mark.skipif(not IS_LINUX, reason="the preload exists only for MLX's Linux CPU backend")
def test_explicit_path_that_does_not_exist_is_reported():
    result, _ = run_probe({"OMINIX_BLAS": "/nonexistent/libopenblas.so.0"})
    status = result["status"]
    assert status["loaded"] is False and result["mapped"] == []
    assert status["reason"].startswith("OMINIX_BLAS=/nonexistent/libopenblas.so.0 could not be loaded")
    assert result["err"] < 1e-3


@pytest.mark.skipif(not IS_LINUX, reason="the preload exists only for MLX's Linux CPU backend")
def test_explicit_library_without_cblas_is_refused():
    result, _ = run_probe({"OMINIX_BLAS": "libm.so.6"})
    assert result["status"]["loaded"] is False
    assert "does not export cblas_sgemm" in result["status"]["reason"]


@pytest.mark.skipif(not IS_LINUX, reason="the preload exists only for MLX's Linux CPU backend")
def test_explicit_path_is_used():
    """Whichever OpenBLAS this machine has (the system's, or the pip wheel's) is used when named."""
    found = _blas.candidates() + _blas.pip_candidates()
    assert found, "neither a system OpenBLAS nor the cmeel-openblas wheel (a Linux dependency) is here"
    result, _ = run_probe({"OMINIX_BLAS": found[-1]})
    status = result["status"]
    why = _blas.unusable(found[-1])
    if why is None:
        assert status["loaded"] is True and status["path"] == found[-1] and status["source"] == "OMINIX_BLAS"
        assert result["mapped"]
    else:  # the wheel's library without libgfortran.so.5, or built for another CPU: a clean fallback
        assert status["loaded"] is False and why in status["reason"] and result["err"] < 1e-3


@pytest.mark.skipif(not IS_LINUX, reason="the preload exists only for MLX's Linux CPU backend")
def test_pip_openblas_comes_with_the_install():
    """`pip install ominix` brings cmeel-openblas on Linux; OMINIX_BLAS=pip picks it over the system's."""
    wheel = _blas.pip_candidates()
    assert wheel and "cmeel.prefix" in wheel[0]
    result, stderr = run_probe({"OMINIX_BLAS": "pip"})
    status = result["status"]
    assert result["err"] < 1e-3 and stderr == ""
    why = _blas.unusable(wheel[0])
    if why is None:
        assert status["loaded"] is True and status["source"] == "pip" and status["path"] == wheel[0]
        assert status["config"].startswith("OpenBLAS") and any("cmeel.prefix" in m for m in result["mapped"])
    else:  # e.g. "is built for SKYLAKEX CPUs only and this CPU lacks avx512f": refused, not a SIGILL
        assert status["loaded"] is False and why in status["reason"]
        assert result["mapped"] == [] and status["install_hint"].startswith(_blas.INSTALL_HINT)


@pytest.mark.skipif(not IS_LINUX, reason="the preload exists only for MLX's Linux CPU backend")
def test_system_choice_and_doctor_say_which_blas():
    result, _ = run_probe({"OMINIX_BLAS": "system"})
    status = result["status"]
    if _blas.candidates():
        assert status["loaded"] is True and status["source"] == "system"
        assert "cmeel.prefix" not in status["path"]
    else:
        assert status["loaded"] is False and "no system OpenBLAS" in status["reason"]
    from ominix.doctor import blas_line

    line = blas_line(status)
    assert (status["source"] in line) if status["loaded"] else ("bundled" in line)


@pytest.mark.skipif(not IS_LINUX, reason="the preload exists only for MLX's Linux CPU backend")
def test_hint_is_printed_once_per_process(tmp_path):
    code = (
        "import ominix\n"
        "from ominix import _blas\n"
        "_blas.warn_once_if_slow(); _blas.warn_once_if_slow()\n"
    )
    env = dict(os.environ, OMINIX_BLAS="/nonexistent/libblas.so", OMINIX_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "slow reference BLAS" in lines[0]

    env["OMINIX_BLAS"] = "off"  # the user's explicit choice: no nagging
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == ""


def test_candidates_prefers_the_soname_and_drops_symlink_duplicates(tmp_path, monkeypatch):
    pthread = tmp_path / "x86_64-linux-gnu" / "openblas-pthread"
    pthread.mkdir(parents=True)
    real = pthread / "libopenblasp-r0.3.21.so"
    real.write_bytes(b"")
    (pthread / "libopenblas.so.0").symlink_to(real.name)
    other = tmp_path / "local"
    other.mkdir()
    (other / "libopenblas.so").write_bytes(b"")
    cache = tmp_path / "ld.so.cache"
    cache.write_bytes(b"\x00junk\x00" + str(other / "libopenblas.so").encode() + b"\x00libc.so.6\x00")
    monkeypatch.setattr(_blas, "_SEARCH_GLOBS", (str(tmp_path / "*" / "openblas-pthread" / "libopenblas*.so*"),))
    monkeypatch.setattr(_blas, "_LD_SO_CACHE", str(cache))
    assert _blas.candidates() == [str(pthread / "libopenblas.so.0"), str(other / "libopenblas.so")]


def test_parity_suite_without_blas():
    """The Qwen parity tests also pass on MLX's bundled BLAS, so both code paths stay correct."""
    parity = REPO / "tests" / "test_qwen_parity.py"
    assert parity.exists(), "tests/test_qwen_parity.py is missing"
    env = dict(os.environ, OMINIX_BLAS="off")
    env.pop("LD_PRELOAD", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(parity)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
