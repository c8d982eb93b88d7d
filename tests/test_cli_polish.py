"""The CLI on a terminal and through a pipe: the BLAS note once per machine, tables that fit 100
columns without breaking words and carry no padding when piped, line editing and history in `run`."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ominix.cli.common import Rows

NOTE = "import ominix\nfrom ominix import _blas\n_blas.warn_once_if_slow()\n"


def test_blas_note_is_shown_once_per_machine(tmp_path):
    env = dict(os.environ, OMINIX_BLAS="/nonexistent/libblas.so", OMINIX_HOME=str(tmp_path / "home"))
    first = subprocess.run([sys.executable, "-c", NOTE], env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "slow reference BLAS" in first.stderr
    again = subprocess.run([sys.executable, "-c", NOTE], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and again.stderr == ""  # said once; `ominix doctor` keeps saying it
    doctor = subprocess.run([sys.executable, "-m", "ominix", "doctor"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert "slow reference BLAS" in doctor.stdout


def long_rows() -> Rows:
    rows = Rows("ID", "KIND", "SIZE", "SOURCE")
    rows.add_row("funasr-paraformer", "asr", "1.0 GB",
                 "iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch")
    rows.add_row("qwen3-0.6b", "llm", "1.2 GB", "Qwen/Qwen3-0.6B")
    return rows


def test_rows_fit_a_terminal_without_breaking_words():
    lines = long_rows().render(width=100)
    assert len(lines) == 3 and all(len(line) <= 100 for line in lines)  # one line per row
    assert lines[1].startswith("funasr-paraformer") and lines[1].endswith("…")
    assert lines[2].split()[-1] == "Qwen/Qwen3-0.6B"
    assert all(line == line.rstrip() for line in lines)


def test_rows_piped_are_whole_and_unpadded():
    lines = long_rows().render(width=None)
    assert lines[1].split("\t")[-1].endswith("vocab8404-pytorch")
    assert lines[0] == "ID\tKIND\tSIZE\tSOURCE" and all(line == line.rstrip() for line in lines)


def test_doctor_lines_fit_the_terminal():
    from ominix.doctor import diagnose, format_report

    report = diagnose()
    assert all(len(line) <= 100 for line in format_report(report, columns=100).splitlines())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pty on Linux")
def test_run_has_line_editing_and_history(tmp_path):
    """Arrow keys edit the line (no `^[[A` in the prompt) and earlier lines come back with Up."""
    from tests.server_fixtures import random_qwen3

    model = random_qwen3(tmp_path / "m")
    home = tmp_path / "home"
    env = dict(os.environ, OMINIX_HOME=str(home), TERM="xterm", OMINIX_BLAS="off")
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, "-m", "ominix", "run", str(model), "--max-tokens", "1"], env)
    out = b""

    def read_until(marker: bytes, seconds: float = 60) -> bytes:
        nonlocal out
        deadline = time.monotonic() + seconds
        while marker not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        return out

    try:
        read_until(b">>> ")
        os.write(fd, b"/system first\r")
        read_until(b"Set system message.")
        out = b""
        os.write(fd, b"\x1b[A")  # Up: the previous line comes back, editable
        read_until(b"/system first")
        os.write(fd, b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x7f!\r")  # Left x5, Backspace, '!' -> "/system!first"
        read_until(b"Unknown command '/system!first'")
        assert b"^[[A" not in out and b"Unknown command '/system!first'" in out, out
        os.write(fd, b"/bye\r")
        read_until(b"$", 5)
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    history = Path(home) / "history"
    assert history.is_file() and "/system first" in history.read_text()
